"""The `sim` backend: an NVMe controller simulated in the daemon's own process.

The queue layer here owns what a real controller's queues would: command
identifiers on the wire, the SQ head pointer, injected faults, Controller
Fatal Status, surprise removal, aborts and resets. Command semantics live in
`device.SimDevice`.
"""

from __future__ import annotations

import trio

from ...spec.opcodes import ADMIN, IO
from ...spec.queue import Completion
from ..base import Controller, ControllerFatal, ControllerGone, Request
from .config import parse_uri
from .device import Result, SimDevice
from .faults import Faults

QUEUE_DEPTH = 1024
SQID = {ADMIN: 0, IO: 1}


class SimController(Controller):
    backend = "sim"

    def __init__(self, uri: str, index: int = 0):
        super().__init__(uri)
        self.config = parse_uri(uri, index)
        self.index = index
        self.faults = Faults()
        self.device: SimDevice | None = None
        self.fatal = False
        self.removed = False
        self._next_cid = {ADMIN: 0, IO: 0}
        self._sqhd = {ADMIN: 0, IO: 0}
        self._hung: set[int] = set()     # requests a timeout fault swallowed, by id()

    async def _start(self) -> None:
        self.device = SimDevice(self.config, trio.current_time, self.index)

    def info(self) -> dict[str, str]:
        return {"backend": "sim", "address": self.uri, "transport": "sim"}

    @property
    def command_log(self):
        """Every (queue, Command) that reached the controller, oldest first."""
        return self.device.command_log

    def set_temperature(self, kelvin: int) -> None:
        self.device.temperature = kelvin

    def _concurrent(self, reqs) -> bool:
        # only latency or an armed fault makes a command wait
        return bool(self.faults.rules or self.config.io_latency)

    def _check(self) -> None:
        if self.removed:
            raise ControllerGone(f"{self.uri}: controller removed")
        if self.fatal:
            raise ControllerFatal(f"{self.uri}: controller fatal status (CSTS.CFS)")

    def _wire_cid(self, queue: str) -> int:
        cid = self._next_cid[queue]
        self._next_cid[queue] = (cid + 1) & 0xFFFF
        return cid

    async def _execute(self, req: Request) -> Completion:
        self._check()
        wire = req.cmd.with_cid(self._wire_cid(req.queue))
        fault = self.faults.take(req.queue, wire)
        if req.queue == IO and self.config.io_latency:
            await trio.sleep(self.config.io_latency / 1000)
            self._check()
        if fault is not None:
            res = await self._faulted(fault, req, wire)
        else:
            res = self.device.execute(req.queue, wire, req.data_out, req.data_in_len)
            await trio.lowlevel.checkpoint()
        sqhd = self._sqhd[req.queue] = (self._sqhd[req.queue] + 1) % QUEUE_DEPTH
        return Completion(res.status, res.dw0, 0, sqhd, SQID[req.queue], req.cmd.cid, res.data)

    async def _faulted(self, fault, req: Request, wire) -> Result:
        if fault.kind == "fatal":
            self.fatal = True
            self._check()
        if fault.kind == "remove":
            self.removed = True
            self._check()
        if fault.kind == "delay":
            await trio.sleep(fault.delay)
            self._check()
            return self.device.execute(req.queue, wire, req.data_out, req.data_in_len)
        self.device.command_log.append((req.queue, wire))
        if fault.kind == "status":
            await trio.lowlevel.checkpoint()
            self.device.record_error(req.queue, wire, fault.status)
            return Result(fault.status, 0, bytes(req.data_in_len))
        self._hung.add(id(req))            # timeout: hang until aborted
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def _abort(self, req: Request) -> bool:
        """Abort (opcode 08h): confirmed if the command is still outstanding."""
        await trio.lowlevel.checkpoint()
        self._check()
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
        self._sqhd = {ADMIN: 0, IO: 0}
        self.device.activate_pending_firmware()
        # Controller Level Reset: features return to their saved values (§5.27.1)
        self.device.features = {fid: dict(v) for fid, v in self.device.saved.items()}

    async def aclose(self) -> None:
        if self.device is not None:
            self.device.close()
        await super().aclose()

    def statistics(self):
        stats = super().statistics()
        stats.extra.update(faults_fired=self.faults.fired, hung=len(self._hung),
                           error_log_entries=self.device.error_count if self.device else 0)
        return stats
