"""The simulated controller behind PCIe registers: a `Transport` in process.

What a PCIe NVMe controller does with host memory, modelled at register level
(Base 2.0 §3.1, §3.5, §4): CAP/VS/CC/CSTS/AQA/ASQ/ACQ, enable and disable,
shutdown, doorbells (read from BAR memory when the driver says it wrote
them), submission entries fetched from DMA memory, data moved by walking PRP1,
PRP2 and chained PRP lists, completions posted with the phase tag, interrupts
as events per vector. The command set, its timing and the fault injection are
the sim backend's (`sim:` options and `faults`), so the vfio driver runs in
the ordinary test suite with every fault the sim can inject: a timed-out
command can be aborted, a dropped completion cannot (the driver resets),
`fatal` sets CSTS.CFS until a reset, `remove` makes every register read all
ones.

URI: `vfio:sim[:sim options]`.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Awaitable

import trio

from ...spec import commands as C
from ...spec import registers as R
from ...spec import status as S
from ...spec.opcodes import ADMIN, IO, XFER_FROM_CTRL, XFER_TO_CTRL, direction, lookup
from ...spec.queue import Command, Completion
from ..base import Request
from ..errors import ControllerFatal, ControllerGone
from ..ffi import ffi
from ..sim import SimController
from ..sim.device import AERL
from .transport import Transport

log = logging.getLogger(__name__)

BAR_SIZE = 0x4000               # registers, then doorbells with DSTRD 0 (QEMU's size)
MQES = 1023                     # 1024 entries per queue
MAX_QUEUES = 64
VECTORS = 65
CAP_VALUE = (R.CAP_MQES.put(MQES) | R.CAP_CQR.put(1) | R.CAP_TO.put(1) |
             R.CAP_CSS.put(R.CAP_CSS_NVM) | R.CAP_MPSMAX.put(4))
VS_VALUE = 0x00010400           # NVMe 1.4, as QEMU's controller reports

PRP_OFFSET = S.make_status(S.GENERIC, 0x13, dnr=True)       # PRP Offset Invalid
TRANSFER_ERROR = S.make_status(S.GENERIC, 0x04)             # Data Transfer Error
INVALID_FIELD = S.make_status(S.GENERIC, 0x02, dnr=True)
INVALID_QID = S.make_status(S.CMD_SPECIFIC, 0x01, dnr=True)
ABORT_REQUESTED = S.make_status(S.GENERIC, 0x07)
SQ_DELETED = S.make_status(S.GENERIC, 0x08)


class Unreachable(Exception):
    """A PRP points outside the memory the host mapped, or is misaligned."""

    def __init__(self, status: int):
        self.status = status


class _CQ:
    def __init__(self, iova: int, entries: int, vector: int | None):
        self.iova, self.entries, self.vector = iova, entries, vector
        self.tail, self.phase = 0, 1


class _SQ:
    def __init__(self, qid: int, iova: int, entries: int, cq: _CQ):
        self.qid, self.iova, self.entries, self.cq = qid, iova, entries, cq
        self.head = 0
        self.queue = ADMIN if qid == 0 else IO


class ModelTransport(Transport):
    def __init__(self, sim_uri: str, index: int = 0, vectors: int = VECTORS):
        self.sim = SimController(sim_uri, index)
        self.address = sim_uri
        self._bar = ffi.new("uint8_t[]", BAR_SIZE)
        self.bar, self.bar_size = self._bar, BAR_SIZE
        self.max_vectors = vectors
        self.regs = {R.CC: 0, R.CSTS: 0, R.AQA: 0, R.ASQ: 0, R.ASQ + 4: 0, R.ACQ: 0,
                     R.ACQ + 4: 0, R.INTMS: 0}
        self._maps: list[tuple[int, int, int]] = []         # (iova, vaddr, size), by iova
        self.sqs: dict[int, _SQ] = {}
        self.cqs: dict[int, _CQ] = {}
        self._fired: list[bool] = []
        self._wake: list[trio.Event] = []
        self._nursery: trio.Nursery | None = None
        self._generation = 0                                # bumped by every controller reset
        self._running: dict[tuple[int, int], tuple[trio.CancelScope, Request]] = {}
        self._aers: list[tuple[_SQ, int]] = []
        self.fetched = 0

    # ------------------------------------------------------------------ transport

    async def open(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self.sim.start(nursery)
        self.sim.device.on_event = self._deliver_events
        self.sim.device.cdq.host = self         # its queues are in the host's mapped memory

    def view(self, iova: int, size: int) -> Any:
        """Host memory at `iova` for the sim's Controller Data Queues."""
        try:
            return self._host(iova, size)
        except Unreachable:
            raise LookupError(f"{iova:#x} is not mapped") from None

    def info(self) -> dict[str, str]:
        return {"address": self.address, "driver": "model"}

    def read32(self, offset: int) -> int:
        if self.sim.removed:
            return 0xFFFFFFFF
        if offset in (R.CAP, R.CAP + 4):
            return CAP_VALUE >> 8 * (offset - R.CAP) & 0xFFFFFFFF
        if offset == R.VS:
            return VS_VALUE
        if offset == R.CSTS:
            return self.regs[R.CSTS] | R.CSTS_CFS.put(int(self.sim.fatal))
        return self.regs.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        if self.sim.removed:
            return
        if offset == R.CC:
            old, self.regs[R.CC] = self.regs[R.CC], value
            if R.CC_EN.get(value) and not R.CC_EN.get(old):
                self._enable()
            elif R.CC_EN.get(old) and not R.CC_EN.get(value):
                self._nursery.start_soon(self._disable)
            if R.CC_SHN.get(value) and not R.CC_SHN.get(old):
                self.regs[R.CSTS] |= R.CSTS_SHST.put(R.SHST_COMPLETE)
        elif offset in self.regs and offset != R.CSTS:
            self.regs[offset] = value

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        bisect.insort(self._maps, (iova, vaddr, size))

    def unmap_dma(self, iova: int, size: int) -> None:
        self._maps = [m for m in self._maps if m[0] != iova]

    def enable_vectors(self, count: int) -> int:
        n = min(count, self.max_vectors)
        self._fired = [False] * n
        self._wake = [trio.Event() for _ in range(n)]
        return n

    async def wait_vector(self, vector: int) -> None:
        while not self._fired[vector]:
            self._wake[vector] = trio.Event()
            await self._wake[vector].wait()
        self._fired[vector] = False

    def close(self) -> None:
        self._stop_commands()

    def _stop_commands(self) -> None:
        self._generation += 1
        for scope, _ in self._running.values():
            scope.cancel()
        self._running.clear()

    # ------------------------------------------------------------------ controller state

    def _enable(self) -> None:
        """CC.EN 0 -> 1: the admin queue from AQA/ASQ/ACQ, then ready (§3.5.1)."""
        aqa = self.regs[R.AQA]
        asq = self.regs[R.ASQ] | self.regs[R.ASQ + 4] << 32
        acq = self.regs[R.ACQ] | self.regs[R.ACQ + 4] << 32
        cq = self.cqs[0] = _CQ(acq, R.AQA_ACQS.get(aqa) + 1, 0)
        self.sqs[0] = _SQ(0, asq, R.AQA_ASQS.get(aqa) + 1, cq)
        self.page_size = 4096 << R.CC_MPS.get(self.regs[R.CC])
        self.regs[R.CSTS] = R.CSTS_RDY.put(1)

    async def _disable(self) -> None:
        """CC.EN 1 -> 0: a controller reset; queues and commands in progress are gone."""
        self._stop_commands()
        self.sqs.clear()
        self.cqs.clear()
        self._aers.clear()
        self._bar[0x1000:BAR_SIZE] = bytes(BAR_SIZE - 0x1000)
        try:
            await self.sim.reset()
        except ControllerGone:
            return
        self.regs[R.CSTS] = 0

    # ------------------------------------------------------------------ host memory

    def _host(self, iova: int, n: int) -> Any:
        """The host memory at `iova` (n bytes inside one mapping)."""
        i = bisect.bisect(self._maps, (iova, 1 << 64)) - 1
        if i >= 0:
            base, vaddr, size = self._maps[i]
            if iova + n <= base + size:
                return ffi.buffer(ffi.cast("uint8_t *", vaddr + iova - base), n)
        raise Unreachable(TRANSFER_ERROR)

    def _segments(self, cmd: Command, length: int) -> list[tuple[int, int]]:
        """(iova, bytes) pieces of a transfer, as PRP1, PRP2 and lists give them (§4.1.1)."""
        psz = self.page_size
        if cmd.prp1 & 3:
            raise Unreachable(PRP_OFFSET)
        first = min(length, psz - cmd.prp1 % psz)
        segs, left = [(cmd.prp1, first)], length - first
        if not left:
            return segs
        if left <= psz:
            if cmd.prp2 % psz:
                raise Unreachable(PRP_OFFSET)
            return segs + [(cmd.prp2, left)]
        entry = cmd.prp2
        while left:
            if entry & 7:
                raise Unreachable(PRP_OFFSET)
            room = (psz - entry % psz) // 8             # entries to the end of this list page
            needed = -(-left // psz)
            words = memoryview(self._host(entry, room * 8)).cast("Q")
            take = needed if needed <= room else room - 1
            for page in words[:take]:
                if page % psz:
                    raise Unreachable(PRP_OFFSET)
                segs.append((page, min(psz, left)))
                left -= min(psz, left)
            if left:
                entry = words[room - 1]                 # the last entry chains to the next list
        return segs

    # ------------------------------------------------------------------ queues

    def notify(self) -> None:
        """Fetch every new submission entry (the tail doorbells say how far)."""
        fire: set[int] = set()
        for sq in list(self.sqs.values()):
            tail = int.from_bytes(ffi.buffer(self._bar + R.doorbell(sq.qid, False, 0), 4),
                                  "little")
            while sq.head != tail and sq.qid in self.sqs and not self.sim.removed:
                raw = bytes(self._host(sq.iova + sq.head * 64, 64))
                sq.head = (sq.head + 1) % sq.entries
                self.fetched += 1
                self._execute(sq, Command.decode(raw), fire)
        for v in fire:
            self._fire(v)

    def _fire(self, vector: int) -> None:
        self._fired[vector] = True
        self._wake[vector].set()

    def _post(self, sq: _SQ, cid: int, status: int, dw0: int = 0, fire: set[int] | None = None,
              dw1: int = 0) -> None:
        cq = sq.cq
        if sq.qid not in self.sqs:
            return                  # deleted meanwhile (reset)
        entry = Completion(status, dw0, dw1, sq.head, sq.qid, cid).encode(cq.phase)
        self._host(cq.iova + cq.tail * 16, 16)[:] = entry
        cq.tail += 1
        if cq.tail == cq.entries:
            cq.tail, cq.phase = 0, cq.phase ^ 1
        if cq.vector is not None and cq.vector < len(self._fired):
            if fire is None:
                self._fire(cq.vector)
            else:
                fire.add(cq.vector)

    def _execute(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        own = self._ADMIN_OWN.get(cmd.opcode) if sq.queue == ADMIN else None
        if own is not None:
            return own(self, sq, cmd, fire)
        self._carry(sq, cmd, fire)

    def _carry(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        """A command of the sim's command set: data (and separate metadata, at MPTR)
        gathered, carried, scattered."""
        ns = self.sim.device.namespaces.get(cmd.nsid) if self.sim.device else None
        row = lookup(sq.queue, cmd.opcode, ns.csi if ns is not None and sq.queue == IO else 0)
        length = mlen = 0
        if row is not None and row.data_len is C.lba_len and ns is not None:
            length, mlen = ns.host_lengths(C.NLB.get(cmd) + 1)  # extended LBAs: all in the data
        elif row is not None and row.data_len:
            length = row.data_len(cmd, ns.block_size if ns else 0) or 0
        xfer = direction(cmd.opcode)
        try:
            segs = self._segments(cmd, length) if length else []
            data_out = b"".join(bytes(self._host(a, n)) for a, n in segs) \
                if xfer == XFER_TO_CTRL else b""
            if mlen and cmd.mptr & 3:
                raise Unreachable(INVALID_FIELD)        # MPTR is dword aligned
            metadata_out = bytes(self._host(cmd.mptr, mlen)) \
                if mlen and xfer == XFER_TO_CTRL else b""
        except Unreachable as e:
            return self._post(sq, cmd.cid, e.status, fire=fire)
        into = xfer == XFER_FROM_CTRL
        req = Request(sq.queue, cmd, data_out, length if into else 0, None, metadata_out,
                      mlen if into else 0)
        try:
            started = self.sim._begin(req)
        except (ControllerFatal, ControllerGone):
            return                  # CSTS.CFS is set, or the device is gone: nothing completes
        if isinstance(started, Completion):
            return self._complete(sq, cmd.cid, req, started, segs, fire)
        scope = trio.CancelScope()
        self._running[sq.qid, cmd.cid] = scope, req
        self._nursery.start_soon(self._later, sq, cmd.cid, req, started, segs, scope)

    async def _later(self, sq: _SQ, cid: int, req: Request, started: Awaitable[Completion],
                     segs: list[tuple[int, int]], scope: trio.CancelScope) -> None:
        generation = self._generation
        with scope:
            try:
                cpl = await started
            except (ControllerFatal, ControllerGone):
                return
        if generation != self._generation:
            return                  # a reset ended it
        self._running.pop((sq.qid, cid), None)
        if scope.cancelled_caught:
            return self._post(sq, cid, ABORT_REQUESTED)
        self._complete(sq, cid, req, cpl, segs, None)

    def _complete(self, sq: _SQ, cid: int, req: Request, cpl: Completion,
                  segs: list[tuple[int, int]], fire: set[int] | None) -> None:
        try:
            if req.data_in_len and cpl.data:
                pos = 0
                for a, n in segs:
                    self._host(a, n)[:] = cpl.data[pos:pos + n]
                    pos += n
            if req.metadata_in_len and cpl.metadata:
                self._host(req.cmd.mptr, req.metadata_in_len)[:] = cpl.metadata
        except Unreachable as e:
            return self._post(sq, cid, e.status, fire=fire)
        self._post(sq, cid, cpl.status, cpl.dw0, fire, cpl.dw1)

    # ------------------------------------------------------------------ admin commands of the model

    def _create_cq(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        qid, entries = C.QID.get(cmd), C.QSIZE.get(cmd) + 1
        if not 0 < qid <= MAX_QUEUES or qid in self.cqs:
            return self._post(sq, cmd.cid, INVALID_QID, fire=fire)
        if entries > MQES + 1 or not C.Q_PC.get(cmd):
            return self._post(sq, cmd.cid, INVALID_FIELD, fire=fire)
        vector = C.CQ_IV.get(cmd) if C.CQ_IEN.get(cmd) else None
        self.cqs[qid] = _CQ(cmd.prp1, entries, vector)
        self._post(sq, cmd.cid, S.SUCCESS, fire=fire)

    def _create_sq(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        qid, entries, cqid = C.QID.get(cmd), C.QSIZE.get(cmd) + 1, C.SQ_CQID.get(cmd)
        if not 0 < qid <= MAX_QUEUES or qid in self.sqs or cqid not in self.cqs:
            return self._post(sq, cmd.cid, INVALID_QID, fire=fire)
        self.sqs[qid] = _SQ(qid, cmd.prp1, entries, self.cqs[cqid])
        self._post(sq, cmd.cid, S.SUCCESS, fire=fire)

    def _set_features(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        if C.FID.get(cmd) != C.FID_NUM_QUEUES:
            return self._carry(sq, cmd, fire)
        n = min(MAX_QUEUES, C.NSQR.get(cmd) + 1, C.NCQR.get(cmd) + 1)
        self._post(sq, cmd.cid, S.SUCCESS, (n - 1) | (n - 1) << 16, fire)

    def _abort(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        """Abort (§5.1): a command still in progress ends with Command Abort
        Requested; DW0 bit 0 clear says it was aborted."""
        key = C.ABORT_SQID.get(cmd), C.ABORT_CID.get(cmd)
        running = self._running.get(key)
        if running is None or not self.sim.release(running[1]):
            return self._post(sq, cmd.cid, S.SUCCESS, 1, fire)
        running[0].cancel()
        self._post(sq, cmd.cid, S.SUCCESS, 0, fire)

    def _async_event(self, sq: _SQ, cmd: Command, fire: set[int]) -> None:
        """Held until the sim has an event, or a reset; at most AERL + 1 (§5.2)."""
        if len(self._aers) > AERL:
            return self._post(sq, cmd.cid, S.ASYNC_LIMIT, fire=fire)
        self._aers.append((sq, cmd.cid))
        self._deliver_events()

    def _deliver_events(self) -> None:
        events = self.sim.device.events
        while self._aers and events:
            sq, cid = self._aers.pop(0)
            dw0, dw1 = events.popleft()
            self._post(sq, cid, S.SUCCESS, dw0, dw1=dw1)

    _ADMIN_OWN = {C.OP_CREATE_IO_CQ: _create_cq, C.OP_CREATE_IO_SQ: _create_sq,
                  C.OP_SET_FEATURES: _set_features, C.OP_ABORT: _abort,
                  C.OP_ASYNC_EVENT: _async_event}
