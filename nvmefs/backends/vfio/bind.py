"""Which driver owns a PCI NVMe function, and handing it between nvme and vfio-pci.

Everything goes through sysfs (driver_override, unbind, drivers_probe) and
/proc: `SYSFS` and `PROC` are the roots, so a test can point them at a fake
tree. A device is refused while the kernel's view of it is in use (a namespace
mounted, a block device holding it, a process with one of its nodes open), and
given back only when no process has its VFIO group open.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from dataclasses import dataclass

from ..sysfs import read_attr

SYSFS = "/sys"
PROC = "/proc"
VFIO_DRIVER = "vfio-pci"
KERNEL_DRIVER = "nvme"
NVME_CLASS = 0x010802              # mass storage, non-volatile memory, NVM Express
BDF = re.compile(r"(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])")
CTRL = re.compile(r"nvme\d+")
NAMESPACE = re.compile(r"nvme\d+n\d+")            # a namespace's block device
PATH_NS = re.compile(r"nvme\d+c\d+n\d+")          # one path of a multipath namespace


class BindError(Exception):
    """The device cannot be handed over; the message says why and what to do."""

    def __init__(self, message: str, err: int = errno.EINVAL):
        super().__init__(message)
        self.errno = err


@dataclass
class PciFunction:
    address: str                    # 0000:00:03.0
    driver: str                     # "nvme", "vfio-pci", "" (none)
    vendor: int = 0
    device: int = 0
    iommu_group: str = ""           # "" without an IOMMU

    @property
    def uri(self) -> str:
        return f"vfio:{self.address}"


def normalize(bdf: str) -> str:
    """The canonical form of a PCI address (domain added, lower case), or BindError."""
    m = BDF.fullmatch(bdf.strip())
    if not m:
        raise BindError(f"{bdf!r} is not a PCI address: expected DOMAIN:BUS:DEVICE.FUNCTION, "
                        "e.g. 0000:00:03.0 (lspci -D shows them)")
    domain, bus, dev, fn = m.groups()
    return f"{domain or '0000'}:{bus}:{dev}.{fn}".lower()


def device_dir(bdf: str) -> str:
    return os.path.join(SYSFS, "bus/pci/devices", bdf)


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        return -1


def _link_name(path: str) -> str:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    """One sysfs write (the kernel acts on it at once)."""
    try:
        with open(path, "w") as f:
            f.write(text)
    except PermissionError:
        raise BindError(f"cannot write {path}: binding drivers needs root", errno.EPERM) from None
    except OSError as e:
        raise BindError(f"writing {text.strip()!r} to {path} failed: {e.strerror}",
                        e.errno or errno.EIO) from None


def driver_of(bdf: str) -> str:
    """The driver bound to the function ("" for none)."""
    return _link_name(os.path.join(device_dir(bdf), "driver"))


def iommu_group_of(bdf: str) -> str:
    """The function's IOMMU group number ("" when the kernel runs without an IOMMU)."""
    return _link_name(os.path.join(device_dir(bdf), "iommu_group"))


def function(bdf: str) -> PciFunction:
    bdf = normalize(bdf)
    base = device_dir(bdf)
    if not os.path.isdir(base):
        raise BindError(f"no PCI function {bdf} (nothing at {base}; lspci -D lists them)",
                        errno.ENODEV)
    return PciFunction(bdf, driver_of(bdf), _int(read_attr(os.path.join(base, "vendor"))),
                       _int(read_attr(os.path.join(base, "device"))), iommu_group_of(bdf))


def pci_nvme_functions() -> list[PciFunction]:
    """Every PCI function of class NVM Express, in address order, with its driver."""
    root = os.path.join(SYSFS, "bus/pci/devices")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [function(n) for n in names
            if BDF.fullmatch(n) and _int(read_attr(os.path.join(root, n, "class"))) == NVME_CLASS]


# ---------------------------------------------------------------------- in use?

def kernel_controllers(bdf: str) -> list[str]:
    """The kernel's controller names for the function (nvme0), while nvme owns it."""
    try:
        return sorted(n for n in os.listdir(os.path.join(device_dir(bdf), "nvme"))
                      if CTRL.fullmatch(n))
    except OSError:
        return []


