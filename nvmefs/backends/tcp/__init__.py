"""The `tcp` backend: an NVMe/TCP host in trio (DESIGN §6), so a remote controller
looks like a local one.

  tcp://HOST[:PORT]/SUBNQN[?OPTIONS]    PORT 4420 by default; SUBNQN the subsystem
OPTIONS (`&`-separated): queues=N I/O queues (1..64, default 4), depth=N entries per
queue (2..1024, default 128), digest=header,data (or none, the default), kato=MS Keep
Alive Timeout (0..3600000, default 5000; Keep Alive goes out every KATO/2).

An association (§3.3 of NVMe over Fabrics 1.1): the admin queue's connection,
ICReq/ICResp, Connect (dynamic controller ID), CC.EN by Property Set and CSTS.RDY by
Property Get (bounded by CAP.TO), Identify, Set Features Number of Queues, then one
connection and Connect per I/O queue. A lost connection (or a command past its
deadline that Abort does not end) ends the association: every command out is
answered host-aborted, and the host reconnects with a bounded backoff, refusing a
target whose subsystem NQN changed. Unmount shuts the controller down (CC.SHN) and
closes the connections, as Linux's host does (nvmet of Linux 6.1 refuses the Fabrics
Disconnect command, so it is not sent).
"""

from __future__ import annotations

import errno
import logging
from typing import Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import crc32c
import trio

from ...spec import commands as C
from ...spec import fabrics as F
from ...spec import registers as R
from ...spec import status
from ...spec import tcp as T
from ...spec.discovery import DISCOVERY_NQN
from ...spec.identify import CNS_CTRL, IDENTIFY_SIZE, decode_id_ctrl
from ...spec.opcodes import ADMIN
from ...spec.passthru import MAX_DATA_LEN
from ...spec.queue import Command, Completion
from ..base import Controller, Request, spread
from ..errors import ControllerFatal, ControllerGone, TransportError, Unsupported
from .host import identity
from .queue import Batch, Lost, TcpQueue

log = logging.getLogger(__name__)

PORT = 4420
ADMIN_ENTRIES = 32
ADMIN_IN_CAPSULE = 8192             # NVMe/TCP: admin capsules take 8 KiB of data
CONNECT_TIMEOUT = 10.0              # seconds for TCP connect, ICResp and Connect
BACKOFF = (0.5, 30.0)               # seconds: first delay between reconnects, and the most
CTRL_LOSS_TMO = 600.0               # seconds without a controller before giving up
SHUTDOWN_TIMEOUT = 5.0
MAX_PDU_DATA = MAX_DATA_LEN         # nvmet sends a read's data in one C2HData PDU, however large
OPTIONS = {"queues": (1, 64, 4), "depth": (2, 1024, 128), "kato": (0, 3_600_000, 5000)}
DIGESTS = {"header": T.DGST_HEADER, "data": T.DGST_DATA, "none": 0}


def parse_uri(uri: str) -> tuple[str, int, str, dict[str, int], int]:
    """(host, port, subsystem NQN, options, digests) of a tcp URI."""
    u = urlsplit(uri)
    nqn = unquote(u.path.lstrip("/"))
    try:
        port = u.port or PORT
    except ValueError:
        raise ValueError(f"{uri!r}: the port is not a number") from None
    if u.scheme != "tcp" or not u.hostname or not nqn:
        raise ValueError(f"{uri!r}: expected tcp://HOST[:PORT]/SUBNQN[?options]")
    opts = {k: v[2] for k, v in OPTIONS.items()}
    digests = 0
    for key, value in parse_qsl(u.query, keep_blank_values=True):
        if key == "digest":
            for word in filter(None, value.split(",")):
                if word not in DIGESTS:
                    raise ValueError(f"{uri!r}: digest= takes header, data or none")
                digests |= DIGESTS[word]
            continue
        if key not in OPTIONS:
            raise ValueError(f"{uri!r}: unknown option {key!r}; known: queues, depth, digest, "
                             "kato")
        lo, hi, _ = OPTIONS[key]
        if not value.isdigit() or not lo <= int(value) <= hi:
            raise ValueError(f"{uri!r}: {key} must be {lo}..{hi}")
        opts[key] = int(value)
    return u.hostname, port, nqn, opts, digests


