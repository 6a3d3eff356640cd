"""Controller Data Queues through the kernel (DESIGN §4): the ioctl of the Linux RFC
"nvme: Add Controller Data Queue to the nvme driver" (July 2025, not merged).

The kernel allocates the ring, sends the Controller Data Queue command (PC=1)
and hands back the CDQID and a file descriptor; read() on it copies the new
entries (found by the phase tag at `cdqp_offset`/`cdqp_mask`) and gives their
space back with Set Features 21h itself; closing it deletes the queue. A
kernel without the ioctl answers ENOTTY: then Controller Data Queues cannot be
had through the kernel at all (its passthrough maps a command's buffer only
while the command runs), and the vfio backend is the way.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from typing import TYPE_CHECKING

from ...spec import cdq as Q
from ..cdq import LIVE, LOST, HostQueue, Memory

if TYPE_CHECKING:
    from ..base import Controller

log = logging.getLogger(__name__)

# struct nvme_cdq_cmd (RFC patch 7/8): entry_nr, entry_nbyte, cdq_id (out), cqs, mos,
# 2 bytes padding, cdqp_offset, cdqp_mask, read_fd (out): 28 bytes
CDQ_CMD = struct.Struct("=IIHHH2xIIi")
NVME_IOCTL_ADMIN_CDQ = 0x80000000 | CDQ_CMD.size << 16 | ord("N") << 8 | 0x50   # _IOR('N', 0x50)


def create(fd: int, entries: int, cntlid: int, mos: int) -> tuple[int, int, int]:
    """(ioctl result: 0 or an NVMe status, CDQID, read fd); OSError from the kernel
    (ENOTTY: it has no such ioctl)."""
    arg = bytearray(CDQ_CMD.pack(entries, Q.ENTRY_SIZE, 0, cntlid, mos, Q.PHASE_OFFSET,
                                 Q.PHASE_MASK, -1))
    res = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CDQ, arg)
    _, _, cdqid, _, _, _, _, read_fd = CDQ_CMD.unpack(arg)
    return res, cdqid, read_fd


class KernelQueue(HostQueue):
    """A queue the kernel keeps: reads come from its file descriptor, the kernel
    gives the space back; it has no trigger to arm, so a waited-on queue is read
    every `poll` seconds."""

    def __init__(self, ctrl: "Controller", name: str, cdqid: int, entries: int, fd: int,
                 cntlid: int, poll: float):
        os.set_blocking(fd, False)
        super().__init__(ctrl, name, cdqid, entries, Memory(0, None, lambda: os.close(fd)),
                         cntlid, poll)
        self.fd = fd
        self.pending = bytearray()

    def ready(self) -> bool:
        if self.state != LIVE:
            return True
        if not self.pending:
            try:
                self.pending += os.read(self.fd, self.entries * Q.ENTRY_SIZE)
            except BlockingIOError:
                pass
            except OSError as e:                # the kernel's queue failed: readers end
                log.warning("%s: cdq %s: %s", self.ctrl.name, self.name, e)
                self.end(LOST)
                return True
        return bool(self.pending)

    def peek(self, limit: int) -> bytes:
        self.ready()
        return bytes(self.pending[:limit * Q.ENTRY_SIZE])

    async def take(self, limit: int) -> bytes:
        if self.state != LIVE:
            return await super().take(limit)
        self.ready()
        n = min(limit, len(self.pending) // Q.ENTRY_SIZE) * Q.ENTRY_SIZE
        data = bytes(self.pending[:n])
        del self.pending[:n]
        self.reader.taken += n // Q.ENTRY_SIZE
        return data

    async def give_back(self, arm: bool = False) -> None:
        """The kernel gave the space back when it was read."""


def unsupported_message(name: str) -> str:
    return (f"{name}: the running kernel ({os.uname().release}) has no Controller Data "
            "Queue ioctl (NVME_IOCTL_ADMIN_CDQ, from the 2025 RFC that is not merged); "
            "use the vfio backend for CDQs")

