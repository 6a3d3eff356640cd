"""passthru/: mailboxes that take command blobs and answer completions (DESIGN §3).

Each open file is a session: requests written on it are answered on it, in
order, like a socket. A write is validated whole before anything is sent
(spec.passthru); its valid requests go to the controller as one batch in the
background, so the write returns at once and reads block (interruptibly, with
a bound) for the answers. The mailbox also keeps the answers of the last write
for the next open that only reads.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections import deque
from dataclasses import dataclass

import trio
from pyfuse3 import FUSEError

from ..backends.base import MAX_TIMEOUT, RESET_TIMEOUT, Controller, Request, TransportError
from ..spec import identify as ID
from ..spec import logs as L
from ..spec import passthru as P
from ..spec.opcodes import ADMIN, IO
from .errors import check
from .interrupt import wait_until
from .nodes import Dir, File, Handle, Node, wants_write

log = logging.getLogger(__name__)

PRIVATE_NAME = re.compile(r"(admin|io)\.[A-Za-z0-9_.-]{1,64}")
WAIT_LIMIT = MAX_TIMEOUT + RESET_TIMEOUT + 10     # no answer takes longer than this
MAX_UNREAD = 64 << 20       # answers a session may leave unread before writes fail (ENOBUFS)
MAX_PENDING = 65536         # requests a session may have in flight
POLLIN, POLLOUT = 0x1, 0x4


class Targets:
    """Validation context of a controller's queues, refreshed per Identify generation."""

    def __init__(self, ctrl: Controller, policy: str):
        self.ctrl, self.policy = ctrl, policy
        self._generation = -1
        self._targets: dict[str, P.Target] = {}

    async def get(self, queue: str) -> P.Target:
        ctrl = self.ctrl
        if self._generation != ctrl.generation:
            effects = (None, None)
            if L.LOG_PAGES[0x05].supported(ctrl.id_ctrl):
                effects = L.effects_tables(check(await ctrl.get_log(0x05, L.EFFECTS_SIZE)))
            namespaces = {}
            for nsid in ctrl.nsids:
                cpl = await ctrl.identify_ns(nsid)
                if cpl.ok:
                    namespaces[nsid] = ID.block_size(ID.decode_id_ns(cpl.data))
            self._targets = {q: P.Target(q, self.policy, ctrl.max_transfer, namespaces, e)
                             for q, e in zip((ADMIN, IO), effects, strict=True)}
            self._generation = ctrl.generation
        return self._targets[queue]


@dataclass
class Batch:
    requests: list[P.PassthruRequest]
    answer: bytes = b""
    error: int = 0                 # errno of a transport failure
    done: bool = False


class Mailbox(File):
    """A file in passthru/: `admin`, `io`, or a private `admin.NAME` / `io.NAME`."""
    writable = True
    attr_timeout = 0.0      # its size is its last answer's

    def __init__(self, name: str, ctrl: Controller, queue: str, targets: Targets,
                 uid: int | None = None, gid: int | None = None):
        super().__init__(name)
        self.ctrl, self.queue, self.targets = ctrl, queue, targets
        self.private = uid is not None
        if self.private:
            self.uid, self.gid = uid, gid       # Tree.attr shows the creator as owner
        self.last = b""                         # the answers to the last write

    @property
    def mode(self) -> int:
        return stat.S_IFREG | (0o600 if self.private else 0o666)

    async def size(self) -> int:
        return len(self.last)

    async def open(self, flags: int, ctx) -> Handle:
        # an open that only reads gets the last answers; one that writes starts empty
        access = flags & os.O_ACCMODE
        return MailboxHandle(self, ctx.pid, b"" if wants_write(flags) else self.last,
                             wait_on_close=access == os.O_WRONLY)


