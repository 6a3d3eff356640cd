"""How the driver reaches one PCIe NVMe function (the layer under driver.Driver).

A transport gives BAR0 (registers read and written through it; doorbells
written by the compiled hot path straight into `bar`), DMA mappings (the
pool picks the IOVAs), interrupt vectors and function level reset. Two
implement it: pci.VfioTransport (a real device bound to vfio-pci) and
model.ModelTransport (the simulated controller behind registers, in process).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import trio


class Transport(ABC):
    address = ""            # what `info` shows: a PCI address, or the model's sim URI
    bar: Any = None         # cffi pointer to BAR0 (registers at 0, doorbells at 1000h)
    bar_size = 0
    vectors = 0             # interrupt vectors enabled by enable_vectors (0: the driver polls)

    @abstractmethod
    async def open(self, nursery: trio.Nursery) -> None:
        """Reach the device; background tasks go in `nursery`."""

    @abstractmethod
    def read32(self, offset: int) -> int:
        """One 32-bit register read (a removed device reads all ones)."""

    @abstractmethod
    def write32(self, offset: int, value: int) -> None:
        """One 32-bit register write."""

    def read64(self, offset: int) -> int:
        """A 64-bit register as two 32-bit reads, low dword first (Base 2.0 §3.1.2)."""
        return self.read32(offset) | self.read32(offset + 4) << 32

    def write64(self, offset: int, value: int) -> None:
        self.write32(offset, value & 0xFFFFFFFF)
        self.write32(offset + 4, value >> 32)

    def notify(self) -> None:
        """The driver wrote doorbells into `bar` (a device traps them itself)."""

    @abstractmethod
    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        """Make [vaddr, vaddr + size) of this process reachable by the device at `iova`."""

    @abstractmethod
    def unmap_dma(self, iova: int, size: int) -> None:
        """Undo one map_dma."""

    @abstractmethod
    def enable_vectors(self, count: int) -> int:
        """Arm up to `count` interrupt vectors; how many were (0: none, poll)."""

    @abstractmethod
    async def wait_vector(self, vector: int) -> None:
        """Until `vector` fires (at once if it fired since the last wait)."""

    def function_reset(self) -> bool:
        """Reset the PCI function (FLR); False where the device cannot."""
        return False

    def info(self) -> dict[str, str]:
        return {}

    @abstractmethod
    def close(self) -> None:
        """Unmap, disarm and close everything; the device stays as the driver left it."""
