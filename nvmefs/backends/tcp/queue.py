"""One NVMe/TCP queue: a TCP connection, its codec (spec.tcp), and the commands
outstanding on it.

Commands go out as capsules, a whole batch in one send. Data for the host
comes in C2HData (landing in the command's buffer at its offset; SUCCESS ends
the command without a response capsule); data for the controller goes in the
capsule when it fits the controller's in-capsule size, else in H2CData after
the controller's R2T, split at MAXH2CDATA (a Connect's data always goes in its
capsule, as NVMe over Fabrics requires). A reader task takes PDUs as they
come; it answers R2Ts from tasks of their own, so it never stops reading.
A broken connection (EOF, an error, a Termination Request, a PDU that breaks
the protocol, which is answered with one) ends every command on the queue.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Sequence

import trio

from ...spec import tcp as T
from ...spec.fabrics import OP_FABRICS
from ...spec.queue import Command, Completion, from_fields
from ...spec.status import DATA_XFER_ERROR
from ..base import Request, TransportError

log = logging.getLogger(__name__)

RECEIVE = 1 << 18                   # bytes per receive
SEND_TIMEOUT = 30.0                 # seconds a send may wait for the peer to take it


class Lost(TransportError):
    """The queue's connection is gone."""


class Batch:
    def __init__(self, n: int):
        self.remaining = n
        self.done = trio.Event()
        self.answers: list[Completion | None] = [None] * n

    def land(self, i: int, cpl: Completion) -> None:
        if self.answers[i] is None:
            self.answers[i] = cpl
            self.remaining -= 1
            if not self.remaining:
                self.done.set()


class _Cmd:
    __slots__ = ("req", "batch", "index", "buf", "status")

    def __init__(self, req: Request, batch: Batch, index: int):
        self.req, self.batch, self.index = req, batch, index
        self.buf: bytearray | None = None   # data in that came in pieces
        self.status = 0                     # Data Transfer Error after a data digest error


