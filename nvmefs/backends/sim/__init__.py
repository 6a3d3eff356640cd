"""The `sim` backend: an NVMe controller simulated in the daemon's own process.

The queue layer here owns what a real controller's queues would: command
identifiers on the wire, the SQ head pointer, injected faults, Controller
Fatal Status, surprise removal, aborts and resets. Command semantics live in
`device.SimDevice`.

Time: the commands of a batch arrive together and are carried in turn. A
command that takes time (io_latency, a delay fault) completes that long after
it arrived, not after the command before it completed, so a batch takes about
as long as its slowest command, as on a controller that works on a whole queue.

Media: a namespace in a file is read and written by one worker thread per
controller (a CapacityLimiter of 1, so its commands reach the file in order);
the event loop never waits for the disk.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Awaitable, Sequence

import trio

from ...spec import status as S
from ...spec.commands import OP_ASYNC_EVENT
from ...spec.opcodes import ADMIN, IO
from ...spec.queue import Command, Completion, from_fields
from ..base import Controller, Request
from ..errors import ControllerFatal, ControllerGone
from ..cdq import Memory
from .cdq import HostBuffers
from .config import parse_uri
from .device import AERL, Media, Result, SimDevice, open_stores
from .faults import Fault, Faults, parse_fault

log = logging.getLogger(__name__)

QUEUE_DEPTH = 1024
SQID = {ADMIN: 0, IO: 1}
CLOSE_TIMEOUT = 10.0        # seconds aclose waits for the media thread to finish its command

# When the commands of the batch being carried arrived (trio's clock); per task.
_arrived: contextvars.ContextVar[float] = contextvars.ContextVar("nvmefs_sim_arrived")


class SimController(Controller):
    backend = "sim"
    keeps_events = True
    metadata_refusal = ""           # separate metadata buffers are carried as they are

    def __init__(self, uri: str, index: int = 0):
        super().__init__(uri)
        self.config = parse_uri(uri, index)
        self.index = index
        self.faults = Faults([parse_fault(rule) for rule in self.config.fault])
        self.device: SimDevice | None = None
        self.fatal = False
        self.removed = False
        self._next_cid = {ADMIN: 0, IO: 0}
        self._sqhd = {ADMIN: 0, IO: 0}
        self._hung: set[int] = set()     # requests a timeout fault swallowed, by id()
        self._disk = trio.CapacityLimiter(1)     # the media thread of a file-backed sim
        # sim:null=1 that takes no time and logs no command: its I/O needs no wire entry
        cfg = self.config
        self._bare = bool(cfg.null and not cfg.io_latency and not cfg.command_log)
        self._closed = False
        self.host = HostBuffers()           # the memory nvmefs, its host, lends it
        self._aers = 0                      # Asynchronous Event Requests held
        self._posted = trio.Event()         # set when the device has an event for them
        self._generation = 0                # bumped by every reset

    async def _start(self, nursery: trio.Nursery) -> None:
        if self.config.path:
            stores = await trio.to_thread.run_sync(open_stores, self.config, self.index,
                                                   limiter=self._disk)
        else:
            stores = open_stores(self.config, self.index)
        self.device = SimDevice(self.config, trio.current_time, self.index, stores)
        self.device.cdq.host = self.host
        self.device.on_event = self._wake_events

    def info(self) -> dict[str, str]:
        return {"backend": "sim", "address": self.uri, "transport": "sim"}

    @property
    def max_transfer(self) -> int:
        """MDTS in bytes; 0 (sim:mdts=0): no limit."""
        return self.device.max_transfer if self.device else super().max_transfer

    @property
    def command_log(self):
        """The last `sim:command_log=N` (queue, Command) pairs that reached the
        controller, oldest first (empty with the default N = 0)."""
        return self.device.command_log

    def set_temperature(self, kelvin: int) -> None:
        self.device.set_temperature(kelvin)

    def _check(self) -> None:
        if self.removed:
            raise ControllerGone(f"{self.uri}: controller removed")
        if self.fatal:
            raise ControllerFatal(f"{self.uri}: controller fatal status (CSTS.CFS)")
        if self._closed:
            raise ControllerGone(f"{self.uri}: controller closed")

    def _wire_cid(self, queue: str) -> int:
        cid = self._next_cid[queue]
        self._next_cid[queue] = (cid + 1) & 0xFFFF
        return cid

    async def submit_batch(self, reqs: Sequence[Request]) -> list[Completion]:
        token = _arrived.set(trio.current_time())
        try:
            return await super().submit_batch(reqs)
        finally:
            _arrived.reset(token)

    def _begin(self, req: Request) -> Completion | Awaitable[Completion]:
        """A command with no latency, no fault and no disk to wait for completes here
        and now; any other is a coroutine that carries it."""
        if self.removed or self.fatal or self._closed:
            self._check()
        queue = req.queue
        cid = self._wire_cid(queue)
        if self._bare and queue == IO and not self.faults.rules:
            return self._completion(req, self.device.null_io(req.data_in_len))
        if queue == ADMIN and req.cmd.opcode == OP_ASYNC_EVENT:
            return self._async_event(req, cid)
        wire = req.cmd.with_cid(cid)
        fault = self.faults.take(queue, wire) if self.faults.rules else None
        takes = self.config.io_latency / 1000 if queue == IO else 0.0
        if fault is not None and fault.kind == "delay":
            takes += fault.delay
        if takes or fault is not None:
            return self._later(req, wire, fault, takes)
        device = self.device
        res = device.submit(queue, wire, req.data_out, req.data_in_len, req.metadata_out,
                            req.metadata_in_len)
        if res.__class__ is Media:
            if device.file_backed:
                return self._on_disk(req, wire, res)
            res = self._media_now(res)
        return self._completed(req, wire, res)

    # ------------------------------------------------------------------ asynchronous events

    def _wake_events(self) -> None:
        self._posted.set()
        self._posted = trio.Event()

    async def _async_event(self, req: Request, cid: int) -> Completion:
        """Asynchronous Event Request (§5.2): held until the device has an event; at
        most AERL + 1 at once (then Asynchronous Event Request Limit Exceeded). A
        reset ends the held ones (host-aborted, as the host sees it)."""
        device = self.device
        if self._aers > AERL:
            return self._completion(req, Result(S.ASYNC_LIMIT, 0, bytes(req.data_in_len)))
        self._aers += 1
        generation = self._generation
        try:
            while not device.events:
                await self._posted.wait()
                self._check()
                if self._generation != generation:
                    return self._completion(req, Result(S.HOST_ABORTED, 0,
                                                        bytes(req.data_in_len)))
            dw0, dw1 = device.events.popleft()
        finally:
            self._aers -= 1
        return self._completion(req, Result(S.SUCCESS, dw0, bytes(req.data_in_len)))._replace(
            dw1=dw1)

    # ------------------------------------------------------------------ Controller Data Queues

    def _cdq_memory(self, size: int) -> Memory:
        iova, ring = self.host.alloc(size)
        return Memory(iova, ring, lambda: self.host.free(iova))

    def cdq_counts(self, cdqid: int) -> dict[str, int]:
        counts = self.device.cdq.statistics().get(cdqid, {})
        return {k: counts[k] for k in ("posted", "lost") if k in counts}

    async def _execute(self, req: Request) -> Completion:
        started = self._begin(req)
        return started if isinstance(started, Completion) else await started

    async def _later(self, req: Request, wire: Command, fault: Fault | None,
                     takes: float) -> Completion:
        if takes:
            await trio.sleep_until(_arrived.get(trio.current_time()) + takes)
            self._check()
        if fault is not None and fault.kind != "delay":
            return self._completion(req, await self._faulted(fault, req, wire))
        res = self.device.submit(req.queue, wire, req.data_out, req.data_in_len,
                                 req.metadata_out, req.metadata_in_len)
        if isinstance(res, Media):
            res = await self._media(res)
        return self._completed(req, wire, res)

    async def _on_disk(self, req: Request, wire: Command, work: Media) -> Completion:
        return self._completed(req, wire, await self._media(work))

    def _completed(self, req: Request, wire: Command, res: Result) -> Completion:
        """The completion of a command the device carried (device.complete first)."""
        return self._completion(req, self.device.complete(req.queue, wire, res, req.data_in_len,
                                                          req.metadata_in_len))

    def _completion(self, req: Request, res: Result) -> Completion:
        queue = req.queue
        sqhd = self._sqhd[queue] = (self._sqhd[queue] + 1) % QUEUE_DEPTH
        return from_fields(Completion, (res.status, res.dw0, res.dw1, sqhd, SQID[queue],
                                        req.cmd.cid, res.data, res.metadata))

    async def _media(self, work: Media) -> Result:
        """Media work of a file-backed namespace, in the media thread."""
        if not self.device.file_backed:
            return self._media_now(work)
        try:
            out = await trio.to_thread.run_sync(work.run, limiter=self._disk)
        except OSError as e:
            return self._media_failed(work, e)
        return work.done(out)

    def _media_now(self, work: Media) -> Result:
        try:
            out = work.run()
        except OSError as e:
            return self._media_failed(work, e)
        return work.done(out)

    def _media_failed(self, work: Media, e: OSError) -> Result:
        """The backing store failed: a media error, as a disk reports it."""
        log.warning("%s: namespace store failed: %s", self.uri, e)
        return Result(work.failed)

    async def _faulted(self, fault: Fault, req: Request, wire: Command) -> Result:
        if fault.kind == "fatal":
            self.fatal = True
            self._check()
        if fault.kind == "remove":
            self.removed = True
            self._check()
        if fault.kind == "drop":            # carried, and its completion lost: no abort finds it
            res = self.device.submit(req.queue, wire, req.data_out, req.data_in_len,
                                     req.metadata_out, req.metadata_in_len)
            self._completed(req, wire, await self._media(res) if isinstance(res, Media) else res)
            await trio.sleep_forever()
        self.device.log_command(req.queue, wire)
        if fault.kind == "status":
            self.device.record_error(req.queue, wire, fault.status)
            return Result(fault.status, 0, bytes(req.data_in_len))
        self._hung.add(id(req))            # timeout: hang until aborted
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def _abort(self, req: Request) -> bool:
        """Abort (opcode 08h): confirmed if the command is still outstanding."""
        await trio.lowlevel.checkpoint()
        self._check()
        return self.release(req)

    def release(self, req: Request) -> bool:
        """Let go of a command a timeout fault holds (it was aborted): True if one was."""
        if id(req) in self._hung:
            self._hung.discard(id(req))
            return True
        return False

    async def _reset(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.removed:
            raise ControllerGone(f"{self.uri}: controller removed")
        self.fatal = False
        self._hung.clear()
        self._generation += 1
        self._wake_events()
        self._sqhd = {ADMIN: 0, IO: 0}
        self.device.controller_reset()

    async def aclose(self) -> None:
        self._closed = True         # no command starts from now on
        self._wake_events()         # held event requests end
        device = self.device
        if device is not None:
            if device.file_backed:
                # after the media thread's command in progress, if any; bounded even
                # when closing because of a cancellation
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    async with self._disk:
                        await trio.to_thread.run_sync(device.close)
            else:
                device.close()
        await super().aclose()

    def statistics(self):
        stats = super().statistics()
        stats.extra.update(faults_fired=self.faults.fired, faults_armed=len(self.faults.rules),
                           hung=len(self._hung),
                           error_log_entries=self.device.error_count if self.device else 0)
        return stats