def _block_devices(bdf: str, ctrl: str) -> list[str]:
    """Sysfs directories of the controller's namespace block devices and partitions.
    A multipath namespace (nvme0c0n1 under the controller) counts through its head
    (nvme0n1 under the subsystem), which stays usable only through the other paths."""
    cdir = os.path.join(device_dir(bdf), "nvme", ctrl)
    found: list[str] = []
    heads = False
    try:
        entries = os.listdir(cdir)
    except OSError:
        return []
    for n in entries:
        if NAMESPACE.fullmatch(n):
            found.append(os.path.join(cdir, n))
        elif PATH_NS.fullmatch(n):
            heads = True
    if heads:
        subsystems = os.path.join(SYSFS, "class/nvme-subsystem")
        try:
            subs = os.listdir(subsystems)
        except OSError:
            subs = []
        for s in subs:
            sdir = os.path.join(subsystems, s)
            if os.path.exists(os.path.join(sdir, ctrl)):
                found += [os.path.join(sdir, n) for n in os.listdir(sdir) if NAMESPACE.fullmatch(n)]
    parts = []
    for d in found:
        try:
            parts += [os.path.join(d, p) for p in os.listdir(d)
                      if p.startswith(os.path.basename(d) + "p")]
        except OSError:
            pass
    return sorted(found + parts)


def _mounts() -> dict[str, str]:
    """major:minor and source -> a mount point, from /proc/self/mountinfo (btrfs shows
    an anonymous major:minor, so the source device counts too)."""
    out: dict[str, str] = {}
    try:
        with open(os.path.join(PROC, "self/mountinfo")) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                point = fields[4].replace("\\040", " ")
                out.setdefault(fields[2], point)
                if "-" in fields[5:]:
                    rest = fields[fields.index("-", 5) + 1:]
                    if len(rest) > 1:
                        out.setdefault(rest[1], point)
    except OSError:
        pass
    return out


def _swaps() -> set[str]:
    try:
        with open(os.path.join(PROC, "swaps")) as f:
            return {line.split()[0] for line in f.readlines()[1:] if line.strip()}
    except OSError:
        return set()


def users(paths: set[str]) -> list[tuple[int, str, str]]:
    """Processes with one of `paths` open: (pid, command name, path). Processes
    we may not look into are skipped."""
    found = []
    try:
        pids = [int(p) for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return []
    for pid in sorted(pids):
        fddir = os.path.join(PROC, str(pid), "fd")
        try:
            fds = os.listdir(fddir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fddir, fd))
            except OSError:
                continue
            if target in paths:
                found.append((pid, read_attr(os.path.join(PROC, str(pid), "comm")), target))
                break
    return found


def _describe(procs: list[tuple[int, str, str]]) -> str:
    return ", ".join(f"pid {pid} ({comm or '?'}) has {path} open" for pid, comm, path in procs)


def kernel_users(bdf: str) -> list[str]:
    """Why the kernel's view of the function is in use: mounted namespaces, holders
    (device mapper, md, ...), swap, processes with its device nodes open."""
    reasons = []
    mounts = _mounts()
    swaps = _swaps()
    nodes = set()
    for ctrl in kernel_controllers(bdf):
        nodes.add(f"/dev/{ctrl}")
        for bdir in _block_devices(bdf, ctrl):
            name = os.path.basename(bdir)
            nodes.add(f"/dev/{name}")
            dev = read_attr(os.path.join(bdir, "dev"))
            point = mounts.get(dev) if dev else None
            point = point or mounts.get(f"/dev/{name}")
            if point:
                reasons.append(f"/dev/{name} is mounted on {point}")
            try:
                holders = sorted(os.listdir(os.path.join(bdir, "holders")))
            except OSError:
                holders = []
            if holders:
                reasons.append(f"/dev/{name} is held by {', '.join(holders)}")
            if f"/dev/{name}" in swaps:
                reasons.append(f"/dev/{name} is a swap device")
        ng = re.compile(rf"ng{ctrl[4:]}n\d+")
        try:
            generic = os.listdir(os.path.join(SYSFS, "class/nvme-generic"))
        except OSError:
            generic = []
        nodes.update(f"/dev/{n}" for n in generic if ng.fullmatch(n))
    procs = users(nodes)
    if procs:
        reasons.append(_describe(procs))
    return reasons


def group_users(group: str, bdf: str | None = None) -> list[tuple[int, str, str]]:
    """Processes with the VFIO group (or the function's VFIO cdev) open."""
    paths = {f"/dev/vfio/{group}"} if group else set()
    if bdf:
        try:
            paths.update(f"/dev/vfio/devices/{n}"
                         for n in os.listdir(os.path.join(device_dir(bdf), "vfio-dev")))
        except OSError:
            pass
    return users(paths) if paths else []


