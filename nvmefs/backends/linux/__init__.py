"""The `linux` backend: a controller the kernel's NVMe driver owns, through its
passthrough interfaces (DESIGN §6).

Admin commands go to /dev/nvmeX as io_uring NVME_URING_CMD_ADMIN (or, with
`?admin=ioctl`, as NVME_IOCTL_ADMIN64_CMD in worker threads); I/O commands go to
the namespace's /dev/ngXnY as NVME_URING_CMD_IO. All share one ring per
controller; a batch is queued with one io_uring_enter. The kernel enforces each
command's timeout itself (timeout_ms), aborting or resetting as it does for its
own commands.

URIs: /dev/nvmeX, linux:/dev/nvmeX, linux:nvmeX, optionally ?admin=ioctl.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from typing import NamedTuple, Sequence

import trio

from ...spec import cdq as Q
from ...spec import status
from ...spec.opcodes import ADMIN
from ...spec.queue import Completion
from ..base import RESET_TIMEOUT, Controller, Request
from ..errors import ControllerGone, TransportError, Unsupported
from .. import sysfs
from ..cdq import DELETED, HostQueue
from ..ffi import ffi, lib
from . import cdq as kernel_cdq
from .ring import Ring
from .uevents import UeventSocket

log = logging.getLogger(__name__)

ADMIN_THREADS = 4           # ioctl mode: admin commands in flight at once
POLL_STATE = 0.02           # seconds between looks at a resetting controller's state
NODES_POLL = 1.0            # seconds between looks at the controller's namespace nodes


def parse_uri(uri: str) -> tuple[str, str]:
    """(controller name, admin path) of a linux URI."""
    path, _, query = uri.removeprefix("linux:").partition("?")
    name = os.path.basename(path)
    if not sysfs.NAME.fullmatch(name):
        raise ValueError(f"{uri!r}: expected /dev/nvmeN (a controller, not a namespace)")
    admin = dict(p.partition("=")[::2] for p in query.split("&") if p).get("admin", "uring")
    if admin not in ("uring", "ioctl"):
        raise ValueError(f"{uri!r}: admin= must be uring or ioctl")
    return name, admin


def kernel_error(err: int, what: str) -> TransportError:
    """A negative result from the kernel, with what to do about it."""
    if err in (errno.ENODEV, errno.ENXIO):
        return ControllerGone(f"{what}: the controller is gone ({os.strerror(err)})")
    if err in (errno.EACCES, errno.EPERM):
        return TransportError(f"{what}: the kernel refused the command ({os.strerror(err)}); "
                              "passthrough needs root (CAP_SYS_ADMIN) or, from Linux 6.2, "
                              "read/write access to the device for some commands", errno.EACCES)
    return TransportError(f"{what}: {os.strerror(err)}", err)


def _timeout_ms(req: Request) -> int:
    """The command's timeout for the kernel to enforce."""
    return max(1, int(Controller.timeout_of(req) * 1000))


def _piece(n: int) -> int:
    return (n + 4095) & ~4095


def _buffers(reqs: Sequence[Request]) -> tuple[object, list[int], list[int]]:
    """One page-aligned buffer for the data and separate metadata of all `reqs` (each
    piece page aligned), holding what goes out; the offset of each one's data, then
    of each one's metadata."""
    offsets, meta, total = [], [], 0
    for req in reqs:
        offsets.append(total)
        total += _piece(len(req.data_out) or req.data_in_len)
    for req in reqs:
        meta.append(total)
        total += _piece(len(req.metadata_out) or req.metadata_in_len)
    buf = ffi.gc(lib.nvmefs_alloc(total), lib.nvmefs_free) if total else ffi.NULL
    for req, off, moff in zip(reqs, offsets, meta, strict=True):
        if req.data_out:
            ffi.memmove(buf + off, req.data_out, len(req.data_out))
        if req.metadata_out:
            ffi.memmove(buf + moff, req.metadata_out, len(req.metadata_out))
    return buf, offsets, meta


class Node(NamedTuple):
    """An open generic node: its own (via None) or a multipath head's (via: the
    kernel's path from this controller)."""
    nsid: int
    fd: int
    path: str
    via: sysfs.SysPath | None = None


def _open_node(path: str, via: sysfs.SysPath | None) -> Node | None:
    """Open a generic node and ask it its NSID; None (logged) if it cannot be, e.g.
    when it went away meanwhile: its namespace then has no node."""
    fd = -1
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        return Node(fcntl.ioctl(fd, lib.NVME_IOCTL_ID), fd, path, via)
    except OSError as e:
        log.warning("%s: %s", path, e.strerror)
        if fd >= 0:
            os.close(fd)
        return None