class TcpController(Controller):
    backend = "tcp"
    # NVMe over Fabrics has no MPTR: a capsule carries one data buffer (SGL), so a
    # namespace formatted with separate metadata cannot be read or written; extended
    # LBAs (metadata in the data) are data like any other
    metadata_refusal = ("NVMe/TCP carries no separate metadata buffer (a capsule has no "
                        "MPTR); only extended-LBA formats (MSET 1) move metadata over it")

    def __init__(self, uri: str, index: int = 0):
        super().__init__(uri)
        self.host, self.port, self.subnqn, opts, self.digests = parse_uri(uri)
        self.want_queues, self.depth, self.kato = opts["queues"], opts["depth"], opts["kato"]
        self.hostnqn, self.hostid = identity()
        self.admin_q: TcpQueue | None = None
        self.io_q: list[TcpQueue] = []
        self.cntlid = 0
        self.cap = 0
        self.seen_subnqn = ""               # Identify's SUBNQN at the first association
        self._next_q = 0
        self._live = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._reconnecting = False
        self._closing = False
        self.counts = dict.fromkeys(("reconnects", "connections_lost", "keep_alives"), 0)

    @property
    def queues(self) -> list[TcpQueue]:
        """The admin queue and the I/O queues there are."""
        return [q for q in [self.admin_q, *self.io_q] if q is not None]

    @property
    def discovery(self) -> bool:
        return self.subnqn == DISCOVERY_NQN

    def info(self) -> dict[str, str]:
        return {"backend": "tcp", "address": f"{self.host}:{self.port}", "transport": "tcp",
                "subnqn": self.subnqn, "hostnqn": self.hostnqn, "cntlid": str(self.cntlid),
                "queues": f"{len(self.io_q)} x {self.io_q[0].entries if self.io_q else 0}",
                "digest": ",".join(k for k, v in DIGESTS.items() if v & self.digests) or "none"}

    # ------------------------------------------------------------------ association

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self._associate()
        if self.kato:
            nursery.start_soon(self._keep_alive)

    async def _connect_queue(self, qid: int, entries: int, in_capsule: int) -> TcpQueue:
        what = f"{self.uri} queue {qid}"
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(self.host, self.port)
                codec = T.Connection("host", crc32c.crc32c, max_data=MAX_PDU_DATA)
                await stream.send_all(codec.send(T.ICReq(dgst=self.digests)))
                resp = T.NEED_DATA
                while resp is T.NEED_DATA:
                    data = await stream.receive_some(4096)
                    if not data:
                        raise Lost(f"{what}: the target closed the connection during ICReq")
                    codec.receive_data(data)
                    resp = codec.next_pdu()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, T.ProtocolError,
                Lost) as e:
            raise TransportError(f"{what}: connecting to {self.host}:{self.port}: {e}",
                                 errno.ECONNREFUSED) from None
        if not isinstance(resp, T.ICResp) or resp.dgst & ~self.digests:
            await stream.aclose()
            raise TransportError(f"{what}: the target answered ICReq with {resp}")
        codec.negotiated(resp)
        q = TcpQueue(qid, entries, stream, codec, in_capsule, resp.maxh2cdata or 1 << 20, what)
        q.on_lost = self._queue_lost
        await self._nursery.start(q.run)
        data = F.ConnectData(self.hostid, self.subnqn, self.hostnqn,
                             self.cntlid if qid else F.DYNAMIC_CNTLID).encode()
        # an I/O queue asks for SUCCESS C2HData: a read is one PDU, not two
        cmd = F.connect(qid, entries, 0, F.CATTR_DISABLE_SQ_FLOW) if qid else \
            F.connect(0, entries, self.kato)
        cpl = await self._on(q, Request(ADMIN, cmd, data), CONNECT_TIMEOUT)
        if not cpl.ok:
            await q.aclose()
            raise TransportError(f"{what}: Connect refused: {status.describe(cpl.status).name}"
                                 f" (is {self.hostnqn} allowed on {self.subnqn}?)", errno.EACCES)
        if not qid:
            self.cntlid = cpl.dw0 & 0xFFFF
        return q

    async def _on(self, q: TcpQueue, req: Request, timeout: float) -> Completion:
        """One command on queue `q` (the queue's own Connect, or the association's
        bring-up), bounded by `timeout`."""
        batch = Batch(1)
        with trio.move_on_after(timeout):
            await q.submit([req], batch)
            await batch.done.wait()
        if batch.answers[0] is None:
            raise TransportError(f"{q.what}: opcode {req.cmd.opcode:#04x} got no answer in "
                                 f"{timeout:g} s", errno.ETIMEDOUT)
        return batch.answers[0]

    async def _property(self, cmd: Command) -> int:
        cpl = await self._on(self.admin_q, Request(ADMIN, cmd), CONNECT_TIMEOUT)
        if not cpl.ok:
            raise TransportError(f"{self.uri}: property access failed: "
                                 f"{status.describe(cpl.status).name}")
        return cpl.dw0 | cpl.dw1 << 32

    async def _associate(self) -> None:
        """Connect the admin queue, enable the controller, connect the I/O queues."""
        self.cntlid = 0
        self.admin_q = await self._connect_queue(0, ADMIN_ENTRIES, ADMIN_IN_CAPSULE)
        self.cap = await self._property(F.property_get(R.CAP, 8))
        await self._property(F.property_set(R.CC, R.CC_EN.put(1) | R.CC_IOSQES.put(6) |
                                            R.CC_IOCQES.put(4)))
        with trio.move_on_after(R.timeout_ms(self.cap) / 1000):
            while True:
                csts = await self._property(F.property_get(R.CSTS, 4))
                if R.CSTS_CFS.get(csts):
                    raise ControllerFatal(f"{self.uri}: controller fatal status while enabling")
                if R.CSTS_RDY.get(csts):
                    break
                await trio.sleep(0.01)
        if not R.CSTS_RDY.get(csts):
            raise ControllerFatal(f"{self.uri}: CSTS.RDY did not come up")
        cpl = await self._on(self.admin_q, Request(ADMIN, C.identify(CNS_CTRL),
                                                   data_in_len=IDENTIFY_SIZE), CONNECT_TIMEOUT)
        if not cpl.ok:
            raise TransportError(f"{self.uri}: Identify failed")
        idc = decode_id_ctrl(cpl.data)
        subnqn = idc["subnqn"]
        if self.seen_subnqn not in ("", subnqn):
            raise ControllerGone(f"{self.uri}: the controller's subsystem was "
                                 f"{self.seen_subnqn!r} and is now {subnqn!r}; not reconnecting")
        self.seen_subnqn = subnqn
        self.io_q = []
        if not self.discovery:
            ioccsz = idc.get("ioccsz", 4) * 16 - 64
            cpl = await self._on(self.admin_q, Request(ADMIN, C.number_of_queues(
                self.want_queues)), CONNECT_TIMEOUT)
            count = min(self.want_queues, C.queues_granted(cpl.dw0)) if cpl.ok else 1
            entries = min(self.depth, R.CAP_MQES.get(self.cap) + 1)
            for qid in range(1, count + 1):
                self.io_q.append(await self._connect_queue(qid, entries, max(ioccsz, 0)))
        self._live.set()

    def _queue_lost(self, q: TcpQueue) -> None:
        """A connection broke: answer what was out on every queue, reconnect."""
        if self._closing:
            return
        self.counts["connections_lost"] += 1
        self._live = trio.Event()
        self._abort_all()
        if not self._reconnecting:
            self._reconnecting = True
            self._nursery.start_soon(self._reconnect)

    async def _teardown(self) -> None:
        """Close every connection; none of them reports itself lost meanwhile (the
        target ends an association's other connections once one closes)."""
        queues, self.admin_q, self.io_q = self.queues, None, []
        for q in queues:
            q.on_lost = lambda q: None
        for q in queues:
            await q.aclose()

    async def _reconnect(self) -> None:
        """A new association, retried with a bounded backoff for up to CTRL_LOSS_TMO."""
        delay = BACKOFF[0]
        give_up = trio.current_time() + CTRL_LOSS_TMO
        try:
            while not self._closing:
                await self._teardown()
                try:
                    await self._associate()
                    self.counts["reconnects"] += 1
                    log.info("%s: reconnected", self.uri)
                    self.state = "live"
                    return
                except ControllerGone as e:
                    log.error("%s", e)
                    break
                except TransportError as e:
                    log.warning("%s: reconnect failed: %s; next try in %g s", self.uri, e, delay)
                if trio.current_time() + delay > give_up:
                    break
                self.state = "connecting"
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
            self.state = "failed"
            await self._teardown()
        finally:
            self._reconnecting = False

    async def _keep_alive(self) -> None:
        while True:
            await trio.sleep(self.kato / 2000)
            if self._live.is_set():
                try:
                    await self.admin(C.command(C.OP_KEEP_ALIVE), timeout=self.kato / 1000)
                    self.counts["keep_alives"] += 1
                except TransportError:
                    pass

    # ------------------------------------------------------------------ commands

    def _route(self, reqs: Sequence[Request]) -> list[tuple[TcpQueue, int, int]]:
        if reqs[0].queue == ADMIN:
            return [(self.admin_q, 0, len(reqs))]
        qs = self.io_q
        if not qs:
            raise TransportError(f"{self.uri}: no I/O queues (a discovery controller?)",
                                 errno.ENXIO)
        out = spread(len(reqs), qs, self._next_q)
        self._next_q += len(out)
        return out

    async def submit_batch(self, reqs: Sequence[Request]) -> list[Completion]:
        """The batch goes out as capsules, one send per queue, and is waited for once,
        bounded by its latest deadline; a batch of admin and I/O commands goes one
        command at a time."""
        if not reqs:
            await trio.lowlevel.checkpoint()
            return []
        if len({r.queue for r in reqs}) > 1:
            return [(await self.submit_batch([r]))[0] for r in reqs]
        if any(r.metadata_out or r.metadata_in_len for r in reqs):
            raise Unsupported(f"{self.uri}: {self.metadata_refusal}")
        stats = self._stats
        deadline = self.batch_deadline(reqs)
        stats.submitted += len(reqs)
        stats.in_flight += len(reqs)
        batch = Batch(len(reqs))
        routes: list[tuple[TcpQueue, int, int]] = []
        try:
            with trio.move_on_at(deadline):
                await self._wait_live()
                routes = self._route(reqs)
                for q, start, end in routes:
                    while start < end:
                        start += await q.submit(reqs[start:end], batch, start)
                await batch.done.wait()
            if not batch.done.is_set() and routes:     # (none: it never went out)
                await self._expire(batch, routes)
        except Lost:
            pass                # the queue-lost handler answered what went out
        finally:
            stats.in_flight -= len(reqs)
        out = [a if a is not None else Completion(status.HOST_ABORTED, cid=r.cmd.cid)
               for a, r in zip(batch.answers, reqs)]
        stats.completed += len(out)
        stats.errors += sum(1 for c in out if c.status & status.CODE_MASK)
        return out

    async def _wait_live(self) -> None:
        if self.state == "failed" or self._closing:
            raise ControllerGone(f"{self.uri}: the target is gone (reconnecting gave up)"
                                 if not self._closing else f"{self.uri}: closed")
        await self._live.wait()

    async def _expire(self, batch: Batch, routes) -> None:
        """Past the deadline: Abort each command still out; what that does not end
        ends with the association (a reset)."""
        late = [(q, cid) for q, _, _ in routes for cid in q.outstanding(batch)]
        self._stats.timeouts += len(late)
        log.warning("%s: %d command(s) timed out", self.uri, len(late))
        with trio.move_on_after(CONNECT_TIMEOUT):
            for q, cid in late:
                if q.qid and self.admin_q is not None:
                    await self._on(self.admin_q, Request(ADMIN, C.abort(q.qid, cid)), 1.0)
            await batch.done.wait()
        if not batch.done.is_set():
            await self.reset()

    async def _execute(self, req: Request) -> Completion:
        return (await self.submit_batch([req]))[0]

    async def _reset(self) -> None:
        """A new association (what a controller reset is over fabrics)."""
        self._live = trio.Event()
        self._abort_all()
        await self._teardown()
        await self._associate()

    def _abort_all(self) -> None:
        """Every command out on the association ends host-aborted (it is ending)."""
        for q in self.queues:
            for cid in list(q.cmds):
                cmd = q.cmds[cid]
                q.abandon(cid)
                cmd.batch.land(cmd.index, Completion(status.HOST_ABORTED, cid=cmd.req.cmd.cid))

    async def aclose(self) -> None:
        """CC.SHN normal shutdown, bounded, then the connections closed."""
        self._closing = True
        self._live = trio.Event()           # nothing new goes out (Keep Alive included)
        if self.admin_q is not None and self.admin_q.lost is None:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                try:
                    await self._property(F.property_set(R.CC, R.CC_EN.put(1) | R.CC_SHN.put(
                        R.SHN_NORMAL) | R.CC_IOSQES.put(6) | R.CC_IOCQES.put(4)))
                    while not R.CSTS_SHST.get(await self._property(F.property_get(
                            R.CSTS, 4))) == R.SHST_COMPLETE:
                        await trio.sleep(0.01)
                except TransportError as e:
                    log.warning("%s: shutdown: %s", self.uri, e)
        await self._teardown()
        await super().aclose()

    def statistics(self):
        stats = super().statistics()
        stats.extra.update(self.counts, queues=len(self.io_q),
                           bytes_sent=sum(q.sent for q in self.queues),
                           bytes_received=sum(q.received for q in self.queues))
        return stats