class TcpQueue:
    def __init__(self, qid: int, entries: int, stream: trio.abc.Stream, codec: T.Connection,
                 in_capsule: int, maxh2cdata: int, what: str):
        self.qid, self.entries = qid, entries
        self.stream, self.codec = stream, codec
        self.in_capsule = in_capsule            # bytes of data a command capsule may carry
        self.maxh2cdata = maxh2cdata
        self.what = what
        self.cmds: dict[int, _Cmd] = {}
        self.free = deque(range(entries - 1))   # one entry of a full SQ stays empty
        self.room = trio.Event()
        self.send_lock = trio.Lock()
        self.lost: Lost | None = None
        self.on_lost: Callable[["TcpQueue"], None] = lambda q: None
        self.sent = self.received = 0

    # ------------------------------------------------------------------ sending

    async def _send(self, data: bytes) -> None:
        """Send whole PDUs. Shielded, so a cancelled caller (an interrupted read) can
        neither leave half a PDU on the wire nor commands registered but never sent;
        bounded by SEND_TIMEOUT, past which the connection is given up."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(SEND_TIMEOUT) as scope:
                async with self.send_lock:
                    try:
                        await self.stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                        self._lose(f"send: {e}")
                        raise self.lost from None
            if scope.cancelled_caught:
                self._lose(f"send: nothing taken for {SEND_TIMEOUT:g} s")
                raise self.lost
        self.sent += len(data)

    def _capsule(self, cmd: Command, req: Request) -> bytes:
        n = len(req.data_out) or req.data_in_len
        if req.data_out and (n <= self.in_capsule or cmd.opcode == OP_FABRICS):    # Connect
            return self.codec.send(T.CapsuleCmd(T.in_capsule_sgl(cmd, n).encode(), req.data_out))
        # SGLs on every command, with no data too (length 0): nvmet refuses PRPs (PSDT 00b)
        return self.codec.send(T.CapsuleCmd(T.transport_sgl(cmd, n).encode()))

    async def submit(self, reqs: Sequence[Request], batch: Batch, start: int = 0) -> int:
        """Send as many of `reqs` as there are command ids (waiting for one if there are
        none); how many went. Their answers land in `batch` from index `start`."""
        if self.lost:
            raise self.lost
        while not self.free:
            room = self.room
            await room.wait()
            if self.lost:
                raise self.lost
        parts = []
        k = min(len(reqs), len(self.free))
        for i in range(k):
            req = reqs[i]
            cid = self.free.popleft()
            self.cmds[cid] = _Cmd(req, batch, start + i)
            parts.append(self._capsule(req.cmd.with_cid(cid), req))
        await self._send(b"".join(parts))
        return k

    async def send_plain(self, pdu: T.Pdu) -> None:
        await self._send(self.codec.send(pdu))

    # ------------------------------------------------------------------ receiving

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The reader: PDUs in, commands answered, until the connection breaks."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    data = await self.stream.receive_some(RECEIVE)
                    if not data:
                        raise Lost(f"{self.what}: the target closed the connection")
                    self.received += len(data)
                    self.codec.receive_data(data)
                    while (pdu := self.codec.next_pdu()) is not T.NEED_DATA:
                        self._dispatch(pdu, nursery)
            except T.ProtocolError as e:
                with trio.move_on_after(1):
                    try:
                        await self.send_plain(T.TermReq(T.H2C_TERM_REQ, e.fes, e.fei, e.header))
                    except Lost:
                        pass            # the connection is gone already
                self._lose(f"protocol error: {e}")
            except Lost as e:
                self._lose(str(e))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                self._lose(f"receive: {e}")
            nursery.cancel_scope.cancel()

    def _dispatch(self, pdu: T.Pdu, nursery: trio.Nursery) -> None:
        kind = type(pdu)
        if kind is T.CapsuleResp:
            cpl = Completion.decode(pdu.cqe)
            cmd = self._take(cpl.cid)
            if cmd is not None:
                data = bytes(cmd.buf) if cmd.buf is not None else bytes(cmd.req.data_in_len)
                cmd.batch.land(cmd.index, from_fields(Completion, (
                    cpl.status or cmd.status, cpl.dw0, cpl.dw1, cpl.sqhd, self.qid,
                    cmd.req.cmd.cid, data, b"")))
        elif kind is T.C2HData:
            cmd = self.cmds.get(pdu.cccid)
            if cmd is None:
                return                  # a command already answered (the association ended)
            size = cmd.req.data_in_len
            if pdu.offset + len(pdu.data) > size:
                raise T.ProtocolError(T.FES_DATA_RANGE, 0, f"C2HData for command {pdu.cccid} "
                                      "outside its buffer")
            if not pdu.digest_ok:           # the command fails, as Linux's host fails it
                log.warning("%s: data digest error on command %d", self.what, pdu.cccid)
                cmd.status = DATA_XFER_ERROR
            if len(pdu.data) == size and cmd.buf is None:
                data = pdu.data                         # the whole transfer in one PDU
            else:
                if cmd.buf is None:
                    cmd.buf = bytearray(size)
                cmd.buf[pdu.offset:pdu.offset + len(pdu.data)] = pdu.data
                data = cmd.buf
            if pdu.success and pdu.last:
                self._take(pdu.cccid)
                cmd.batch.land(cmd.index, from_fields(Completion, (
                    cmd.status, 0, 0, 0, self.qid, cmd.req.cmd.cid, bytes(data), b"")))
            elif data is pdu.data:
                cmd.buf = bytearray(data)               # kept for the response capsule
        elif kind is T.R2TPdu:
            cmd = self.cmds.get(pdu.cccid)
            if cmd is None:
                return
            if pdu.offset + pdu.length > len(cmd.req.data_out):
                raise T.ProtocolError(T.FES_DATA_RANGE, 0, f"R2T for command {pdu.cccid} "
                                      "outside its data")
            nursery.start_soon(self._answer_r2t, cmd, pdu)
        elif kind is T.TermReq:
            raise Lost(f"{self.what}: the target ended the connection (FES {pdu.fes:#x})")

    async def _answer_r2t(self, cmd: _Cmd, r2t: T.R2TPdu) -> None:
        data = memoryview(cmd.req.data_out)
        end = r2t.offset + r2t.length
        parts = []
        for off in range(r2t.offset, end, self.maxh2cdata):
            chunk = bytes(data[off:min(off + self.maxh2cdata, end)])
            parts.append(self.codec.send(T.H2CData(r2t.cccid, r2t.ttag, off, chunk,
                                                   off + len(chunk) == end)))
        try:
            await self._send(b"".join(parts))
        except Lost:
            pass

    def _take(self, cid: int) -> _Cmd | None:
        cmd = self.cmds.pop(cid, None)
        if cmd is not None:
            self.free.append(cid)
            self.room.set()
            self.room = trio.Event()
        return cmd

    # ------------------------------------------------------------------ ending

    def _lose(self, why: str, quiet: bool = False) -> None:
        if self.lost is None:
            self.lost = Lost(f"{self.what}: {why}")
            if not quiet:
                log.warning("%s", self.lost)
            self.room.set()
            self.on_lost(self)

    def abandon(self, cid: int) -> None:
        """Forget a command the controller no longer has (after a reset)."""
        self._take(cid)

    def outstanding(self, batch: Batch) -> list[int]:
        return [cid for cid, c in self.cmds.items() if c.batch is batch]

    async def aclose(self) -> None:
        self._lose("closed", quiet=True)
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
