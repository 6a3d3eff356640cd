"""A PCIe NVMe function bound to vfio-pci, through the VFIO container/group API.

open() walks the legacy flow: /dev/vfio/vfio (API version, a type1 IOMMU),
the function's group (/dev/vfio/N, which must be viable), the device fd, its
regions (BAR0 mapped into the process, the config space read and written
through the fd) and its MSI-X interrupts (one eventfd per vector). The
ioctls are control path only, so they go through fcntl.ioctl with
struct-packed arguments (each starting with argsz, the struct's size);
register access goes through the compiled extension (volatile 32-bit loads
and stores).

Facts: reference/interfaces.md §5 (ioctl numbers and struct layouts of
linux/vfio.h, 6.1), checked in the QEMU guest.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import struct

import trio

from ..base import ControllerGone, TransportError
from ..ffi import ffi, lib
from . import bind
from .transport import Transport

log = logging.getLogger(__name__)

# ioctl numbers: _IO(VFIO_TYPE ';', VFIO_BASE 100 + n)
_VFIO = 0x3B64
GET_API_VERSION = _VFIO + 0
CHECK_EXTENSION = _VFIO + 1
SET_IOMMU = _VFIO + 2
GROUP_GET_STATUS = _VFIO + 3
GROUP_SET_CONTAINER = _VFIO + 4
GROUP_GET_DEVICE_FD = _VFIO + 6
DEVICE_GET_INFO = _VFIO + 7
DEVICE_GET_REGION_INFO = _VFIO + 8
DEVICE_GET_IRQ_INFO = _VFIO + 9
DEVICE_SET_IRQS = _VFIO + 10
DEVICE_RESET = _VFIO + 11
IOMMU_MAP_DMA = _VFIO + 13
IOMMU_UNMAP_DMA = _VFIO + 14

API_VERSION = 0
TYPE1_IOMMU = 1
TYPE1v2_IOMMU = 3
IOMMU_NAMES = {TYPE1v2_IOMMU: "type1v2", TYPE1_IOMMU: "type1"}

# The structs of linux/vfio.h (host byte order, no padding in any of them).
GROUP_STATUS = struct.Struct("=II")         # argsz, flags
DEVICE_INFO = struct.Struct("=IIIII")       # argsz, flags, num_regions, num_irqs, cap_offset
REGION_INFO = struct.Struct("=IIIIQQ")      # argsz, flags, index, cap_offset, size, offset
IRQ_INFO = struct.Struct("=IIII")           # argsz, flags, index, count
IRQ_SET = struct.Struct("=IIIII")           # argsz, flags, index, start, count; then data
DMA_MAP = struct.Struct("=IIQQQ")           # argsz, flags, vaddr, iova, size
DMA_UNMAP = struct.Struct("=IIQQ")          # argsz, flags, iova, size

GROUP_FLAGS_VIABLE = 1 << 0
DEVICE_FLAGS_RESET = 1 << 0
DEVICE_FLAGS_PCI = 1 << 1
REGION_INFO_FLAG_READ = 1 << 0
REGION_INFO_FLAG_WRITE = 1 << 1
REGION_INFO_FLAG_MMAP = 1 << 2
IRQ_INFO_EVENTFD = 1 << 0
IRQ_SET_DATA_NONE = 1 << 0
IRQ_SET_DATA_EVENTFD = 1 << 2
IRQ_SET_ACTION_TRIGGER = 1 << 5
DMA_MAP_FLAG_READ = 1 << 0
DMA_MAP_FLAG_WRITE = 1 << 1

PCI_BAR0_REGION_INDEX = 0
PCI_CONFIG_REGION_INDEX = 7
PCI_MSIX_IRQ_INDEX = 2

PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 1 << 1
PCI_COMMAND_MASTER = 1 << 2

CONTAINER = "/dev/vfio/vfio"
PAGE = mmap.PAGESIZE


def _ioctl(fd: int, request: int, arg: bytearray | int = 0) -> int:
    """ioctl with a struct filled in place (bytearray) or an integer argument."""
    if isinstance(arg, bytearray):
        return fcntl.ioctl(fd, request, arg, True)
    return fcntl.ioctl(fd, request, arg)


class VfioTransport(Transport):
    """BAR0, DMA mappings, MSI-X vectors and function reset of one vfio-pci function."""

    def __init__(self, bdf: str):
        try:
            self.address = bind.normalize(bdf)
        except bind.BindError as e:
            raise TransportError(str(e), errno.EINVAL) from None
        self.group = ""
        self.iommu = 0
        self.container_fd = -1
        self.group_fd = -1
        self.device_fd = -1
        self.device_flags = 0
        self.config_offset = 0
        self.msix_count = 0
        self._bar_map: mmap.mmap | None = None
        self._efds: list[int] = []
        self._mappings: dict[int, int] = {}      # iova -> size, still mapped

    # ------------------------------------------------------------------ open

    async def open(self, nursery: trio.Nursery) -> None:
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _fail(self, message: str, err: int = errno.EIO) -> TransportError:
        return TransportError(f"{self.address}: {message}", err)

    def _open(self) -> None:
        bdf = self.address
        if not os.path.isdir(bind.device_dir(bdf)):
            raise self._fail("no such PCI function (lspci -D lists them)", errno.ENODEV)
        self.group = bind.iommu_group_of(bdf)
        driver = bind.driver_of(bdf)
        if driver != bind.VFIO_DRIVER:
            why = f"bound to {driver}" if driver else "bound to no driver"
            hint = (f"run `nvmefs vfio bind {bdf}`" if self.group else
                    "it has no IOMMU group: boot with intel_iommu=on (or amd_iommu=on), "
                    f"then run `nvmefs vfio bind {bdf}`")
            raise self._fail(f"{why}, not vfio-pci: {hint}", errno.ENODEV)
        if not self.group:
            raise self._fail("no IOMMU group: boot with intel_iommu=on (or amd_iommu=on)",
                             errno.ENODEV)
        self._open_container()
        self._open_group()
        try:
            self.device_fd = _ioctl(self.group_fd, GROUP_GET_DEVICE_FD,
                                    bytearray(bdf.encode() + b"\0"))
        except OSError as e:
            raise self._fail(f"VFIO_GROUP_GET_DEVICE_FD: {e.strerror}", e.errno) from None
        self._device_info()
        self._map_bar0()
        self._enable_bus_master()
        self._msix_info()

    def _open_container(self) -> None:
        try:
            self.container_fd = os.open(CONTAINER, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self._fail(f"no {CONTAINER}: load VFIO (modprobe vfio-pci)",
                             errno.ENODEV) from None
        except PermissionError:
            raise self._fail(f"no permission to open {CONTAINER}", errno.EACCES) from None
        version = _ioctl(self.container_fd, GET_API_VERSION)
        if version != API_VERSION:
            raise self._fail(f"VFIO API version {version}, expected {API_VERSION}")
        for kind in (TYPE1v2_IOMMU, TYPE1_IOMMU):
            if _ioctl(self.container_fd, CHECK_EXTENSION, kind) > 0:
                self.iommu = kind
                return
        raise self._fail("VFIO offers no type1 IOMMU: modprobe vfio_iommu_type1", errno.ENODEV)

    def _open_group(self) -> None:
        path = f"/dev/vfio/{self.group}"
        try:
            self.group_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self._fail(f"no {path} although vfio-pci has the function "
                             "(is /dev populated by udev/devtmpfs?)", errno.ENODEV) from None
        except PermissionError:
            raise self._fail(f"no permission to open {path}: run as root, or let your user "
                             f"open it (chown USER {path}) and lock enough memory (ulimit -l)",
                             errno.EACCES) from None
        except OSError as e:
            if e.errno == errno.EBUSY:
                who = bind.group_users(self.group)
                held = "; ".join(f"pid {pid} ({comm or '?'})" for pid, comm, _ in who)
                raise self._fail(f"{path} is already open" + (f" by {held}" if held else
                                 " (another process, or this one)"), errno.EBUSY) from None
            raise self._fail(f"{path}: {e.strerror}", e.errno) from None
        status = bytearray(GROUP_STATUS.pack(GROUP_STATUS.size, 0))
        _ioctl(self.group_fd, GROUP_GET_STATUS, status)
        if not GROUP_STATUS.unpack(status)[1] & GROUP_FLAGS_VIABLE:
            raise self._fail(f"IOMMU group {self.group} is not viable: every device in it "
                             f"must be bound to vfio-pci or to nothing ({self._group_devices()})",
                             errno.EBUSY)
        try:
            _ioctl(self.group_fd, GROUP_SET_CONTAINER,
                   bytearray(struct.pack("=i", self.container_fd)))
            _ioctl(self.container_fd, SET_IOMMU, self.iommu)
        except OSError as e:
            raise self._fail(f"attaching IOMMU group {self.group}: {e.strerror}", e.errno) from None

    def _group_devices(self) -> str:
        base = os.path.join(bind.SYSFS, "kernel/iommu_groups", self.group, "devices")
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return f"see {base}"
        return ", ".join(f"{n}: {bind.driver_of(n) or 'no driver'}" for n in names)

    def _device_info(self) -> None:
        info = bytearray(DEVICE_INFO.pack(DEVICE_INFO.size, 0, 0, 0, 0))
        _ioctl(self.device_fd, DEVICE_GET_INFO, info)
        _, self.device_flags, regions, _, _ = DEVICE_INFO.unpack(info)
        if not self.device_flags & DEVICE_FLAGS_PCI or regions <= PCI_CONFIG_REGION_INDEX:
            raise self._fail("VFIO does not present it as a PCI device")

    def region_info(self, index: int) -> tuple[int, int, int]:
        """(flags, size, offset on the device fd) of one region."""
        info = bytearray(REGION_INFO.pack(REGION_INFO.size, 0, index, 0, 0, 0))
        _ioctl(self.device_fd, DEVICE_GET_REGION_INFO, info)
        _, flags, _, _, size, offset = REGION_INFO.unpack(info)
        return flags, size, offset

    def _map_bar0(self) -> None:
        flags, size, offset = self.region_info(PCI_BAR0_REGION_INDEX)
        if size < 0x1000 or not flags & REGION_INFO_FLAG_MMAP:
            raise self._fail(f"BAR0 cannot be mapped (size {size:#x}, flags {flags:#x})")
        try:
            self._bar_map = mmap.mmap(self.device_fd, size, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        except OSError as e:
            raise self._fail(f"mapping BAR0 ({size:#x} bytes): {e.strerror}", e.errno) from None
        self.bar = ffi.from_buffer("uint8_t[]", self._bar_map)
        self.bar_size = size

    def _config16(self, offset: int, value: int | None = None) -> int:
        at = self.config_offset + offset
        if value is not None:
            os.pwrite(self.device_fd, value.to_bytes(2, "little"), at)
            return value
        return int.from_bytes(os.pread(self.device_fd, 2, at), "little")

    def _enable_bus_master(self) -> None:
        if not self.config_offset:
            _, _, self.config_offset = self.region_info(PCI_CONFIG_REGION_INDEX)
        try:
            cmd = self._config16(PCI_COMMAND)
            want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
            if cmd != want:
                self._config16(PCI_COMMAND, want)
        except OSError as e:
            raise self._fail(f"enabling bus mastering: {e.strerror}", e.errno) from None

    def _msix_info(self) -> None:
        info = bytearray(IRQ_INFO.pack(IRQ_INFO.size, 0, PCI_MSIX_IRQ_INDEX, 0))
        try:
            _ioctl(self.device_fd, DEVICE_GET_IRQ_INFO, info)
        except OSError:
            return
        _, flags, _, count = IRQ_INFO.unpack(info)
        self.msix_count = count if flags & IRQ_INFO_EVENTFD else 0

    # ------------------------------------------------------------------ registers

    def read32(self, offset: int) -> int:
        if not 0 <= offset <= self.bar_size - 4:
            raise self._bar_error(offset)
        return lib.nvmefs_mmio_read32(self.bar, offset)

    def write32(self, offset: int, value: int) -> None:
        if not 0 <= offset <= self.bar_size - 4:
            raise self._bar_error(offset)
        lib.nvmefs_mmio_write32(self.bar, offset, value)

    def _bar_error(self, offset: int) -> Exception:
        if self.bar is None:
            return ControllerGone(f"{self.address}: BAR0 is not mapped (closed)")
        return ValueError(f"register offset {offset:#x} outside BAR0 ({self.bar_size:#x} bytes)")

    # ------------------------------------------------------------------ DMA

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        if (vaddr | iova | size) & (PAGE - 1) or size <= 0:
            raise ValueError(f"DMA mapping {vaddr:#x} -> {iova:#x} ({size:#x} bytes) "
                             "is not page aligned")
        arg = bytearray(DMA_MAP.pack(DMA_MAP.size, DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
                                     vaddr, iova, size))
        try:
            _ioctl(self.container_fd, IOMMU_MAP_DMA, arg)
        except OSError as e:
            hint = {errno.ENOMEM: ": raise the locked-memory limit (ulimit -l) or run as root",
                    errno.EEXIST: ": the IOVA range is already mapped"}.get(e.errno, "")
            raise self._fail(f"VFIO_IOMMU_MAP_DMA {size:#x} bytes at IOVA {iova:#x}: "
                             f"{e.strerror}{hint}", e.errno) from None
        self._mappings[iova] = size

    def unmap_dma(self, iova: int, size: int) -> None:
        arg = bytearray(DMA_UNMAP.pack(DMA_UNMAP.size, 0, iova, size))
        try:
            _ioctl(self.container_fd, IOMMU_UNMAP_DMA, arg)
        except OSError as e:
            raise self._fail(f"VFIO_IOMMU_UNMAP_DMA {size:#x} bytes at IOVA {iova:#x}: "
                             f"{e.strerror}", e.errno) from None
        self._mappings.pop(iova, None)
        unmapped = DMA_UNMAP.unpack(arg)[3]
        if unmapped != size:
            log.warning("%s: unmapped %#x bytes at IOVA %#x, asked %#x",
                        self.address, unmapped, iova, size)

    # ------------------------------------------------------------------ interrupts

    def enable_vectors(self, count: int) -> int:
        self._disable_vectors()
        n = min(count, self.msix_count)
        if n <= 0 or self.device_fd < 0:
            return 0
        efds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(n)]
        arg = bytearray(IRQ_SET.pack(IRQ_SET.size + 4 * n,
                                     IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                                     PCI_MSIX_IRQ_INDEX, 0, n))
        arg += struct.pack(f"={n}i", *efds)
        try:
            _ioctl(self.device_fd, DEVICE_SET_IRQS, arg)
        except OSError as e:
            for fd in efds:
                os.close(fd)
            log.warning("%s: MSI-X with %d vectors refused (%s); polling", self.address, n,
                        e.strerror)
            return 0
        self._efds = efds
        self.vectors = n
        return n

    async def wait_vector(self, vector: int) -> None:
        if vector >= len(self._efds):
            raise ControllerGone(f"{self.address}: interrupt vectors closed")
        efd = self._efds[vector]
        while True:
            try:
                await trio.lowlevel.wait_readable(efd)
            except trio.ClosedResourceError:
                raise ControllerGone(f"{self.address}: interrupt vectors closed") from None
            try:
                os.eventfd_read(efd)
                return
            except BlockingIOError:
                continue

    def _disable_vectors(self) -> None:
        if not self._efds:
            return
        efds, self._efds, self.vectors = self._efds, [], 0
        if self.device_fd >= 0:
            arg = bytearray(IRQ_SET.pack(IRQ_SET.size, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
                                         PCI_MSIX_IRQ_INDEX, 0, 0))
            try:
                _ioctl(self.device_fd, DEVICE_SET_IRQS, arg)
            except OSError as e:
                log.warning("%s: disabling MSI-X: %s", self.address, e.strerror)
        for fd in efds:
            try:
                trio.lowlevel.notify_closing(fd)
            except RuntimeError:        # not inside trio: nobody can be waiting
                pass
            os.close(fd)

    # ------------------------------------------------------------------ reset, info, close

    def function_reset(self) -> bool:
        if self.device_fd < 0 or not self.device_flags & DEVICE_FLAGS_RESET:
            return False
        try:
            _ioctl(self.device_fd, DEVICE_RESET)
        except OSError as e:
            raise self._fail(f"VFIO_DEVICE_RESET: {e.strerror}", e.errno) from None
        self._enable_bus_master()       # the kernel restores config space; make sure
        return True

    def info(self) -> dict[str, str]:
        return {"address": self.address, "driver": bind.VFIO_DRIVER,
                "iommu": IOMMU_NAMES.get(self.iommu, "none"), "vectors": str(self.vectors)}

    def close(self) -> None:
        self._disable_vectors()
        if self.container_fd >= 0:
            for iova, size in list(self._mappings.items()):
                try:
                    self.unmap_dma(iova, size)
                except TransportError as e:
                    log.warning("%s", e)
        self._mappings.clear()
        if self.bar is not None:
            ffi.release(self.bar)
            self.bar = None
        self.bar_size = 0
        if self._bar_map is not None:
            self._bar_map.close()
            self._bar_map = None
        for name in ("device_fd", "group_fd", "container_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