# ---------------------------------------------------------------------- handing over

def _modprobe(module: str) -> None:
    driver_dir = os.path.join(SYSFS, "bus/pci/drivers", module)
    if os.path.isdir(driver_dir):
        return
    try:
        r = subprocess.run(["modprobe", module], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BindError(f"modprobe {module} failed: {e}", errno.ENOENT) from None
    if r.returncode or not os.path.isdir(driver_dir):
        raise BindError(f"no {module} driver (modprobe {module}: "
                        f"{r.stderr.strip() or 'exit status ' + str(r.returncode)})",
                        errno.ENOENT)


def _probe(bdf: str) -> None:
    _write(os.path.join(SYSFS, "bus/pci/drivers_probe"), bdf)


def _detach(bdf: str) -> None:
    if driver_of(bdf):
        _write(os.path.join(device_dir(bdf), "driver/unbind"), bdf)


def bind(bdf: str) -> bool:
    """Hand the function to vfio-pci (driver_override, so that nothing else takes it
    back on a rescan). False if it was already there; BindError if it cannot be."""
    f = function(bdf)
    bdf = f.address
    base = device_dir(bdf)
    if f.driver == VFIO_DRIVER:
        return False
    klass = _int(read_attr(os.path.join(base, "class")))
    if klass != NVME_CLASS:
        raise BindError(f"{bdf} is not an NVMe controller (PCI class {klass:#08x}, "
                        f"not {NVME_CLASS:#08x}); nvmefs binds only NVMe functions")
    if not f.iommu_group:
        raise BindError(f"{bdf} has no IOMMU group: enable the IOMMU (VT-d/AMD-Vi in the "
                        "firmware, boot with intel_iommu=on or amd_iommu=on)", errno.ENODEV)
    reasons = kernel_users(bdf)
    if reasons:
        raise BindError(f"{bdf} is in use: {'; '.join(reasons)}; "
                        "unmount and stop its users first", errno.EBUSY)
    _modprobe(VFIO_DRIVER)
    try:
        _write(os.path.join(base, "driver_override"), VFIO_DRIVER)
        _detach(bdf)
        _probe(bdf)
    except BindError:
        _restore(bdf)
        raise
    now = driver_of(bdf)
    if now != VFIO_DRIVER:
        _restore(bdf)
        raise BindError(f"vfio-pci did not take {bdf} (bound to {now or 'nothing'} now; "
                        "dmesg may say why)", errno.EIO)
    return True


def _restore(bdf: str) -> None:
    """After a failed bind: clear the override and let the kernel's driver have it."""
    try:
        _write(os.path.join(device_dir(bdf), "driver_override"), "\n")
        if driver_of(bdf) != KERNEL_DRIVER:
            _detach(bdf)
            _probe(bdf)
    except BindError:
        pass


def unbind(bdf: str) -> bool:
    """Give the function back to the kernel's nvme driver. False if vfio-pci did not
    have it; BindError while a process has its VFIO group open."""
    f = function(bdf)
    bdf = f.address
    base = device_dir(bdf)
    override = read_attr(os.path.join(base, "driver_override"))
    if f.driver != VFIO_DRIVER:
        changed = override == VFIO_DRIVER
        if changed:
            _write(os.path.join(base, "driver_override"), "\n")
        if f.driver:                    # nvme has it (or another driver: left alone)
            return changed
        _modprobe(KERNEL_DRIVER)
        _probe(bdf)
        _check_kernel(bdf)
        return True
    procs = group_users(f.iommu_group, bdf)
    if procs:
        raise BindError(f"{bdf} is in use through VFIO: {_describe(procs)}; "
                        "unmount or stop it first", errno.EBUSY)
    _modprobe(KERNEL_DRIVER)
    _write(os.path.join(base, "driver_override"), "\n")
    _detach(bdf)
    _probe(bdf)
    _check_kernel(bdf)
    return True


def _check_kernel(bdf: str) -> None:
    now = driver_of(bdf)
    if now != KERNEL_DRIVER:
        raise BindError(f"the nvme driver did not take {bdf} (bound to {now or 'nothing'} "
                        "now; dmesg may say why)", errno.EIO)
