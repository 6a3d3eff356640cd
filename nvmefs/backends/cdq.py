"""Controller Data Queues as the host keeps them (DESIGN §4).

The ring is memory the backend owns and the controller writes (the sim's
buffers, the vfio driver's DMA pool). Entries are found by their phase tags
(spec.cdq.QueueReader); space goes back with Set Features 21h. Before a
reader waits on an empty queue, the same feature arms the Tail Pointer Trigger
at the entry after the head, so the controller's one-shot event says when the
next entry is there (a reader that keeps up costs no events). Where that event
cannot be relied on (a real device), a waited-on queue is also looked at every
`poll` seconds.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import trio

from ..spec import cdq as Q
from ..spec import status
from .errors import TransportError

if TYPE_CHECKING:
    from .base import Controller

log = logging.getLogger(__name__)

LIVE, DELETED, LOST = "live", "deleted", "lost"
_FULL_TABLE = bytes(int(b >> Q.ESA_SHIFT & 0x7 == Q.ESA_LAST_FULL) for b in range(256))


@dataclass(frozen=True)
class Memory:
    iova: int
    ring: Any                       # a writable buffer of the ring's bytes
    release: Callable[[], None]     # gives the memory back to the backend


class HostQueue:
    """One CDQ: its ring, the reader's place in it, and the head given back."""

    def __init__(self, ctrl: "Controller", name: str, cdqid: int, entries: int,
                 memory: Memory, cntlid: int, poll: float | None = None):
        self.ctrl, self.name, self.cdqid, self.cntlid = ctrl, name, cdqid, cntlid
        self.entries = entries
        self.memory = memory
        self.reader = Q.QueueReader(entries)
        self.state = LIVE
        self.tracking = False
        self.poll = poll
        self.full_markers = 0           # entries marked "last, queue full" read
        self.head_sent = -1             # the head the controller was last given
        self.armed = False              # the trigger is set at the entry after head_sent
        self.head_errors = 0
        self.waiting = 0                # readers blocked on it now
        self._changed = trio.Event()
        self._head_lock = trio.Lock()

    # ---- waiting

    def ready(self) -> bool:
        """An entry to read, or the queue is gone (its readers end)."""
        return self.state != LIVE or self.reader.ready(self.memory.ring)

    def changed(self) -> trio.Event:
        return self._changed

    def wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def triggered(self) -> None:
        """The controller's one-shot Tail Pointer Trigger event came."""
        self.armed = False
        self.wake()

    async def wait_entries(self, waiters, limit: float) -> None:
        """Until an entry is there or the queue is gone (fs.waits bounds and
        interrupts it); the trigger is armed first, then the ring looked at again."""
        if self.ready():
            return
        await self.give_back(arm=True)
        self.waiting += 1
        try:
            await waiters.wait_until(self.ready, self.changed, limit)
        finally:
            self.waiting -= 1

    async def watch(self) -> None:
        """Look at the ring every `poll` seconds while a reader waits (a real device:
        its one-shot events may not come, as QEMU's TP4159 controller masks them)."""
        while self.state == LIVE:
            await trio.sleep(self.poll)
            if self.waiting and self.ready():
                self.wake()

    # ---- reading

    def peek(self, limit: int) -> bytes:
        """What `take(limit)` would return now (with no await in between, it does)."""
        return self.reader.peek(self.memory.ring, limit) if self.state == LIVE else b""

    async def take(self, limit: int) -> bytes:
        """Up to `limit` whole new entries, their space given back. OSError once the
        queue is gone: EIO if a controller reset took it; b"" once it was deleted."""
        if self.state == LOST:
            raise OSError(errno.EIO, f"queue {self.name} was lost in a controller reset")
        if self.state == DELETED:
            return b""
        data = self.reader.take(self.memory.ring, limit)
        self.full_markers += data[Q.PHASE_OFFSET::Q.ENTRY_SIZE].translate(_FULL_TABLE).count(1)
        await self.give_back()
        return data

    async def give_back(self, arm: bool = False) -> None:
        """Set Features 21h: the head read so far and, with `arm`, the trigger at the
        entry after it. Heads go out in order (one at a time); a failure is logged
        and retried with the next read."""
        async with self._head_lock:
            head = self.reader.head
            if head == self.head_sent and (self.armed or not arm) or self.state != LIVE:
                return
            tpt = (head + 1) % self.entries if arm else None
            try:
                cpl = await self.ctrl.admin(Q.set_head(self.cdqid, head, tpt))
            except TransportError as e:     # the entries read are the reader's all the same
                cpl, why = None, str(e)
            else:
                why = status.describe(cpl.status).name
            if cpl is not None and cpl.ok:
                self.head_sent, self.armed = head, arm
            else:
                self.head_errors += 1
                log.warning("%s: cdq %s: head %d not given back: %s", self.ctrl.name, self.name,
                            head, why)

    # ---- ending

    def end(self, state: str) -> None:
        """The controller no longer has the queue: its memory goes back; readers wake."""
        if self.state == LIVE:
            self.state = state
            self.memory.release()
            self.wake()

    def info(self) -> dict[str, object]:
        r = self.reader
        out: dict[str, object] = {
            "name": self.name, "cdqid": self.cdqid, "state": self.state, "type": "udmq",
            "cntlid": self.cntlid, "entries": self.entries, "entry_size": Q.ENTRY_SIZE,
            "bytes": self.entries * Q.ENTRY_SIZE, "tracking": "on" if self.tracking else "off",
            "head": r.head, "phase": r.phase, "read": r.taken, "wraps": r.wraps,
            "full_markers": self.full_markers, "head_errors": self.head_errors}
        out.update(self.ctrl.cdq_counts(self.cdqid))
        return out
