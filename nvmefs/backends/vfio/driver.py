"""nvmefs's own PCIe NVMe driver (DESIGN §6 vfio), over any `Transport`.

Bring-up follows Base 2.0 §3.5.1: disable (CC.EN 0, CSTS.RDY 0), admin queue
(AQA, ASQ, ACQ), CC (MPS, IOSQES, IOCQES, CSS), enable and wait for RDY (both
waits bounded by CAP.TO), Set Features Number of Queues, then the I/O CQs and
SQs; then (backends.base) Asynchronous Event Requests kept outstanding.
Controller Data Queues live in the DMA pool.

The hot path is in C (ffi/build_nvme.py): a batch's entries go into a
submission queue with one doorbell write, and completions land in the batch's
slots by phase tag; Python wakes once per batch. A batch's data is one DMA
allocation, each command's piece dword aligned after the one before (so a
piece may start anywhere in a page; the PRPs say where), then each separate
metadata buffer, dword aligned and contiguous, as MPTR needs it.

Past a batch's deadline each command still out is aborted (Abort, §5.1); one
the controller does not end then, a controller that reports CSTS.CFS, or a
failed abort resets the controller (CC.EN 0, queues rebuilt); every command
still out is answered host-aborted. Registers reading all ones mean the device
is gone. Unmount shuts the controller down (CC.SHN, SHST) and disables it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import struct
from typing import Any, NamedTuple, Sequence

import trio

from ...spec import commands as C
from ...spec import registers as R
from ...spec import status
from ...spec.opcodes import ADMIN
from ...spec.queue import Completion, from_fields
from ..base import RESET_TIMEOUT, Controller, Request, spread
from ..errors import ControllerFatal, ControllerGone, TransportError
from ..cdq import Memory
from ..ffi import ffi, lib
from .dma import PAGE, Allocation, DmaPool
from .transport import Transport

log = logging.getLogger(__name__)

SQE, CQE = 64, 16                   # bytes (Base 2.0 §4.1, §4.2): IOSQES 6, IOCQES 4
SLOT = struct.Struct("=QQiHH")      # struct nvmefs_slot: batch (a pointer), result, res, qid, cid
ADMIN_ENTRIES = 64
ABORT_GRACE = 1.0                   # seconds an aborted command has to come back
SHUTDOWN_TIMEOUT = 10.0             # seconds for SHST, unless RTD3E says longer (§3.6.2)
REGISTER_POLL = 0.001               # seconds between reads of CSTS while waiting on it
POLL_INTERVAL = 0.001               # seconds between reaps without interrupts
DONE_PER_REAP = 64
ALL_ONES = 0xFFFFFFFF               # what a removed PCIe function reads


class Queue:
    """One queue pair: its C struct, its memory, its vector."""

    def __init__(self, qid: int, entries: int, mem: Allocation, bar: Any, dstrd: int,
                 vector: int | None):
        self.qid, self.entries, self.mem, self.vector = qid, entries, mem, vector
        sq_bytes = Queue.memory(entries) - entries * CQE
        ffi.memmove(mem.host, bytes(mem.size), mem.size)    # CQ phase tags start at 0
        self.sq_iova, self.cq_iova = mem.iova, mem.iova + sq_bytes
        c = self.c = ffi.new("struct nvmefs_queue *")
        c.sq, c.cq = mem.host, mem.host + sq_bytes
        c.sqtdbl = ffi.cast("uint32_t *", bar + R.doorbell(qid, False, dstrd))
        c.cqhdbl = ffi.cast("uint32_t *", bar + R.doorbell(qid, True, dstrd))
        c.qid, c.sq_size, c.cq_size, c.phase, c.page_size = qid, entries, entries, 1, PAGE
        # one entry of a full SQ stays empty (§4.1.2): entries - 1 command ids
        self.free_cids = ffi.new("uint16_t[]", list(reversed(range(entries - 1))))
        self.slots = ffi.new("struct nvmefs_slot *[]", entries)
        c.free_cids, c.free_top, c.slots = self.free_cids, entries - 1, self.slots
        self.room = trio.Event()
        self.gone = False           # its memory given back: a task that still holds it
                                    # (a poller between checkpoints) must not reap it

    @staticmethod
    def memory(entries: int) -> int:
        """Bytes of the SQ (whole pages, so the CQ starts on one) and the CQ."""
        return -(-entries * SQE // PAGE) * PAGE + entries * CQE

    @property
    def outstanding(self) -> int:
        return self.entries - 1 - self.c.free_top


class Pending:
    """A batch on the queues: its C batch and slots, its DMA memory (given back by
    whoever is last: the reaper once every command ended, or the submitter once
    it has read the data), and what the device may read until then."""

    def __init__(self, bid: int, n: int, alloc: Allocation | None, keep: Any):
        self.metadata: list[int] | None = None      # Layout.metadata
        self.batch = ffi.new("struct nvmefs_batch *")
        self.batch.id, self.batch.remaining = bid, n
        self.slots = ffi.new("struct nvmefs_slot[]", n)
        self.alloc, self.keep = alloc, keep
        self.done = trio.Event()
        self.answered = False
        self.generation = 0                 # the controller's reset count when it went out
        self.expired: list[int] = []        # commands still out at the deadline
        self.errors = 0                     # answers with a non-zero status


class Layout(NamedTuple):
    """Where a batch's data goes in its one allocation: each command's piece dword
    aligned after the one before, then each separate metadata buffer (the one MPTR
    points to: contiguous, dword aligned), then the PRP list pages."""
    offsets: list[int]
    lens: list[int]
    data_bytes: int                 # whole pages, metadata included
    list_bytes: int
    writes: bool                    # some command has data out
    metadata: list[int] | None = None   # each command's metadata offset (-1: none); None: none has


def _layout(reqs: Sequence[Request]) -> Layout:
    lens = [len(r.data_out) or r.data_in_len for r in reqs]
    offsets = [0, *itertools.accumulate((n + 3) & ~3 for n in lens)]
    end = offsets.pop()
    metadata = None
    if any(r.metadata_out or r.metadata_in_len for r in reqs):
        metadata = []
        for r in reqs:
            n = len(r.metadata_out) or r.metadata_in_len
            metadata.append(end if n else -1)
            end += (n + 3) & ~3
    lists = sum(lib.nvmefs_prp_list_pages(off, n, PAGE)     # one page spans at most two:
                for off, n in zip(offsets, lens) if n > PAGE)   # no list below that
    return Layout(offsets, lens, -(-end // PAGE) * PAGE, lists * PAGE,
                  any(r.data_out or r.metadata_out for r in reqs), metadata)


class VfioController(Controller):
    backend = "vfio"
    keeps_events = True
    metadata_refusal = ""           # MPTR points into the batch's DMA memory
    cdq_poll = 0.005        # QEMU's TP4159 controller masks its one-shot events after the first

    def __init__(self, uri: str, transport: Transport, *, queues: int, depth: int, dma: int,
                 poll: bool = False):
        super().__init__(uri)
        self.transport = transport
        self.want_queues, self.want_depth, self.dma_size = queues, depth, dma
        self.poll = poll                    # I/O completions polled by their submitters
        self.pool: DmaPool | None = None
        self.admin_q: Queue | None = None
        self.io_q: list[Queue] = []
        self.cap = 0
        self.pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self._next_q = 0
        self._live = trio.Event()           # set while commands may be sent
        self._reset_lock = trio.Lock()
        self._kick = trio.Event()           # polling: something went out
        self._done = ffi.new("uint64_t[]", DONE_PER_REAP)
        self._reaped = ffi.new("int *")
        self.gone = False
        self.vectors = 0
        self.counts = dict.fromkeys(("aborts", "aborts_confirmed", "cfs", "shutdowns",
                                     "function_resets"), 0)

    def info(self) -> dict[str, str]:
        return {"backend": "vfio", "address": self.transport.address, "transport": "pcie",
                **self.transport.info(),
                "queues": f"{len(self.io_q)} x {self.io_q[0].entries if self.io_q else 0}"}

    # ------------------------------------------------------------------ registers

    def registers(self) -> bytes:
        """BAR0's registers [0, 1000h) as 32-bit reads, for `regs`."""
        t = self.transport
        return b"".join(t.read32(off).to_bytes(4, "little")
                        for off in range(0, R.REGISTERS_SIZE, 4))

    def _csts(self) -> int:
        csts = self.transport.read32(R.CSTS)
        if csts == ALL_ONES:
            self._lost()
            raise ControllerGone(f"{self.uri}: the device is gone (registers read all ones)")
        return csts

    async def _wait_csts(self, field: R.Reg, want: int, what: str, timeout: float) -> None:
        """Until CSTS `field` reads `want`; CFS while enabling is fatal (a reset clears it)."""
        enabling = field is R.CSTS_RDY and want
        with trio.move_on_after(timeout):
            while True:
                csts = self._csts()
                if field.get(csts) == want:
                    return
                if enabling and R.CSTS_CFS.get(csts):
                    raise ControllerFatal(f"{self.uri}: controller fatal status while {what}")
                await trio.sleep(REGISTER_POLL)
        raise ControllerFatal(f"{self.uri}: {what} took longer than {timeout:g} s")

    async def _disable(self) -> None:
        t = self.transport
        cc = t.read32(R.CC)
        if R.CC_EN.get(cc):
            t.write32(R.CC, cc & ~R.CC_EN.put(1))
        await self._wait_csts(R.CSTS_RDY, 0, "disabling", R.timeout_ms(self.cap) / 1000)

    # ------------------------------------------------------------------ bring-up

    async def _start(self, nursery: trio.Nursery) -> None:
        t = self.transport
        await t.open(nursery)
        self.cap = t.read64(R.CAP)
        if self.cap == (1 << 64) - 1:
            raise ControllerGone(f"{self.uri}: the device does not answer (CAP reads all ones)")
        if R.CAP_MPSMIN.get(self.cap):      # CC.MPS 0: the host's 4 KiB pages
            raise TransportError(f"{self.uri}: the controller's smallest memory page is "
                                 f"{4096 << R.CAP_MPSMIN.get(self.cap)} bytes; nvmefs uses 4 KiB")
        need = Queue.memory(self.admin_depth) + self.want_queues * Queue.memory(self.io_depth)
        self.pool = DmaPool(t, self.dma_size + need)
        self.vectors = t.enable_vectors(1 + self.want_queues)
        for v in range(self.vectors):
            nursery.start_soon(self._serve_vector, v)
        if self.poll or not self.vectors:
            nursery.start_soon(self._poll)
        await self._bring_up()

    @property
    def io_depth(self) -> int:
        return min(self.want_depth, R.CAP_MQES.get(self.cap) + 1)

    @property
    def admin_depth(self) -> int:
        return min(ADMIN_ENTRIES, R.CAP_MQES.get(self.cap) + 1)

    @property
    def queues(self) -> list[Queue]:
        """The admin queue and the I/O queues there are."""
        return [q for q in [self.admin_q, *self.io_q] if q is not None]

    async def _bring_up(self) -> None:
        """From any state to enabled with I/O queues; the caller holds no queue."""
        t, cap = self.transport, self.cap
        await self._disable()
        for q in self.queues:
            self._cancel(q)
            q.gone = True
            self.pool.free(q.mem)
        self.admin_q, self.io_q = None, []
        dstrd = R.CAP_DSTRD.get(cap)
        entries = self.admin_depth
        self.admin_q = q = Queue(0, entries, self.pool.alloc_nowait(Queue.memory(entries)),
                                   t.bar, dstrd, 0 if self.vectors else None)
        t.write32(R.AQA, R.AQA_ASQS.put(entries - 1) | R.AQA_ACQS.put(entries - 1))
        t.write64(R.ASQ, q.sq_iova)
        t.write64(R.ACQ, q.cq_iova)
        css = R.CAP_CSS.get(cap)
        cc_css = (R.CSS_CSI if css & R.CAP_CSS_IOCS else
                  R.CSS_NVM if css & R.CAP_CSS_NVM else R.CSS_ADMIN_ONLY)
        t.write32(R.CC, R.CC_EN.put(1) | R.CC_CSS.put(cc_css) |
                  R.CC_MPS.put(0) |
                  R.CC_IOSQES.put(6) | R.CC_IOCQES.put(4))
        await self._wait_csts(R.CSTS_RDY, 1, "enabling", R.timeout_ms(cap) / 1000)
        cpl = await self._command(C.number_of_queues(self.want_queues))
        if not cpl.ok:
            raise TransportError(f"{self.uri}: Set Features Number of Queues failed: "
                                 f"{status.describe(cpl.status).name}")
        count = min(self.want_queues, C.queues_granted(cpl.dw0))
        for qid in range(1, count + 1):
            vector = (None if self.poll or not self.vectors else
                      1 + (qid - 1) % (self.vectors - 1) if self.vectors > 1 else 0)
            q = Queue(qid, self.io_depth, self.pool.alloc_nowait(Queue.memory(self.io_depth)),
                      t.bar, dstrd, vector)
            for cmd in (C.create_io_cq(qid, q.entries, q.cq_iova, vector),
                        C.create_io_sq(qid, q.entries, q.sq_iova, qid)):
                cpl = await self._command(cmd)
                if not cpl.ok:
                    self.pool.free(q.mem)
                    raise TransportError(f"{self.uri}: creating I/O queue {qid} failed: "
                                         f"{status.describe(cpl.status).name}")
            self.io_q.append(q)
        self._live.set()

    async def _command(self, cmd, timeout: float | None = None) -> Completion:
        """An admin command of the driver's own (no data), bypassing the reset gate."""
        req = Request(ADMIN, cmd, timeout=timeout)
        return (await self._run([req]))[0]

    # ------------------------------------------------------------------ completions

    def _reap(self, q: Queue) -> None:
        while not q.gone:
            k = lib.nvmefs_cq_reap(q.c, self._done, DONE_PER_REAP, self._reaped)
            if self._reaped[0]:
                q.room.set()
                q.room = trio.Event()
            for i in range(k):
                self._finish(self._done[i])
            if k < DONE_PER_REAP:
                return

    def _finish(self, bid: int) -> None:
        p = self.pending.pop(bid)
        if p.answered:
            if p.alloc is not None:
                self.pool.free(p.alloc)
        else:
            p.done.set()

    def _cancel(self, q: Queue, res: int = status.HOST_ABORTED) -> None:
        """Every command still out on `q` ends with `res` (the queue is gone)."""
        while True:
            k = lib.nvmefs_queue_cancel(q.c, res, self._done, DONE_PER_REAP)
            for i in range(k):
                self._finish(self._done[i])
            if k < DONE_PER_REAP:
                return

    def _queues_of(self, vector: int) -> list[Queue]:
        return [q for q in self.queues if q.vector == vector]

    async def _serve_vector(self, vector: int) -> None:
        try:
            while True:
                await self.transport.wait_vector(vector)
                for q in self._queues_of(vector):
                    self._reap(q)
        except ControllerGone:
            return                  # the transport closed its vectors (aclose)

    async def _poll(self) -> None:
        """Queues without interrupts are reaped every POLL_INTERVAL while they have
        commands out (besides by their submitters, with poll=1: this catches what
        a cancelled submitter left)."""
        while True:
            polled = [q for q in self.queues if q.vector is None]
            if not any(q.outstanding for q in polled):
                self._kick = trio.Event()
                await self._kick.wait()
                continue
            await trio.sleep(POLL_INTERVAL)
            for q in polled:
                self._reap(q)

    async def _poll_batch(self, p: Pending, routes: list[tuple[Queue, int, int]]) -> None:
        """poll=1: reap the batch's queues between checkpoints until it is done (no
        interrupt, no wakeup of another task: what a polled-mode driver saves)."""
        queues = {q for q, _, _ in routes}
        while not p.done.is_set():
            await trio.lowlevel.checkpoint()
            for q in queues:
                self._reap(q)

    async def _wait_room(self, q: Queue) -> None:
        """Until `q` has a free command id (polling it, if nothing interrupts)."""
        while not q.c.free_top:
            if q.vector is None:
                await trio.lowlevel.checkpoint()
                self._reap(q)
            else:
                await q.room.wait()

    # ------------------------------------------------------------------ submission

    def _route(self, reqs: Sequence[Request]) -> list[tuple[Queue, int, int]]:
        """(queue, start, end) pieces of a batch: admin to the admin queue, I/O spread
        over the I/O queues (base.spread), starting where the
        last batch ended."""
        if reqs[0].queue == ADMIN:
            return [(self.admin_q, 0, len(reqs))]
        qs = self.io_q
        if not qs:
            raise TransportError(f"{self.uri}: the controller granted no I/O queues", errno.ENXIO)
        out = spread(len(reqs), qs, self._next_q)
        self._next_q += len(out)
        return out

    def _pending(self, reqs: Sequence[Request], layout: Layout, alloc: Allocation | None
                 ) -> Pending:
        """A batch placed in its DMA memory (data out copied), not yet on a queue."""
        d = ffi.new("struct nvmefs_data *")
        meta = layout.metadata
        if alloc is not None:
            if layout.writes:
                for req, off in zip(reqs, layout.offsets):
                    if req.data_out:
                        ffi.memmove(alloc.host + off, req.data_out, len(req.data_out))
                for req, off in zip(reqs, meta or ()):
                    if req.metadata_out:
                        ffi.memmove(alloc.host + off, req.metadata_out, len(req.metadata_out))
            for req, off in zip(reqs, meta or ()):
                if req.metadata_in_len:     # a controller that writes none (PRACT) shows zeros,
                    ffi.memmove(alloc.host + off, bytes(req.metadata_in_len),  # never old bytes
                                req.metadata_in_len)
            d.iova, d.list_pages = alloc.iova, layout.list_bytes // PAGE
            d.list_host = alloc.host + layout.data_bytes
            d.list_iova = alloc.iova + layout.data_bytes
        if meta is None:
            sqes = b"".join([r.cmd.encode() for r in reqs])
        else:                   # MPTR: the command's metadata buffer in the batch's memory
            sqes = b"".join([(r.cmd._replace(mptr=alloc.iova + off) if off >= 0 else r.cmd)
                             .encode() for r, off in zip(reqs, meta)])
        keep = (sqes, ffi.new("uint32_t[]", layout.offsets), ffi.new("uint32_t[]", layout.lens),
                d)
        p = Pending(next(self._ids), len(reqs), alloc, keep)
        p.metadata = meta
        p.generation = self._stats.resets
        self.pending[p.batch.id] = p
        self._kick.set()
        return p

    async def _submit(self, p: Pending, routes: list[tuple[Queue, int, int]]) -> None:
        sqes, offsets, lens, d = p.keep
        for q, start, end in routes:
            while start < end:
                if not q.c.free_top:
                    await self._wait_room(q)
                k = lib.nvmefs_sq_submit(q.c, sqes[start * SQE:] if start else sqes,
                                         offsets + start, lens + start, d, p.slots + start,
                                         p.batch, end - start)
                if k < 0:
                    raise AssertionError("PRP list pages miscounted")
                self.transport.notify()
                start += k

    def _unsent(self, p: Pending) -> None:
        """Commands the deadline kept off the queues end host-aborted here (once: the
        slot then names the batch, as a sent one does)."""
        unsent = [s for s in p.slots if s.batch == ffi.NULL]
        for s in unsent:
            s.res, s.batch = status.HOST_ABORTED, p.batch
        if unsent:
            p.batch.remaining -= len(unsent)
            p.batch.failed += len(unsent)
            if not p.batch.remaining:
                self._finish(p.batch.id)

    async def _run(self, reqs: Sequence[Request], layout=None, deadline: float | None = None
                   ) -> list[Completion]:
        """Carry a batch of one queue type; completions in order."""
        deadline = deadline or self.batch_deadline(reqs)
        routes = self._route(reqs)
        layout = layout or _layout(reqs)
        size = layout.data_bytes + layout.list_bytes
        alloc = None
        if size and (alloc := self.pool.alloc_nowait(size)) is None:
            with trio.move_on_at(deadline):
                alloc = await self.pool.wait_alloc(size)
            if alloc is None:
                raise TransportError(f"{self.uri}: no DMA memory came free before the batch's "
                                     "deadline", errno.ETIMEDOUT)
        p = self._pending(reqs, layout, alloc)
        try:
            with trio.move_on_at(deadline):
                await self._submit(p, routes)
                if self.poll and reqs[0].queue != ADMIN:
                    await self._poll_batch(p, routes)
                await p.done.wait()
            if not p.done.is_set():
                self._unsent(p)
            if not p.done.is_set():
                await self._expire(p)
            out = self._completions(reqs, p)
            self._stats.errors += p.errors
            return out
        finally:
            if not p.done.is_set():
                self._unsent(p)
            if p.done.is_set():
                if p.alloc is not None:
                    self.pool.free(p.alloc)
                    p.alloc = None
            else:
                p.answered = True

    def _completions(self, reqs: Sequence[Request], p: Pending) -> list[Completion]:
        """The batch's answers from its slots and data; a batch where every command
        succeeded in time takes one comprehension."""
        slots = SLOT.iter_unpack(ffi.buffer(p.slots))
        data = ffi.buffer(p.alloc.host, p.alloc.size) if p.alloc is not None else b""
        offsets = p.keep[1]
        meta = p.metadata
        if not p.expired and not p.batch.failed and meta is None:
            return [from_fields(Completion, (0, result & 0xFFFFFFFF, result >> 32, 0, qid,
                                             req.cmd.cid, data[off:off + req.data_in_len]
                                             if req.data_in_len else b"", b""))
                    for req, (_, result, _, qid, _), off in zip(reqs, slots, offsets)]
        out = []
        for i, (req, (_, result, res, qid, _)) in enumerate(zip(reqs, slots)):
            if res == -errno.EINPROGRESS or i in p.expired:
                res = status.HOST_ABORTED       # past its deadline, whatever came after
            elif res < 0:
                err = -res
                raise (ControllerGone if err == errno.ENODEV else TransportError)(
                    f"{self.uri}: {req.queue} opcode {req.cmd.opcode:#04x}: "
                    f"{errno.errorcode.get(err, err)}", err)
            n, m = req.data_in_len, req.metadata_in_len
            got = (data[offsets[i]:offsets[i] + n] if not res else bytes(n)) if n else b""
            got_md = (data[meta[i]:meta[i] + m] if not res else bytes(m)) if m else b""
            out.append(from_fields(Completion, (res & 0x7FFF, result & 0xFFFFFFFF, result >> 32,
                                                0, qid, req.cmd.cid, got, got_md)))
            p.errors += bool(res & status.CODE_MASK)
        return out

    async def submit_batch(self, reqs: Sequence[Request]) -> list[Completion]:
        """The batch goes out in one piece per queue (one doorbell each) and is waited
        for once, bounded by its latest deadline. A batch of admin and I/O commands
        goes one command at a time; one larger than half the DMA pool, in halves."""
        if not reqs:
            await trio.lowlevel.checkpoint()
            return []
        if len({r.queue for r in reqs}) > 1:
            return [(await self.submit_batch([r]))[0] for r in reqs]
        layout = _layout(reqs)
        if layout.data_bytes + layout.list_bytes > self.dma_size // 2 and len(reqs) > 1:
            half = len(reqs) // 2
            return await self.submit_batch(reqs[:half]) + await self.submit_batch(reqs[half:])
        stats = self._stats
        n = len(reqs)
        deadline = self.batch_deadline(reqs)
        await self._wait_live(deadline)
        stats.submitted += n
        stats.in_flight += n
        try:
            out = await self._run(reqs, layout, deadline)
        except TransportError:
            stats.transport_errors += 1
            raise
        finally:
            stats.in_flight -= n
        stats.completed += n
        return out

    async def _wait_live(self, deadline: float) -> None:
        if self.gone:
            raise ControllerGone(f"{self.uri}: the device is gone")
        if not self._live.is_set():
            with trio.move_on_at(deadline):
                await self._live.wait()
            if not self._live.is_set():
                raise ControllerFatal(f"{self.uri}: the controller is being reset")

    async def _execute(self, req: Request) -> Completion:
        return (await self.submit_batch([req]))[0]

    # ------------------------------------------------------------------ recovery

    async def _expire(self, p: Pending) -> None:
        """Past the deadline: abort what is still out, else reset (bounded)."""
        p.expired = [i for i, s in enumerate(p.slots) if s.res == -errno.EINPROGRESS]
        out = [p.slots[i] for i in p.expired]
        self._stats.timeouts += len(out)
        log.warning("%s: %d command(s) timed out", self.uri, len(out))
        with trio.move_on_after(RESET_TIMEOUT):
            if R.CSTS_CFS.get(self._csts()):
                self.counts["cfs"] += 1
                await self._reset_once(p.generation)
                return
            for slot in out:
                if slot.res != -errno.EINPROGRESS or slot.qid == 0:
                    continue        # ended meanwhile; an admin command is not aborted by one
                self.counts["aborts"] += 1
                with trio.move_on_after(ABORT_GRACE):
                    cpl = await self._command(C.abort(slot.qid, slot.cid), timeout=ABORT_GRACE)
                    if cpl.ok and not cpl.dw0 & 1:      # DW0 bit 0 clear: aborted (§5.1.1)
                        self.counts["aborts_confirmed"] += 1
            if any(s.res == -errno.EINPROGRESS for s in out):
                with trio.move_on_after(ABORT_GRACE):
                    await p.done.wait()
        if not p.done.is_set() and any(s.res == -errno.EINPROGRESS for s in out):
            await self._reset_once(p.generation)

    async def _reset_once(self, generation: int) -> None:
        """Reset unless a reset since `generation` already ended these commands."""
        if self._stats.resets == generation:
            await self.reset()

    async def _reset(self) -> None:
        async with self._reset_lock:
            self._live = trio.Event()
            try:
                await self._bring_up()
            except ControllerFatal:
                if not self.transport.function_reset():
                    raise
                self.counts["function_resets"] += 1
                await self._bring_up()

    def _lost(self) -> None:
        """The device is gone: everything still out ends with ENODEV."""
        if not self.gone:
            self.gone = True
            log.error("%s: the device is gone", self.uri)
            for q in self.queues:
                self._cancel(q, -errno.ENODEV)

    # ------------------------------------------------------------------ events, CDQ memory

    async def _wait_serving(self) -> None:
        await self._live.wait()

    async def _held(self, cmd) -> Completion:
        return await self._command(cmd, timeout=math.inf)

    def _cdq_memory(self, size: int) -> Memory:
        """A Controller Data Queue's ring in the DMA pool, zeroed (phase tags 0)."""
        a = self.pool.alloc_nowait(size) if self.pool is not None else None
        if a is None:
            raise TransportError(f"{self.uri}: no {size} bytes of DMA memory free for the "
                                 "queue (the dma= option)", errno.ENOMEM)
        ffi.memmove(a.host, bytes(a.size), a.size)

        def release() -> None:
            if self.pool is not None:       # else closed: the pool went as a whole
                self.pool.free(a)
        return Memory(a.iova, memoryview(ffi.buffer(a.host, size)), release)

    # ------------------------------------------------------------------ shutdown

    async def aclose(self) -> None:
        """Normal shutdown (CC.SHN, wait for SHST complete), then disabled, so the
        device is left for the next driver; bounded however it goes."""
        t = self.transport
        if self.pool is not None and not self.gone:
            with trio.CancelScope(shield=True), trio.move_on_after(2 * SHUTDOWN_TIMEOUT):
                try:
                    cc = t.read32(R.CC)
                    if R.CC_EN.get(cc):
                        t.write32(R.CC, cc & ~R.CC_SHN.put(3) | R.CC_SHN.put(R.SHN_NORMAL))
                        rtd3e = self.id_ctrl.get("rtd3e", 0) / 1e6
                        await self._wait_csts(R.CSTS_SHST, R.SHST_COMPLETE, "shutting down",
                                              max(SHUTDOWN_TIMEOUT, rtd3e))
                        self.counts["shutdowns"] += 1
                    await self._disable()
                except TransportError as e:
                    log.warning("%s: shutdown: %s", self.uri, e)
        self._live = trio.Event()
        for q in self.queues:
            self._cancel(q, -errno.ENODEV)
            q.gone = True
        self.admin_q, self.io_q = None, []
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        t.close()
        await super().aclose()

    def statistics(self):
        stats = super().statistics()
        stats.extra.update(self.counts, aer=self.events.count, queues=len(self.io_q),
                           vectors=self.vectors if
                           self.pool else 0, batches_in_flight=len(self.pending),
                           stray_completions=sum(q.c.stray for q in self.queues))
        if self.pool is not None:
            stats.extra.update(self.pool.statistics())
        return stats