# The kernel's -errno that ends one command in flight, not the batch, and the status
# that is then its answer: the driver cancelled it, e.g. in a reset (6.1 drivers/nvme/
# host/ioctl.c: NVME_REQ_CANCELLED gives -EINTR), or its path failed it otherwise (seen:
# EFAULT for commands in flight while the controller resets; EAGAIN: the ring refused
# it). Any other -errno (the controller gone, a refusal of the command) fails the batch.
PER_COMMAND = {
    errno.EINTR: status.HOST_ABORTED, errno.ECANCELED: status.HOST_ABORTED,
    errno.EFAULT: status.HOST_PATH_ERROR, errno.EIO: status.HOST_PATH_ERROR,
    errno.EAGAIN: status.HOST_PATH_ERROR,
}


def completion(res: int, result: int, data: bytes, cid: int, what: str) -> Completion:
    """One decoder for ioctl and uring results: 0, a positive NVMe status, or -errno."""
    if res < 0:
        answer = PER_COMMAND.get(-res)
        if answer is None:
            raise kernel_error(-res, what)
        if answer != status.HOST_ABORTED:
            log.warning("%s: %s from the kernel: answered %s", what, errno.errorcode[-res],
                        status.describe(answer).name)
        return Completion(answer, cid=cid)
    return Completion(res & 0x7FFF, result & 0xFFFFFFFF, result >> 32, 0, 0, cid, data)


