"""An NVMe/TCP target in a thread of its own, serving simulated controllers, for the
tcp backend's tests here (the guest tests use Linux's nvmet-tcp).

It speaks the controller side of spec.tcp: ICResp, Connect (an admin Connect
makes an association with a new sim controller, I/O Connects join it by
CNTLID), Property Get/Set (CAP, VS, CC, CSTS: EN brings RDY, SHN brings SHST),
Keep Alive, Disconnect; every other command goes to the sim, its data in the
capsule, by R2T and H2CData, or back in C2HData (with SUCCESS when it
succeeded). `drop()` closes the listener and every connection, as removing an
nvmet port does; `restore()` listens again on the same port.
"""

from __future__ import annotations

import threading

import trio
from crc32c import crc32c

from nvmefs.backends.base import Request
from nvmefs.backends.sim import SimController
from nvmefs.spec import fabrics as F
from nvmefs.spec import registers as R
from nvmefs.spec import status as S
from nvmefs.spec import tcp as T
from nvmefs.spec.opcodes import ADMIN, IO, XFER_FROM_CTRL, XFER_TO_CTRL, direction
from nvmefs.spec.queue import Command, Completion

MAXH2CDATA = 16384
IOCCSZ_DATA = 8192          # in-capsule data on I/O queues
C2H_CHUNK = 32768
CAP = R.CAP_MQES.put(1023) | R.CAP_CQR.put(1) | R.CAP_TO.put(2) | R.CAP_CSS.put(R.CAP_CSS_NVM)


class Association:
    def __init__(self, sim: SimController, cntlid: int):
        self.sim, self.cntlid = sim, cntlid
        self.cc = self.csts = 0


class SimTarget:
    def __init__(self, subnqn: str = "nqn.2026-12.io.nvmefs:sim", sim: str = "sim:size=64M"):
        self.subnqn, self.sim_uri = subnqn, sim
        self.port = 0
        self.associations: dict[int, Association] = {}
        self.connections = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._serving: trio.CancelScope | None = None
        self._streams: set[trio.SocketStream] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}/{self.subnqn}"

    def start(self) -> "SimTarget":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        trio.from_thread.run_sync(self._stop_all, trio_token=self._token)
        self._thread.join(10)

    def drop(self) -> None:
        trio.from_thread.run_sync(self._drop, trio_token=self._token)

    def restore(self) -> None:
        trio.from_thread.run(self._listen, trio_token=self._token)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._listen()
            self._ready.set()
            await trio.sleep_forever()

    async def _listen(self) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._serving = trio.CancelScope()

        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            with self._serving:
                await trio.serve_listeners(self._handle, listeners, task_status=task_status)
        await self._nursery.start(serve)

    def _drop(self) -> None:
        self._serving.cancel()
        for s in list(self._streams):
            s.socket.close()

    def _stop_all(self) -> None:
        self._drop()
        self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ one connection

    async def _handle(self, stream: trio.SocketStream) -> None:
        self._streams.add(stream)
        self.connections += 1
        conn = _Conn(self, stream)
        try:
            await conn.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, T.ProtocolError):
            pass
        finally:
            self._streams.discard(stream)

    async def association(self) -> Association:
        sim = SimController(self.sim_uri)      # one subsystem: the same identity each time
        await sim.start(self._nursery)
        a = Association(sim, len(self.associations) + 1)
        self.associations[a.cntlid] = a
        return a


