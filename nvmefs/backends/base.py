"""The one async Controller interface every backend implements (DESIGN §6).

A non-zero NVMe status is a returned `Completion`; only transport failures
raise (`TransportError` and subclasses). Every command is bounded by a
timeout: past it the backend recovers (abort, then reset) and the command is
answered with the host-aborted status (SCT 3h, SC 71h).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, NamedTuple, Sequence, TypeVar

import trio

from ..spec import cdq, commands, status
from ..spec import events as E
from ..spec.iocs import ns_csi, with_bases
from ..spec.logs import LOG_PAGES
from ..spec.render import decode
from ..spec.identify import (
    CNS_CTRL,
    CNS_NS,
    CNS_NS_ACTIVE_LIST,
    CNS_NS_DESC_LIST,
    IDENTIFY_SIZE,
    decode_id_ctrl,
    decode_ns_list,
)
from ..spec.commands import NSID_ALL
from ..spec.opcodes import ADMIN, IO, lookup
from ..spec.queue import Command, Completion
from .cdq import DELETED, LIVE, LOST, HostQueue, Memory
from .errors import ControllerGone, TransportError, Unsupported
from .events import EventLog

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = {ADMIN: 60.0, IO: 30.0}     # seconds, as Linux's admin_timeout/io_timeout
MAX_TIMEOUT = 3600.0
RESET_TIMEOUT = 30.0
RETRY_WINDOW = 30.0     # seconds a read of the tree waits for a resetting controller
RETRY_PAUSE = 0.05      # seconds between tries
AERS = 4                # Asynchronous Event Requests kept outstanding, at most AERL + 1 (§5.2)


SPREAD = 32             # fewest commands of a batch worth an I/O queue of their own

Q = TypeVar("Q")


def spread(n: int, queues: Sequence[Q], first: int) -> list[tuple[Q, int, int]]:
    """(queue, start, end) runs of a batch of `n` commands over `queues`: contiguous,
    SPREAD or more each, from queue `first` (modulo) on. For backends with several
    I/O queues of their own (vfio, tcp)."""
    per = max(SPREAD, -(-n // len(queues)))
    return [(queues[(first + i) % len(queues)], start, min(start + per, n))
            for i, start in enumerate(range(0, n, per))]


class Request(NamedTuple):
    """One command for a queue: data goes out (host to controller) or comes in, and
    so does its separate metadata (the buffer MPTR points to; extended-LBA metadata is
    part of the data)."""
    queue: str                      # ADMIN or IO
    cmd: Command
    data_out: bytes = b""
    data_in_len: int = 0
    timeout: float | None = None    # seconds; None: the queue's default
    metadata_out: bytes = b""
    metadata_in_len: int = 0


@dataclass
class Statistics:
    submitted: int = 0
    completed: int = 0
    errors: int = 0                 # completions with a non-zero status
    timeouts: int = 0
    resets: int = 0
    transport_errors: int = 0
    in_flight: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Controller(ABC):
    """One NVMe controller. Subclasses implement `_execute` and the lifetime hooks."""

    backend = "?"
    # nvmefs owns the admin queue (sim, vfio): it keeps Asynchronous Event Requests
    # outstanding and records what they report in `events`
    keeps_events = False
    # seconds between looks at a Controller Data Queue a reader waits on, where the
    # controller's Tail Pointer Trigger event cannot be relied on; None: it can
    cdq_poll: float | None = None
    # why this backend cannot carry a separate metadata buffer (Request.metadata_out,
    # metadata_in_len; passthru refuses such commands with it); "": it can
    metadata_refusal = "this backend does not carry separate metadata buffers"

    def __init__(self, uri: str):
        self.uri = uri
        self.name = ""                  # the directory name the mount gives it (nvme0 ...)
        self.generation = 0             # bumped by every refresh: caches compare it
        self.id_ctrl_raw = b""
        self.id_ctrl: dict[str, Any] = {}
        self.nsids: list[int] = []
        self._id_ns: dict[int, bytes] = {}
        self.csis: dict[int, int | None] = {}     # NSID -> I/O Command Set, None: not given
        self.state = "new"
        self._stats = Statistics()
        self.events = EventLog()
        self.cdqs: dict[str, HostQueue] = {}
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ backend hooks

    @abstractmethod
    async def _execute(self, req: Request) -> Completion:
        """Carry one command and return its completion. May be cancelled (timeout):
        then the backend must keep the command's buffers valid until it is gone."""

    def _begin(self, req: Request) -> Completion | Awaitable[Completion]:
        """Start one command: its Completion when it completed at once (a backend
        whose commands can, such as the sim's, says so here), else an awaitable
        of it, which `submit_batch` awaits under the command's deadline."""
        return self._execute(req)

    async def _start(self, nursery: trio.Nursery) -> None:
        """Open the device; called once by `start`. Background tasks (completion
        reapers) go in `nursery`, started with `nursery.start` so that they are
        running when this returns."""

    async def _abort(self, req: Request) -> bool:
        """Abort a timed-out command; True if the controller confirmed it."""
        return False

    async def _reset(self) -> None:
        """Controller level reset; outstanding commands end."""
        raise Unsupported(f"{self.backend}: reset is not supported")

    async def aclose(self) -> None:
        self.state = "closed"
        for q in self.cdqs.values():
            q.end(DELETED)

    @property
    def preferred_name(self) -> str | None:
        """The name the system already knows the controller by (Linux: nvmeX), if any."""
        return None

    def info(self) -> dict[str, str]:
        """Backend, address and transport lines for `info`."""
        return {"backend": self.backend, "address": self.uri, "transport": self.backend}

    def namespace_info(self, nsid: int) -> dict[str, str]:
        """Backend lines for ns/N/info (Linux: the node its I/O goes through)."""
        return {}

    @property
    def max_transfer(self) -> int:
        """Largest data transfer in bytes (MDTS in units of the 4 KiB minimum page); 0: none."""
        mdts = self.id_ctrl.get("mdts", 0)
        return 4096 << mdts if mdts else 0

    # ------------------------------------------------------------------ commands

    async def start(self, nursery: trio.Nursery) -> "Controller":
        """Open and identify the controller; its background tasks live in `nursery`
        (which must outlive the controller: close it with `aclose` first)."""
        self._nursery = nursery
        await self._start(nursery)
        self.state = "live"
        await self.refresh()
        if self.keeps_events:
            await self._enable_events()
            for _ in range(min(AERS, self.id_ctrl["aerl"] + 1)):
                nursery.start_soon(self._serve_events)
        return self

    @staticmethod
    def timeout_of(req: Request) -> float:
        """The command's timeout in seconds: its own, or its queue's default."""
        return DEFAULT_TIMEOUT[req.queue] if req.timeout is None else req.timeout

    def deadline(self, req: Request) -> float:
        """When `req` times out if sent now."""
        return trio.current_time() + self.timeout_of(req)

    def batch_deadline(self, reqs: Sequence[Request]) -> float:
        """When the last of `reqs` times out if they are sent now together."""
        kinds = {(r.queue, r.timeout) for r in reqs}      # one, in a batch of one kind
        return trio.current_time() + max(DEFAULT_TIMEOUT[q] if t is None else t for q, t in kinds)

    async def submit(self, req: Request) -> Completion:
        """Carry one command, bounded by its timeout."""
        return (await self.submit_batch([req]))[0]

    async def submit_batch(self, reqs: Sequence[Request]) -> list[Completion]:
        """Carry many commands; completions in request order.

        The commands are carried in turn. One that completes at once (`_begin`)
        costs no cancel scope, deadline or task: nothing can time it out. One
        that has to wait is awaited under its own deadline (its timeout counts
        from when it is carried); past it, it is aborted (or the controller
        reset) and answered host-aborted, and the rest still run. The batch is
        one checkpoint, whatever its size. A transport failure fails the batch:
        it is raised, and the commands after it are not carried."""
        await trio.lowlevel.checkpoint()
        stats = self._stats
        stats.submitted += len(reqs)
        out: list[Completion] = []
        errors = 0
        try:
            for req in reqs:
                cpl = self._begin(req)
                if cpl.__class__ is not Completion:
                    stats.in_flight += 1
                    try:
                        cpl = await self._wait(req, cpl)
                    finally:
                        stats.in_flight -= 1
                if cpl.status & status.CODE_MASK:
                    errors += 1
                out.append(cpl)
        except TransportError:
            stats.transport_errors += 1
            raise
        finally:
            stats.completed += len(out)
            stats.errors += errors
        return out

    async def _wait(self, req: Request, started: Awaitable[Completion]) -> Completion:
        """The completion of a started command, or host-aborted past its deadline."""
        with trio.move_on_at(self.deadline(req)):
            return await started
        return await self._timed_out(req)

    async def _timed_out(self, req: Request) -> Completion:
        self._stats.timeouts += 1
        log.warning("%s: %s opcode %#04x timed out; aborting", self.uri, req.queue, req.cmd.opcode)
        with trio.move_on_after(RESET_TIMEOUT):
            if not await self._abort(req):
                await self.reset()
        return Completion(status=status.HOST_ABORTED, cid=req.cmd.cid)

    async def admin(self, cmd: Command, data_out: bytes = b"", data_in_len: int = 0,
                    timeout: float | None = None) -> Completion:
        return await self._retrying(Request(ADMIN, cmd, data_out, data_in_len, timeout))

    async def io(self, cmd: Command, data_out: bytes = b"", data_in_len: int = 0,
                 timeout: float | None = None, metadata_out: bytes = b"",
                 metadata_in_len: int = 0) -> Completion:
        return await self._retrying(Request(IO, cmd, data_out, data_in_len, timeout,
                                            metadata_out, metadata_in_len))

    async def _retrying(self, req: Request) -> Completion:
        """The daemon's own commands (the tree's reads, events, queues): one the host's
        path did not carry through (HOST_TRANSIENT before its own timeout: a reset in
        its way) is sent again once the controller serves, if it has no side effects,
        for up to RETRY_WINDOW seconds. One that timed out is not: that took its time
        already. Passthru requests are never retried: their callers see every status."""
        row = lookup(req.queue, req.cmd.opcode, self.csi(req.cmd.nsid) if req.queue == IO else 0)
        if row is None or not row.read_only:
            return await self.submit(req)
        deadline = trio.current_time() + RETRY_WINDOW
        while True:
            start = trio.current_time()
            cpl = await self.submit(req)
            now = trio.current_time()
            if status.code(cpl.status) not in status.HOST_TRANSIENT or now >= deadline or \
                    now - start >= self.timeout_of(req):
                return cpl
            with trio.move_on_at(deadline):
                await trio.sleep(RETRY_PAUSE)
                await self._wait_serving()

    async def reset(self) -> None:
        self.state = "resetting"
        self._stats.resets += 1
        try:
            await self._reset()
        except TransportError:
            self.state = "failed"
            raise
        self.state = "live"
        for q in self.cdqs.values():
            q.end(LOST)                 # a reset deletes every queue (TP4159)
        await self.refresh()
        if self.keeps_events:
            await self._enable_events()     # features are back to their defaults

    def statistics(self) -> Statistics:
        """The counters (held Asynchronous Event Requests are not commands here)."""
        self._stats.extra["events"] = self.events.count
        return self._stats

    # ------------------------------------------------------------------ asynchronous events

    async def _enable_events(self) -> None:
        """Asynchronous Event Configuration: every critical warning and the notices
        the controller says it sends (OAES)."""
        cdw11 = E.AEC_SMART_ALL | self.id_ctrl["oaes"] & E.OAES_NOTICES
        cpl = await self.admin(commands.set_features(commands.FID_ASYNC_EVENT, cdw11))
        if not cpl.ok:
            log.info("%s: Asynchronous Event Configuration refused: %s", self.uri,
                     status.describe(cpl.status).name)

    async def _wait_serving(self) -> None:
        """Until commands may be sent (a backend that resets waits for the reset)."""
        await trio.lowlevel.checkpoint()

    async def _serve_events(self) -> None:
        """One Asynchronous Event Request kept outstanding (§5.2), for the mount's life."""
        while True:
            await self._wait_serving()
            try:
                cpl = await self._held(commands.command(commands.OP_ASYNC_EVENT))
            except ControllerGone:
                return
            except TransportError:          # fatal until a reset: look again later
                await trio.sleep(RESET_TIMEOUT / 10)
                continue
            if status.code(cpl.status) == status.HOST_ABORTED:
                continue                    # a reset ended it
            if not cpl.ok:
                return                      # Asynchronous Event Request Limit Exceeded
            await self.publish_event({"source": "aer", **E.decode_aen(cpl.dw0, cpl.dw1)},
                                     cpl.dw0)

    def _explain(self, lid: int, data: bytes) -> Any:
        """The decoded page; None where the controller's bytes do not decode (logged:
        a controller's data never ends the mount)."""
        kind = LOG_PAGES[lid].kind if lid in LOG_PAGES else None
        try:
            return decode(kind, data, {"name": self.name}) if kind else None
        except Exception:               # noqa: BLE001: any decoder failure
            log.exception("%s: log page %#04x of an event does not decode", self.uri, lid)
            return None

    async def _held(self, cmd: Command) -> Completion:
        """An admin command the controller answers when it has news: no timeout, not
        counted in `statistics`."""
        started = self._begin(Request(ADMIN, cmd, timeout=math.inf))
        return started if started.__class__ is Completion else await started

    async def publish_event(self, record: dict[str, Any], dw0: int | None = None) -> None:
        """Record an event; one an Asynchronous Event Request reported (its DW0) with
        the log page that explains it, read with RAE clear (which lets the controller
        report its type again)."""
        cdqid = record.get("cdqid")
        for q in self.cdqs.values():
            if q.cdqid == cdqid:
                q.triggered()
        explain = None if dw0 is None else E.explaining_log(dw0)
        if explain is not None:
            lid, length = explain
            try:
                page = await self.get_log(lid, length, rae=False)
            except TransportError as e:
                log.warning("%s: log page %#04x of an event: %s", self.uri, lid, e)
            else:
                decoded = self._explain(lid, page.data) if page.ok and \
                    lid in E.EXPLAINING_LOGS else None
                if decoded is not None:
                    record["log"] = decoded
        log.info("%s: event %s %s", self.uri, record["type_name"], record.get("info_name", ""))
        self.events.publish(record)
        if dw0 is not None and E.aen(dw0)[:2] == E.NAMESPACES_CHANGED:
            await self._namespaces_changed()

    async def _namespaces_changed(self) -> None:
        """The controller's namespaces changed (its notice, §5.2.1): read them again
        (the backend's own path may have its own way: Linux's uevents)."""
        try:
            await self.refresh()
        except TransportError as e:
            log.warning("%s: namespaces not read again: %s", self.uri, e)

    # ------------------------------------------------------------------ Controller Data Queues

    def _cdq_memory(self, size: int) -> Memory:
        """Zeroed memory the controller can write, for a queue of `size` bytes."""
        raise Unsupported(f"{self.backend}: Controller Data Queues need memory the "
                          "controller writes at any time, which this backend cannot give")

    def cdq_counts(self, cdqid: int) -> dict[str, int]:
        """What the controller side knows of a queue (the sim: posted, lost)."""
        return {}

    async def cdq_create(self, name: str, entries: int, cntlid: int,
                         qt: int = cdq.QT_UDMQ) -> tuple[Completion, HostQueue | None]:
        """Create a queue of `entries` entries (Controller Data Queue, SEL create);
        the queue, or None with the refusing completion."""
        memory = self._cdq_memory(entries * cdq.ENTRY_SIZE)
        with trio.CancelScope(shield=True):     # the controller must not keep memory we free
            try:
                cpl = await self.admin(cdq.create(memory.iova, entries * cdq.ENTRY_SIZE,
                                                  cntlid, qt))
            except BaseException:
                memory.release()
                raise
            if not cpl.ok:
                memory.release()
                return cpl, None
            q = self.cdqs[name] = HostQueue(self, name, cdq.created_id(cpl.dw0), entries,
                                             memory, cntlid, self.cdq_poll)
        if self.cdq_poll:
            self._nursery.start_soon(q.watch)
        return cpl, q

    async def cdq_delete(self, q: HostQueue) -> Completion:
        """Delete a queue; its memory goes back once the controller let go of it."""
        cpl = Completion()
        if q.state == LIVE:
            with trio.CancelScope(shield=True):
                cpl = await self.admin(cdq.delete(q.cdqid))
            if not cpl.ok and status.code(cpl.status) != status.code(status.INVALID_CDQ):
                return cpl
            q.end(DELETED)
        self.cdqs.pop(q.name, None)
        return cpl

    async def cdq_track(self, q: HostQueue, start: bool) -> Completion:
        """Track Send: log user data changes into `q`, or stop."""
        cpl = await self.admin(cdq.track_send(q.cdqid, start))
        if cpl.ok:
            q.tracking = start
        return cpl

    # ------------------------------------------------------------------ helpers built on admin()

    async def refresh(self) -> None:
        """Re-read Identify Controller, the active namespace list and each namespace's
        I/O Command Set (after reset or a namespace change)."""
        cpl = await self.admin(commands.identify(CNS_CTRL), data_in_len=IDENTIFY_SIZE)
        if not cpl.ok:
            raise TransportError(f"{self.uri}: Identify Controller failed: "
                                 f"{status.describe(cpl.status).name}")
        self.id_ctrl_raw = cpl.data
        self.id_ctrl = decode_id_ctrl(cpl.data)
        self._id_ns.clear()
        self.generation += 1
        cpl = await self.admin(commands.identify(CNS_NS_ACTIVE_LIST), data_in_len=IDENTIFY_SIZE)
        if cpl.ok:
            self.nsids = decode_ns_list(cpl.data)
            self.csis = {nsid: await self._read_csi(nsid) for nsid in self.nsids}
        else:   # controllers before NVMe 1.1 have no active list: every NSID up to NN
            self.nsids = list(range(1, self.id_ctrl["nn"] + 1))
            self.csis = {}          # nor descriptor lists (1.3): NVM namespaces

    async def _read_csi(self, nsid: int) -> int | None:
        """The namespace's Command Set Identifier (CNS 03h descriptor NIDT 04h); None
        where the controller gives none (before NVMe 2.0: then it is NVM)."""
        cpl = await self.admin(commands.identify(CNS_NS_DESC_LIST, nsid=nsid),
                               data_in_len=IDENTIFY_SIZE)
        return ns_csi(cpl.data) if cpl.ok else None

    def csi(self, nsid: int) -> int:
        """The I/O Command Set of an active namespace (0, NVM, where not given), as of
        the last `refresh`."""
        return self.csis.get(nsid) or commands.CSI_NVM

    def command_sets(self) -> list[int]:
        """The I/O Command Sets the namespaces are of, with those they extend (ZNS:
        NVM); none where the controller names no command set (before NVMe 2.0)."""
        return with_bases(csi for csi in self.csis.values() if csi is not None)

    async def identify_ns(self, nsid: int) -> Completion:
        """Identify Namespace, cached until the next `refresh`."""
        if nsid in self._id_ns:
            return Completion(data=self._id_ns[nsid])
        cpl = await self.admin(commands.identify(CNS_NS, nsid=nsid), data_in_len=IDENTIFY_SIZE)
        if cpl.ok:
            self._id_ns[nsid] = cpl.data
        return cpl

    async def get_log(self, lid: int, length: int, offset: int = 0, nsid: int = NSID_ALL,
                      lsp: int = 0, lsi: int = 0, rae: bool = True, csi: int = 0) -> Completion:
        """Get Log Page split into MDTS-sized pieces (each with the same LSP, so an
        action such as telemetry "create" belongs in a separate header read);
        the first failure is returned."""
        chunk = self.max_transfer or length
        data = bytearray()
        cpl = Completion()
        while len(data) < length:
            n = min(chunk, length - len(data))
            cpl = await self.admin(commands.get_log_page(lid, n, offset + len(data), nsid, lsp, lsi,
                                                         rae, csi), data_in_len=n)
            if not cpl.ok:
                return cpl
            data += cpl.data
        return cpl._replace(data=bytes(data))

    async def get_feature(self, fid: int, sel: int = 0, nsid: int = 0, cdw11: int = 0,
                          data_len: int = 0) -> Completion:
        return await self.admin(commands.get_features(fid, sel, nsid, cdw11), data_in_len=data_len)
