"""DMA memory for the vfio driver: one page-aligned region mapped for the device
once, carved into allocations with IOVAs the pool picks.

An allocation is contiguous in the device's address space as in ours, so a
queue is physically contiguous (PC=1) and a batch's data is one piece. A batch
that finds no room waits (`wait_alloc`) for memory given back; what can never
fit is refused at once.
"""

from __future__ import annotations

import bisect
import errno
import mmap
from typing import Any, NamedTuple

import trio

from ..base import TransportError
from ..ffi import ffi
from .transport import Transport

PAGE = 4096
IOVA_BASE = 0x10000         # below it stays unmapped, as libvfn reserves it


class Allocation(NamedTuple):
    host: Any               # cffi uint8_t * into the region
    iova: int
    size: int


class DmaPool:
    def __init__(self, transport: Transport, size: int):
        self.size = (size + PAGE - 1) & ~(PAGE - 1)
        self.transport = transport
        self.region = mmap.mmap(-1, self.size)          # anonymous, shared, page aligned
        self.base = ffi.from_buffer("uint8_t[]", self.region)
        self.vaddr = int(ffi.cast("uintptr_t", self.base))
        transport.map_dma(self.vaddr, IOVA_BASE, self.size)
        self.mapped = True
        self._free: list[tuple[int, int]] = [(0, self.size)]    # (offset, size), by offset
        self._freed = trio.Event()
        self.in_use = 0
        self.peak = 0
        self.waits = 0

    def alloc_nowait(self, size: int) -> Allocation | None:
        """First fit, in whole pages; None when no piece is large enough now."""
        size = max(PAGE, (size + PAGE - 1) & ~(PAGE - 1))
        for i, (off, n) in enumerate(self._free):
            if n >= size:
                if n == size:
                    del self._free[i]
                else:
                    self._free[i] = (off + size, n - size)
                self.in_use += size
                self.peak = max(self.peak, self.in_use)
                return Allocation(self.base + off, IOVA_BASE + off, size)
        return None

    async def wait_alloc(self, size: int) -> Allocation:
        """An allocation of `size` bytes, waiting for memory given back."""
        if size > self.size:
            raise TransportError(f"{size} bytes of DMA memory asked for at once; there are "
                                 f"{self.size} (the dma= option)", errno.ENOMEM)
        while (a := self.alloc_nowait(size)) is None:
            self.waits += 1
            await self._freed.wait()
        return a

    def free(self, a: Allocation) -> None:
        """Give back; neighbours merge."""
        off = a.iova - IOVA_BASE
        i = bisect.bisect(self._free, (off, 0))
        start, size = off, a.size
        if i < len(self._free) and self._free[i][0] == off + size:
            size += self._free.pop(i)[1]
        if i and self._free[i - 1][0] + self._free[i - 1][1] == start:
            start, size = self._free[i - 1][0], self._free[i - 1][1] + size
            i -= 1
            del self._free[i]
        self._free.insert(i, (start, size))
        self.in_use -= a.size
        self._freed.set()
        self._freed = trio.Event()

    def statistics(self) -> dict[str, int]:
        return {"dma_size": self.size, "dma_in_use": self.in_use, "dma_peak": self.peak,
                "dma_waits": self.waits}

    def close(self) -> None:
        if self.mapped:
            self.mapped = False
            self.transport.unmap_dma(IOVA_BASE, self.size)
        ffi.release(self.base)
        self.region.close()