class _Conn:
    def __init__(self, target: SimTarget, stream: trio.SocketStream):
        self.target, self.stream = target, stream
        self.codec = T.Connection("controller", crc32c, max_data=1 << 22)
        self.assoc: Association | None = None
        self.qid = 0
        self.r2t: dict[int, tuple[bytearray, trio.Event]] = {}
        self.lock = trio.Lock()

    async def send(self, pdu) -> None:
        async with self.lock:
            await self.stream.send_all(self.codec.send(pdu))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    break
                self.codec.receive_data(data)
                while (pdu := self.codec.next_pdu()) is not T.NEED_DATA:
                    if isinstance(pdu, T.ICReq):
                        self.codec.negotiated(pdu)
                        resp = T.ICResp(dgst=pdu.dgst, maxh2cdata=MAXH2CDATA)
                        await self.send(resp)
                        self.codec.negotiated(resp)
                    elif isinstance(pdu, T.CapsuleCmd):
                        nursery.start_soon(self.command, Command.decode(pdu.sqe), pdu.data)
                    elif isinstance(pdu, T.H2CData):
                        buf, done = self.r2t[pdu.ttag]
                        buf[pdu.offset:pdu.offset + len(pdu.data)] = pdu.data
                        if pdu.last:
                            done.set()
                    elif isinstance(pdu, T.TermReq):
                        return
            nursery.cancel_scope.cancel()

    async def respond(self, cmd: Command, status: int = 0, dw0: int = 0, dw1: int = 0) -> None:
        await self.send(T.CapsuleResp(Completion(status, dw0, dw1, 0, self.qid,
                                                 cmd.cid).encode()))

    async def command(self, cmd: Command, data: bytes) -> None:
        if cmd.opcode == F.OP_FABRICS:
            return await self.fabrics(cmd, data)
        a = self.assoc
        queue = ADMIN if self.qid == 0 else IO
        if a is None or not R.CSTS_RDY.get(a.csts):
            return await self.respond(cmd, S.make_status(S.GENERIC, 0x0C))   # sequence error
        if queue == ADMIN and cmd.opcode == 0x18:                          # Keep Alive
            return await self.respond(cmd)
        length = cmd.prp2 & 0xFFFFFFFF if cmd.flags & T.PSDT_SGL else 0
        xfer = direction(cmd.opcode)
        if xfer == XFER_TO_CTRL and not data and length:
            ttag = cmd.cid
            buf, done = bytearray(length), trio.Event()
            self.r2t[ttag] = (buf, done)
            await self.send(T.R2TPdu(cmd.cid, ttag, 0, length))
            await done.wait()
            del self.r2t[ttag]
            data = bytes(buf)
        req = Request(queue, cmd._replace(flags=0, prp1=0, prp2=0), data,
                      length if xfer == XFER_FROM_CTRL else 0)
        cpl = await a.sim.submit(req)
        if cpl.data and cpl.ok:
            for off in range(0, len(cpl.data), C2H_CHUNK):
                chunk = cpl.data[off:off + C2H_CHUNK]
                last = off + len(chunk) == len(cpl.data)
                await self.send(T.C2HData(cmd.cid, off, chunk, last, success=last))
            return
        await self.respond(cmd, cpl.status, cpl.dw0, cpl.dw1)

    async def fabrics(self, cmd: Command, data: bytes) -> None:
        kind = F.fctype(cmd)
        if kind == F.FCTYPE_CONNECT:
            cd = F.ConnectData.decode(data)
            if cd.subnqn != self.target.subnqn:
                return await self.respond(cmd, S.make_status(S.CMD_SPECIFIC, 0x84))
            self.qid = F.QID.get(cmd)
            if self.qid == 0:
                self.assoc = await self.target.association()
            else:
                self.assoc = self.target.associations.get(cd.cntlid)
                if self.assoc is None:
                    return await self.respond(cmd, S.make_status(S.CMD_SPECIFIC, 0x82))
            return await self.respond(cmd, dw0=self.assoc.cntlid)
        a = self.assoc
        if kind == F.FCTYPE_PROPERTY_GET:
            values = {R.CAP: CAP, R.VS: 0x00010400, R.CC: a.cc, R.CSTS: a.csts}
            value = values.get(F.OFFSET.get(cmd), 0)
            return await self.respond(cmd, 0, value & 0xFFFFFFFF, value >> 32)
        if kind == F.FCTYPE_PROPERTY_SET and F.OFFSET.get(cmd) == R.CC:
            a.cc = F.VALUE.get(cmd) & 0xFFFFFFFF
            a.csts = R.CSTS_RDY.put(R.CC_EN.get(a.cc)) | R.CSTS_SHST.put(
                R.SHST_COMPLETE if R.CC_SHN.get(a.cc) else 0)
            return await self.respond(cmd)
        if kind == F.FCTYPE_DISCONNECT:
            await self.respond(cmd)
            await self.stream.aclose()
            return
        await self.respond(cmd, S.make_status(S.GENERIC, 0x02, dnr=True))

