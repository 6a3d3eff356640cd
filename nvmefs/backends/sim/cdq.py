"""The simulated controller's Controller Data Queues (NVMe 2.2, TP4159): User Data
Migration Queues in host memory, as QEMU's TP4159 controller keeps them.

- Create (45h, SEL 0) takes a physically contiguous ring (PC=1) of CDQSIZE
  dwords, whole 32-byte entries, for the controller named in CQS (the sim's
  own: it is a subsystem of one controller); up to MCUDMQ queues at once.
- Track Send (3Dh) starts or stops logging into a queue: start posts an entry
  with ESA "first", stop one with ESA "last, logging stopped" (LBACIA "no
  change", no range); a start while logging, or a stop while not, changes nothing.
- While logging, each successful Write, Write Zeroes, Copy (its destination)
  and Dataset Management deallocate (one entry per run of adjacent ranges,
  DLBA set) posts an entry: NSID, SLBA and NLB, 0's based as in a Write.
- Full is one entry short of the ring (tail + 1 == head). The entry that fills
  it carries ESA "last, queue full" and a one-shot event (type 4, info 1)
  goes out; what comes while full is lost (counted: `lost`), and logging goes
  on once the host gives space back (Set Features 21h head pointer).
- Set Features 21h with ETPT arms a one-shot Tail Pointer Trigger: the event
  (type 4, info 0) goes out when the tail reaches TPT. One-shot events carry
  the CDQID in DW1 and are never masked.
- A controller reset deletes every queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ...spec import cdq as Q
from ...spec import events as E
from ...spec import status as S
from ...spec.queue import Command

MAX_CDQS = 4                    # MCUDMQ


class HostMemory(Protocol):
    def view(self, iova: int, size: int) -> Any:
        """A writable buffer over host memory at `iova`; raises LookupError if unmapped."""


class HostBuffers:
    """The host memory a sim controller reaches when nvmefs itself is its host
    (the sim backend): buffers handed out with made-up, page-aligned addresses."""

    def __init__(self) -> None:
        self._buffers: dict[int, bytearray] = {}
        self._next = 0x100000

    def alloc(self, size: int) -> tuple[int, bytearray]:
        iova = self._next
        self._next += (size + 0xFFF) & ~0xFFF or 0x1000
        self._buffers[iova] = buf = bytearray(size)
        return iova, buf

    def free(self, iova: int) -> None:
        self._buffers.pop(iova, None)

    def view(self, iova: int, size: int) -> memoryview:
        buf = self._buffers.get(iova)
        if buf is None or size > len(buf):
            raise LookupError(f"no host buffer at {iova:#x}")
        return memoryview(buf)[:size]


@dataclass
class SimCdq:
    cdqid: int
    cntlid: int
    ring: Any
    writer: Q.QueueWriter
    tracking: bool = False
    tpt: int | None = None
    lost: int = 0


Event = Callable[[int, int, int, int], None]    # (type, info, lid, dw1)


class CdqEngine:
    def __init__(self, cntlid: int, raise_event: Event):
        self.cntlid = cntlid
        self.raise_event = raise_event
        self.host: HostMemory | None = None     # set by whoever plays the host
        self.queues: dict[int, SimCdq] = {}
        self.tracking = False                   # any queue is logging

    def _queue(self, cdqid: int) -> SimCdq | None:
        return self.queues.get(cdqid)

    def create(self, cmd: Command) -> tuple[int, int]:
        """(status, CDQID)."""
        if Q.CDQ_SEL.get(cmd) == Q.SEL_DELETE:
            return self._delete(cmd), 0
        if Q.CDQ_SEL.get(cmd) != Q.SEL_CREATE or Q.CDQ_QT.get(cmd) != Q.QT_UDMQ \
                or not Q.CDQ_PC.get(cmd):
            return S.INVALID_FIELD, 0
        size = Q.CDQSIZE.get(cmd) << 2
        entries = size // Q.ENTRY_SIZE
        if entries < 2 or size % Q.ENTRY_SIZE or Q.CDQ_CQS.get(cmd) != self.cntlid:
            return S.INVALID_FIELD, 0
        if len(self.queues) >= MAX_CDQS or self.host is None:
            return S.NOT_ENOUGH_RESOURCES, 0
        try:
            ring = self.host.view(cmd.prp1, size)
        except LookupError:
            return S.DATA_XFER_ERROR, 0
        cdqid = min(set(range(1, MAX_CDQS + 1)) - set(self.queues))
        self.queues[cdqid] = SimCdq(cdqid, self.cntlid, ring, Q.QueueWriter(entries))
        return S.SUCCESS, cdqid

    def _delete(self, cmd: Command) -> int:
        if self.queues.pop(Q.CDQ_ID.get(cmd), None) is None:
            return S.INVALID_CDQ
        self._retrack()
        return S.SUCCESS

    def get_feature(self, cmd: Command) -> tuple[int, int, bytes]:
        """(status, DW0, data): DW0 CDQID | ETPT << 31; data {HP, TPT}."""
        q = self._queue(Q.FEAT_CDQID.get(cmd))
        if q is None:
            return S.INVALID_CDQ, 0, b""
        armed = q.tpt is not None
        data = q.writer.head.to_bytes(4, "little") + (q.tpt or 0).to_bytes(4, "little")
        return S.SUCCESS, q.cdqid | armed << 31, data

    def set_feature(self, cmd: Command) -> int:
        q = self._queue(Q.FEAT_CDQID.get(cmd))
        if q is None:
            return S.INVALID_CDQ
        tpt = Q.FEAT_TPT.get(cmd) if Q.FEAT_ETPT.get(cmd) else None
        if tpt is not None and tpt >= q.writer.entries or not q.writer.set_head(Q.FEAT_HP.get(cmd)):
            return S.INVALID_FIELD
        q.tpt = tpt
        return S.SUCCESS

    def track_send(self, cmd: Command) -> int:
        if Q.TRACK_SEL.get(cmd) != Q.TRACK_USER_DATA or Q.TRACK_LACT.get(cmd) > Q.LACT_START:
            return S.INVALID_FIELD
        q = self._queue(Q.TRACK_CDQID.get(cmd))
        if q is None:
            return S.INVALID_CDQ
        start = Q.TRACK_LACT.get(cmd) == Q.LACT_START
        if start != q.tracking:
            self._post(q, [Q.Entry(esa=Q.ESA_FIRST if start else Q.ESA_LAST_STOPPED,
                                   lbacia=Q.LBACIA_NONE).record()])
            q.tracking = start
            self._retrack()
        return S.SUCCESS

    def _retrack(self) -> None:
        self.tracking = any(q.tracking for q in self.queues.values())

    def log(self, nsid: int, changes: list[tuple[int, int]], dlba: bool = False) -> None:
        """User data changed: (SLBA, NLB 0's based) ranges of namespace NSID."""
        attrs = Q.DLBA_BIT if dlba else 0
        records = [(nsid, nlb, slba, attrs) for slba, nlb in changes]
        for q in self.queues.values():
            if q.tracking:
                self._post(q, records)

    def _post(self, q: SimCdq, records: list[tuple[int, int, int, int]]) -> None:
        w = q.writer
        n, tail = min(len(records), w.free), w.tail
        q.lost += len(records) - n
        if not n:
            return
        records = records[:n]
        full = n == w.free
        if full:                            # the last one fills the queue: ESA says so
            nsid, nlb, slba, attrs = records[-1]
            records[-1] = (nsid, nlb, slba, attrs & ~Q.ESA_MASK | Q.ESA_LAST_FULL << Q.ESA_SHIFT)
        w.post(q.ring, records)
        if full:
            self.raise_event(E.TYPE_ONE_SHOT, E.ONE_SHOT_CDQ_FULL, 0, q.cdqid)
        if q.tpt is not None and 1 <= (q.tpt - tail) % w.entries <= n:    # the tail met it
            q.tpt = None
            self.raise_event(E.TYPE_ONE_SHOT, E.ONE_SHOT_CDQ_TPT, 0, q.cdqid)

    def reset(self) -> None:
        self.queues.clear()
        self.tracking = False

    def statistics(self) -> dict[int, dict[str, int]]:
        return {q.cdqid: {"posted": q.writer.posted, "lost": q.lost, "tail": q.writer.tail,
                          "head": q.writer.head, "tracking": int(q.tracking)}
                for q in self.queues.values()}