class MailboxHandle(Handle):
    nonseekable = True

    def __init__(self, box: Mailbox, pid: int, initial: bytes, wait_on_close: bool):
        self.box, self.pid, self.wait_on_close = box, pid, wait_on_close
        self.buffer = bytearray(initial)
        self.batches: deque[Batch] = deque()     # submitted, answered in this order
        self.errors: deque[int] = deque()        # transport failures still to report
        self.changed = trio.Event()
        self.poll_handle = None

    async def write(self, offset: int, data: bytes) -> int:
        requests, pos, error = P.split_write(data, await self.box.targets.get(self.box.queue))
        pending = sum(len(b.requests) for b in self.batches) + len(requests)
        if len(self.buffer) > MAX_UNREAD or pending > MAX_PENDING:
            raise FUSEError(errno.ENOBUFS)     # read the answers first
        if requests:
            self._submit(requests)
        if error is None:
            return len(data)
        log.info("%s/passthru/%s: request at byte %d refused (%s): %s", self.box.ctrl.name,
                 self.box.name, pos, errno.errorcode.get(error.errno, error.errno), error)
        if error.truncated and requests:
            return pos          # a short write: the rest may come in the next one
        raise FUSEError(error.errno)

    def _submit(self, requests: list[P.PassthruRequest]) -> None:
        batch = Batch(requests)
        self.batches.append(batch)
        self.box.tree.nursery.start_soon(self._run, batch)

    async def _run(self, batch: Batch) -> None:
        reqs = [Request(self.box.queue, r.cmd, r.data_out, r.data_in_len,
                        r.timeout_ms / 1000 if r.timeout_ms else None) for r in batch.requests]
        try:
            cpls = await self.box.ctrl.submit_batch(reqs)
            batch.answer = b"".join(map(P.encode_response, batch.requests, cpls))
            self.box.last = batch.answer
        except TransportError as e:
            log.warning("%s/passthru/%s: %s", self.box.ctrl.name, self.box.name, e)
            batch.error = e.errno
        batch.done = True
        while self.batches and self.batches[0].done:
            first = self.batches.popleft()
            if first.error:
                self.errors.append(first.error)
            else:
                self.buffer += first.answer
        self.changed.set()
        self.changed = trio.Event()
        if self.poll_handle is not None:
            self.poll_handle.notify()
            self.poll_handle = None

    def _readable(self) -> bool:
        return bool(self.buffer or self.errors or not self.batches)

    async def read(self, offset: int, size: int) -> bytes:
        await wait_until(self._readable, lambda: self.changed, self.pid, WAIT_LIMIT)
        if not self.buffer and self.errors:
            raise FUSEError(self.errors.popleft())
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    async def flush(self) -> None:
        """Closing a write-only open returns once its requests are answered, so
        `echo ... > f; cat f` shows them; a read-write session reads its answers itself."""
        if self.wait_on_close:
            await wait_until(lambda: not self.batches, lambda: self.changed, self.pid, WAIT_LIMIT)

    async def poll(self, poll_handle=None) -> int:
        if self._readable():
            return POLLIN | POLLOUT
        self.poll_handle = poll_handle
        return POLLOUT


class PassthruDir(Dir):
    """passthru/: `admin`, `io` and private mailboxes made with O_CREAT."""
    perm = 0o1777

    def __init__(self, ctrl: Controller, policy: str):
        super().__init__("passthru")
        self.ctrl = ctrl
        self.targets = Targets(ctrl, policy)

    def _mailbox(self, name: str, queue: str, **kwargs) -> Node:
        return self.child(name, lambda: Mailbox(name, self.ctrl, queue, self.targets, **kwargs))

    async def entries(self) -> list[Node]:
        shared = [self._mailbox(ADMIN, ADMIN), self._mailbox(IO, IO)]
        private = [n for name, n in sorted(self._children.items()) if name not in (ADMIN, IO)]
        return shared + private

    async def lookup(self, name: str) -> Node | None:
        if name in (ADMIN, IO):
            return self._mailbox(name, name)
        return self._children.get(name)

    async def create(self, name: str, ctx) -> Node:
        if not PRIVATE_NAME.fullmatch(name):
            raise FUSEError(errno.EINVAL)
        if name in self._children:
            raise FUSEError(errno.EEXIST)
        return self._mailbox(name, name.split(".", 1)[0], uid=ctx.uid, gid=ctx.gid)

    async def unlink(self, name: str, ctx) -> None:
        if name in (ADMIN, IO):
            raise FUSEError(errno.EPERM)
        if name not in self._children:
            raise FUSEError(errno.ENOENT)
        self.forget_child(name)


class ResetFile(File):
    """`reset`: writing 1 resets the controller (needs --passthru=all)."""
    perm = 0o200
    writable = True

    def __init__(self, ctrl: Controller, policy: str):
        super().__init__("reset")
        self.ctrl, self.policy = ctrl, policy

    async def open(self, flags: int, ctx) -> Handle:
        if self.policy != "all" or flags & os.O_ACCMODE != os.O_WRONLY:
            raise FUSEError(errno.EACCES)
        return ResetHandle(self.ctrl)


class ResetHandle(Handle):
    def __init__(self, ctrl: Controller):
        self.ctrl = ctrl

    async def write(self, offset: int, data: bytes) -> int:
        if data.strip() != b"1":
            raise FUSEError(errno.EINVAL)
        await self.ctrl.reset()
        return len(data)