class LinuxController(Controller):
    backend = "linux"
    metadata_refusal = ""       # the kernel maps a separate metadata buffer (nvme_uring_cmd)
    cdq_poll = 0.005            # the kernel's CDQ file has no poll(): it is read this often

    def __init__(self, uri: str, index: int = 0):
        super().__init__(uri)
        self.sysname, self.admin_path = parse_uri(uri)
        self.sys = sysfs.controller(self.sysname)
        self.fd = -1
        self.nodes: dict[int, Node] = {}        # nsid -> its open generic node
        self.nodes_by_path: dict[str, Node] = {}
        self._nodes_changed = trio.Event()
        self.ring: Ring | None = None
        self._threads = trio.CapacityLimiter(ADMIN_THREADS)

    @property
    def preferred_name(self) -> str:
        return self.sysname

    def info(self) -> dict[str, str]:
        return {"backend": "linux", "address": self.sys.address or self.sys.dev,
                "transport": self.sys.transport, "device": self.sys.dev,
                "admin": self.admin_path, "subsystem": self.sys.subsystem,
                "path_state": self._kernel_state()}

    @property
    def max_transfer(self) -> int:
        mdts, kernel = super().max_transfer, self.sys.max_transfer_kernel()
        return min(x for x in (mdts, kernel) if x) if mdts or kernel else 0

    async def _start(self, nursery: trio.Nursery) -> None:
        try:
            self.fd = os.open(self.sys.dev, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise kernel_error(e.errno, e.filename or self.sys.dev) from None
        try:
            self._open_nodes()
            self.ring = Ring()
        except OSError as e:
            await self.aclose()
            raise TransportError(str(e), e.errno) from None
        except TransportError:
            await self.aclose()
            raise
        await nursery.start(self.ring.run)
        nursery.start_soon(self._watch_uevents)
        nursery.start_soon(self._follow_namespaces)

    # ------------------------------------------------------------------ namespace nodes

    def _open_nodes(self) -> None:
        """Open the generic node of each namespace this controller reaches: its own
        ngXnY where the kernel made one, else the multipath head's (backends.sysfs),
        whose I/O the kernel sends down a path of its choice. Nodes already open stay;
        those of namespaces gone are closed. Called at start and whenever the kernel's
        namespaces may have changed (uevents, refresh, an NSID with no node yet)."""
        try:
            self.sys = sysfs.controller(self.sysname)
        except FileNotFoundError as e:
            raise ControllerGone(f"{self.sysname}: the controller is gone ({e})") from None
        wanted = [(f"/dev/{ng}", None) for ng in self.sys.generic]
        wanted += [(f"/dev/{p.head}", p) for p in self.sys.paths]
        old, nodes = self.nodes_by_path, {}
        for path, via in wanted:
            node = old.get(path) or _open_node(path, via)
            if node is None:
                continue
            if node.nsid in nodes:          # its own node (listed first) over the head's
                if path not in old:
                    os.close(node.fd)
                continue
            nodes[node.nsid] = node._replace(via=via)
        keep = {n.path for n in nodes.values()}
        for path, node in old.items():
            if path not in keep:
                os.close(node.fd)
        self.nodes = nodes
        self.nodes_by_path = {n.path: n for n in nodes.values()}

    async def refresh(self) -> None:
        await super().refresh()
        self._open_nodes()

    def _node_names(self) -> frozenset[str]:
        return frozenset(n for n in os.listdir(sysfs.sysclass("nvme", self.sysname))
                         if n.startswith(("ng", "nvme")))

    async def _follow_namespaces(self) -> None:
        """The tree follows namespaces the kernel adds and removes (attached, detached,
        created, deleted, after a reset): its uevents tell of some, but not of a new
        path to a multipath head it already has, so the controller's sysfs directory is
        compared every NODES_POLL seconds too. A change reads the namespaces again."""
        seen = self._node_names()
        while True:
            with trio.move_on_after(NODES_POLL):
                await self._nodes_changed.wait()
            self._nodes_changed = trio.Event()
            try:
                now = self._node_names()
                if now != seen:
                    await self.refresh()
                    seen = now
            except (OSError, TransportError) as e:     # gone or resetting: look again later
                log.info("%s: namespaces not read again yet: %s", self.sysname, e)

    def namespace_info(self, nsid: int) -> dict[str, str]:
        node = self.nodes.get(nsid)
        if node is None:
            return {"io_path": "none: the kernel has no node for this namespace"}
        if node.via is None:
            return {"io_path": f"{self.sysname} ({node.path})"}
        out = {"io_path": f"multipath head {node.path}: the kernel picks the controller "
                          f"(iopolicy {self.sys.iopolicy or '?'}); this one's path is "
                          f"{node.via.disk}"}
        if node.via.ana_state:
            out["ana_state"] = node.via.ana_state
        return out

    # ------------------------------------------------------------------ events, CDQs

    async def _watch_uevents(self) -> None:
        """The kernel keeps the Asynchronous Event Requests: what it tells of them (and
        of namespaces coming and going) arrives as uevents (backends.linux.uevents).
        An event naming a log page gets it read with RAE clear, which the kernel does
        not do for SMART / Health events, so QEMU's controller can report them again."""
        try:
            sock = UeventSocket.open()
        except OSError as e:
            log.info("%s: no kernel uevents (%s): events will show none", self.sysname, e)
            return
        with sock:
            try:
                async for ctrl, record in sock.events():
                    if ctrl in (self.sysname, ""):
                        if record.get("type_name", "").startswith("namespace-"):
                            self._nodes_changed.set()
                        aen = record.get("aen")
                        await self.publish_event(record, None if aen is None else int(aen, 16))
            except OSError as e:
                log.warning("%s: kernel uevents ended (%s): events will show no more",
                            self.sysname, e)

    async def cdq_create(self, name: str, entries: int, cntlid: int,
                         qt: int = Q.QT_UDMQ) -> tuple[Completion, HostQueue | None]:
        """Through the RFC ioctl, where the kernel has it (backends.linux.cdq)."""
        try:
            res, cdqid, fd = await trio.to_thread.run_sync(kernel_cdq.create, self.fd, entries,
                                                           cntlid, qt)
        except OSError as e:
            if e.errno == errno.ENOTTY:
                raise Unsupported(kernel_cdq.unsupported_message(self.sysname)) from None
            raise kernel_error(e.errno, f"{self.sysname}: Controller Data Queue") from None
        if res:
            return Completion(res & 0x7FFF), None
        q = self.cdqs[name] = kernel_cdq.KernelQueue(self, name, cdqid, entries, fd, cntlid,
                                                     self.cdq_poll)
        self._nursery.start_soon(q.watch)
        return Completion(dw0=cdqid), q

    async def cdq_delete(self, q: HostQueue) -> Completion:
        """Closing the queue's file deletes it (the kernel sends the command)."""
        await trio.lowlevel.checkpoint()
        q.end(DELETED)
        self.cdqs.pop(q.name, None)
        return Completion()

    async def aclose(self) -> None:
        for fd in [self.fd, *(n.fd for n in self.nodes.values())]:
            if fd >= 0:
                os.close(fd)
        self.fd, self.nodes, self.nodes_by_path = -1, {}, {}
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        await super().aclose()

    # ------------------------------------------------------------------ commands

    def _route(self, req: Request) -> tuple[int, int]:
        """The file descriptor and uring cmd_op a command goes to."""
        if req.queue == ADMIN:
            return self.fd, lib.NVME_URING_CMD_ADMIN
        node = self.nodes.get(req.cmd.nsid)
        if node is None:        # a namespace the kernel added since: look again, once
            self._open_nodes()
            node = self.nodes.get(req.cmd.nsid)
            if node is None:
                raise TransportError(f"{self.sysname}: the kernel has no generic node "
                                     f"(/dev/ngXnY) for nsid {req.cmd.nsid}", errno.ENXIO)
        return node.fd, lib.NVME_URING_CMD_IO

    async def submit(self, req: Request) -> Completion:
        if req.queue == ADMIN and self.admin_path == "ioctl":
            return await super().submit(req)
        return (await self.submit_batch([req]))[0]

    async def _execute(self, req: Request) -> Completion:
        """Admin by NVME_IOCTL_ADMIN64_CMD in a worker thread (?admin=ioctl)."""
        buf, _, _ = _buffers([req])
        result = ffi.new("uint64_t *")
        res = await trio.to_thread.run_sync(
            lib.nvmefs_ioctl, self.fd, lib.NVME_IOCTL_ADMIN64_CMD, req.cmd.encode(), buf,
            len(req.data_out) or req.data_in_len, _timeout_ms(req), result,
            limiter=self._threads, abandon_on_cancel=True)
        data = bytes(ffi.buffer(buf, req.data_in_len)) if req.data_in_len else b""
        return completion(res, result[0], data, req.cmd.cid, self._what(req))

    def _what(self, req: Request) -> str:
        return f"{self.sysname}: {req.queue} opcode {req.cmd.opcode:#04x}"

    async def submit_batch(self, reqs: Sequence[Request]) -> list[Completion]:
        """The whole batch goes to the ring in one submission; its commands share one
        data buffer (page aligned pieces) and one wait, bounded by the latest
        deadline. Commands still out then are answered host-aborted (the driver
        aborts them with its own timeout, set to theirs)."""
        if self.admin_path == "ioctl" and any(r.queue == ADMIN for r in reqs):
            if all(r.queue == ADMIN for r in reqs):
                return await super().submit_batch(reqs)
            return [(await self.submit_batch([r]))[0] for r in reqs]    # each by its path
        n = len(reqs)
        buf, offsets, meta = _buffers(reqs)
        sqes = b"".join(r.cmd.encode() for r in reqs)
        sqe = ffi.from_buffer(sqes)
        creqs = ffi.new("struct nvmefs_req[]", n)
        for i, (req, off) in enumerate(zip(reqs, offsets, strict=True)):
            c = creqs[i]
            c.fd, c.cmd_op = self._route(req)
            c.sqe, c.timeout_ms = sqe + 64 * i, _timeout_ms(req)
            if len(req.data_out) or req.data_in_len:
                c.data, c.data_len = buf + off, len(req.data_out) or req.data_in_len
            if len(req.metadata_out) or req.metadata_in_len:
                c.metadata = buf + meta[i]
                c.metadata_len = len(req.metadata_out) or req.metadata_in_len
        deadline = self.batch_deadline(reqs)
        stats = self._stats
        stats.submitted += n
        stats.in_flight += n
        try:
            pending = await self.ring.submit(creqs, n, (buf, sqe, sqes))
            with trio.move_on_at(deadline):
                await pending.done.wait()
        finally:
            stats.in_flight -= n
        return self._completions(reqs, pending, buf, offsets, meta)

    def _completions(self, reqs: Sequence[Request], pending, buf, offsets,
                     meta) -> list[Completion]:
        out, failure = [], None
        for i, req in enumerate(reqs):
            slot = pending.slots[i]
            if slot.res == -errno.EINPROGRESS:          # past its deadline, still out
                self._stats.timeouts += 1
                out.append(Completion(status.HOST_ABORTED, cid=req.cmd.cid))
                continue
            data = bytes(ffi.buffer(buf + offsets[i], req.data_in_len)) if req.data_in_len else b""
            try:
                cpl = completion(slot.res, slot.result, data, req.cmd.cid, self._what(req))
                if req.metadata_in_len:
                    cpl = cpl._replace(metadata=bytes(ffi.buffer(buf + meta[i],
                                                                 req.metadata_in_len)))
                out.append(cpl)
            except TransportError as e:
                failure = failure or e
        if failure:
            self._stats.transport_errors += 1
            raise failure
        self._stats.completed += len(out)
        self._stats.errors += sum(not c.ok for c in out)
        return out

    async def _abort(self, req: Request) -> bool:
        return True         # the driver's own timeout handling aborts it (or resets)

    def _kernel_state(self) -> str:
        """The driver's state of the controller: live, resetting, connecting, ..."""
        return sysfs.read_attr(sysfs.sysclass("nvme", self.sysname, "state"))

    async def _wait_serving(self) -> None:
        """Until the kernel has the controller live again (sysfs `state`)."""
        while self._kernel_state() not in ("live", ""):
            await trio.sleep(POLL_STATE)

    async def _reset(self) -> None:
        try:
            with trio.fail_after(RESET_TIMEOUT):
                await trio.to_thread.run_sync(fcntl.ioctl, self.fd, lib.NVME_IOCTL_RESET,
                                              abandon_on_cancel=True)
        except OSError as e:
            raise kernel_error(e.errno, f"{self.sysname}: reset") from None

    def statistics(self):
        stats = super().statistics()
        if self.ring is not None:
            stats.extra.update(self.ring.statistics())
        return stats
