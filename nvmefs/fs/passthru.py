"""passthru/: mailboxes that take command blobs and answer completions (DESIGN §3).

Each open file is a session (spec.session): the bytes written on it are a
stream of requests, answered on it, in order, like a socket. A request is
admitted only once it is whole and valid and its answer fits the session's
and the mount's memory (fs.budget); a write that cannot be admitted whole
is cut short at the first request that cannot be (the caller writes the
rest again) or fails with that request's errno. Admitted requests go to the
controller as one batch in the background, so the write returns at once and
reads wait (interruptibly, with a bound) for the answers. A write-only open's
write returns once its batch is answered, so `echo ... > f; cat f` shows them.

Each mailbox keeps the answers of each user's last write-only open, for that
user's next open that only reads; no user ever reads another's answers.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections import deque
from itertools import chain
from dataclasses import dataclass, field

import trio
from pyfuse3 import FUSEError

from ..backends.base import MAX_TIMEOUT, RESET_TIMEOUT, Controller, TransportError
from ..spec import identify as ID
from ..spec import logs as L
from ..spec import passthru as P
from ..spec.commands import CSI_NVM, LID_EFFECTS
from ..spec.opcodes import ADMIN, CHANGES_NAMESPACES, IO
from ..spec.session import NEED_DATA, MailboxSession, RequestError
from .budget import Budget
from .chunks import Pieces
from .logs import effects_pages
from . import interrupt
from .nodes import Dir, File, Handle, Node, require_all, wants_write

log = logging.getLogger(__name__)

PRIVATE_NAME = re.compile(r"(admin|io)\.[A-Za-z0-9_.-]{1,64}")
WAIT_LIMIT = MAX_TIMEOUT + RESET_TIMEOUT + 10     # no answer takes longer than this
MAX_PRIVATE = 64            # private mailboxes one user may have per controller (else ENOSPC)
POLLIN, POLLOUT = 0x1, 0x4


class Targets:
    """Validation context of a controller's queues, per policy, refreshed per
    Identify generation. While a batch that changes namespaces or identify data
    is in flight, no request is validated (DESIGN §3)."""

    def __init__(self, ctrl: Controller):
        self.ctrl = ctrl
        self._generation = -1
        self._namespaces: dict[int, ID.NsFormat] = {}
        self._effects: dict[str, object] = {ADMIN: None, IO: None}
        self._targets: dict[tuple[str, str], P.Target] = {}
        self._lock = trio.Lock()
        self.changing = 0                   # batches in flight that change namespaces
        self.changed = trio.Event()         # set whenever `changing` drops to 0

    async def get(self, queue: str, policy: str, waiters) -> P.Target:
        if self.changing:
            await waiters.wait_until(lambda: not self.changing, lambda: self.changed, WAIT_LIMIT)
        if self._generation != self.ctrl.generation:
            with interrupt.armed():
                await self._refresh()
        key = (queue, policy)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = P.Target(
                queue, policy, self.ctrl.max_transfer, self._namespaces, self._effects[queue],
                metadata_refusal=self.ctrl.metadata_refusal)
        return target

    async def _refresh(self) -> None:
        """Read the effects log (of each command set in use) and the namespaces' formats
        and command sets again (one caller at a time; the lock is taken only when the
        generation moved, not on every write)."""
        async with self._lock:
            ctrl = self.ctrl
            if self._generation == ctrl.generation:
                return                      # another caller refreshed meanwhile
            generation = ctrl.generation
            effects: dict[str, object] = {ADMIN: None, IO: None}
            if L.LOG_PAGES[LID_EFFECTS].supported(ctrl.id_ctrl):
                # admin from CSI 0's page; I/O per command set, from the page of each in use
                pages = await effects_pages(ctrl)
                effects = {ADMIN: L.effects_tables(pages[CSI_NVM])[0],
                           IO: {csi: L.effects_tables(page)[1] for csi, page in pages.items()}}
            namespaces = {}
            for nsid in ctrl.nsids:
                cpl = await ctrl.identify_ns(nsid)
                if cpl.ok:
                    namespaces[nsid] = ID.ns_format(ID.decode_id_ns(cpl.data), ctrl.csi(nsid))
            self._namespaces, self._effects = namespaces, effects
            self._targets.clear()
            self._generation = generation

    def begin_change(self) -> None:
        self.changing += 1

    def end_change(self) -> None:
        self.changing -= 1
        if not self.changing:
            self.changed.set()
            self.changed = trio.Event()


@dataclass
class Batch:
    requests: list[P.PassthruRequest]
    reserved: int                       # bytes of answers reserved for it
    answers: list[list[bytes]] = field(default_factory=list)    # each answer's parts
    error: int = 0                      # errno of a failure that lost the whole batch
    done: bool = False
    changes_namespaces: bool = False    # its last command does (Format, Namespace Management...)


class Mailbox(File):
    """A file in passthru/: `admin`, `io`, or a private `admin.NAME` / `io.NAME`."""
    writable = True
    waits = False           # its handles arm their own waits
    attr_timeout = 0.0      # its size is the asking user's kept answers

    def __init__(self, name: str, ctrl: Controller, queue: str, targets: Targets,
                 uid: int | None = None, gid: int | None = None):
        super().__init__(name)
        self.ctrl, self.queue, self.targets = ctrl, queue, targets
        self.private = uid is not None
        if self.private:
            self.uid, self.gid = uid, gid       # Tree.attr shows the creator as owner

    @property
    def mode(self) -> int:
        return stat.S_IFREG | (0o600 if self.private else 0o666)

    async def size(self) -> int:
        try:
            uid = interrupt.caller().uid
        except LookupError:
            return 0
        return self.tree.kept.size((self.inode, uid))

    async def open(self, flags: int, ctx) -> Handle:
        tree = self.tree
        policy = tree.access.policy_for(ctx.uid)
        if not wants_write(flags):
            key = (self.inode, ctx.uid)
            h = MailboxHandle(self, ctx.uid, policy, tree.kept.get(key), None)
            if tree.kept.error(key):            # a write-only open's batch was lost
                h.errors.append(tree.kept.error(key))
            return h
        if policy == "off":
            raise FUSEError(errno.EACCES)
        budget = Budget(tree.memory, tree.session_budget)
        return MailboxHandle(self, ctx.uid, policy, Pieces(), budget,
                             write_only=flags & os.O_ACCMODE == os.O_WRONLY)

    def forget(self) -> None:
        self.tree.kept.drop_where(lambda key: key[0] == self.inode)


class MailboxHandle(Handle):
    waits = False           # fs.waits and Targets arm what waits

    def __init__(self, box: Mailbox, uid: int, policy: str, answers: Pieces,
                 budget: Budget | None, write_only: bool = False):
        self.box, self.uid, self.policy = box, uid, policy
        self.answers = answers                  # readable now, in order
        self.budget = budget                    # None: this open only reads kept answers
        self.write_only = write_only
        self.session = MailboxSession()
        self.batches: deque[Batch] = deque()    # submitted, answered in this order
        self.errors: deque[int] = deque()       # lost batches still to report
        self.changed = trio.Event()
        self.poll_handle = None
        self.closed = False
        self.kept = False                       # this open's answers are the ones kept
        self.out_of_step = 0                    # errno every later write fails with

    async def write(self, offset: int, data: bytes) -> int:
        if self.budget is None:
            raise FUSEError(errno.EBADF)
        if self.out_of_step:
            raise FUSEError(self.out_of_step)
        box = self.box
        waiters = box.tree.waiters
        target = await box.targets.get(box.queue, self.policy, waiters)
        session, start = self.session, self.session.received
        session.receive_data(data)
        requests: list[P.PassthruRequest] = []
        reserved, failure, cut, changing = 0, None, None, False
        budget, changes = self.budget, CHANGES_NAMESPACES[box.queue]
        while True:
            event = session.next_request(target)
            if event is NEED_DATA:
                break
            if isinstance(event, RequestError):
                failure, cut = event, event.start
                break
            size = P.answer_size(event)
            if not budget.reserve(size):
                failure = RequestError(errno.ENOBUFS, "the answers would not fit: read them first",
                                       start=session.last_start)
                # a request begun in an earlier write stays buffered: that write was taken
                cut = max(session.last_start, start)
                break
            reserved += size
            requests.append(event)
            if event.cmd.opcode in changes:
                changing = True             # the batch ends here: the rest is validated
                if session.buffered:        # after the change
                    cut = session.consumed
                break
        if requests:
            self._submit(Batch(requests, reserved, changes_namespaces=changing))
        taken = len(data) if cut is None else cut - start
        if failure is not None:
            log.info("%s/passthru/%s: request at byte %d refused (%s): %s", box.ctrl.name,
                     box.name, failure.start, errno.errorcode.get(failure.errno, failure.errno),
                     failure)
        if taken <= 0 and failure is not None:
            if failure.errno == errno.ENOBUFS:
                session.rewind(start)       # nothing of this write taken: it may come again
            else:
                session.discard()           # the bad request and everything after it
                if failure.start < start:
                    # it began in a write already taken: what the writer sends next is
                    # the rest of it, which must never run as a request of its own
                    self.out_of_step = failure.errno
            raise FUSEError(failure.errno)
        if cut is not None:
            session.rewind(cut)             # a short write: the caller writes the rest again
        if self.write_only and requests:
            await waiters.wait_until(lambda: not self.batches, lambda: self.changed, WAIT_LIMIT)
            if self.errors:
                raise FUSEError(self.errors.popleft())
        return taken

    def _submit(self, batch: Batch) -> None:
        if batch.changes_namespaces:
            self.box.targets.begin_change()
        self.batches.append(batch)
        self.box.tree.passthru_batches[self.box.ctrl.name] += 1
        self.box.tree.nursery.start_soon(self._run, batch)

    async def _run(self, batch: Batch) -> None:
        """Carry one batch; whatever happens, it is answered (supervised work)."""
        box = self.box
        reqs = batch.requests               # each has a backend Request's fields
        try:
            try:
                batch.answers = [P.response_parts(r, c) for r, c in
                                 zip(reqs, await box.ctrl.submit_batch(reqs), strict=True)]
            except TransportError as e:
                log.warning("%s/passthru/%s: %s", box.ctrl.name, box.name, e)
                batch.error = e.errno
            except Exception:
                log.exception("%s/passthru/%s: batch of %d failed", box.ctrl.name, box.name,
                              len(reqs))
                batch.error = errno.EIO
            if batch.changes_namespaces and not batch.error:
                try:
                    await box.ctrl.refresh()
                except Exception:
                    log.exception("%s: refresh after a namespace change failed", box.ctrl.name)
        finally:
            if batch.changes_namespaces:
                box.targets.end_change()
            self._finish(batch)

    def _finish(self, batch: Batch) -> None:
        batch.done = True
        box = self.box
        while self.batches and self.batches[0].done:
            first = self.batches.popleft()
            if first.error or self.closed or self.write_only:
                self.budget.release(first.reserved)     # nobody reads these answers here
            else:
                before = len(self.answers)
                self.answers.absorb(chain.from_iterable(first.answers))
                self.budget.release(first.reserved - (len(self.answers) - before))
            if first.error:
                self.errors.append(first.error)
            if self.write_only:             # its writer reads nothing: keep them for a reader,
                box.tree.kept.add((box.inode, self.uid), first.answers,     # or the failure
                                  fresh=not self.kept, error=first.error)
                self.kept = True
        self.changed.set()
        self.changed = trio.Event()
        if self.poll_handle is not None:
            self.poll_handle.notify()
            self.poll_handle = None

    def _readable(self) -> bool:
        return bool(self.answers or self.errors or not self.batches)

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        await self.box.tree.waiters.wait_until(self._readable, lambda: self.changed, WAIT_LIMIT)
        if not self.answers and self.errors:
            raise FUSEError(self.errors.popleft())
        out = self.answers.take(size)
        if self.budget is not None:
            self.budget.release(len(out))
        return out

    async def release(self) -> None:
        self.closed = True
        if self.budget is not None:
            self.budget.release(len(self.answers))      # in-flight batches release theirs
        self.answers = Pieces()

    async def poll(self, poll_handle=None) -> int:
        if self._readable():
            return POLLIN | POLLOUT
        self.poll_handle = poll_handle
        return POLLOUT


class PassthruDir(Dir):
    """passthru/: `admin`, `io` and private mailboxes made with O_CREAT."""
    perm = 0o1777

    def __init__(self, ctrl: Controller):
        super().__init__("passthru")
        self.ctrl = ctrl
        self.targets = Targets(ctrl)

    def _mailbox(self, name: str, queue: str, **kwargs) -> Node:
        return self.child(name, lambda: Mailbox(name, self.ctrl, queue, self.targets, **kwargs))

    def _private(self) -> list[Mailbox]:
        return [n for name, n in sorted(self._children.items()) if name not in (ADMIN, IO)]

    async def entries(self) -> list[Node]:
        return [self._mailbox(ADMIN, ADMIN), self._mailbox(IO, IO), *self._private()]

    async def lookup(self, name: str) -> Node | None:
        if name in (ADMIN, IO):
            return self._mailbox(name, name)
        return self._children.get(name)

    async def create(self, name: str, ctx) -> Node:
        if not PRIVATE_NAME.fullmatch(name):
            raise FUSEError(errno.EINVAL)
        if name in self._children:
            raise FUSEError(errno.EEXIST)
        if sum(box.uid == ctx.uid for box in self._private()) >= MAX_PRIVATE:
            raise FUSEError(errno.ENOSPC)
        return self._mailbox(name, name.split(".", 1)[0], uid=ctx.uid, gid=ctx.gid)

    async def unlink(self, name: str, ctx) -> None:
        if name in (ADMIN, IO):
            raise FUSEError(errno.EPERM)
        box = self._children.get(name)
        if box is None:
            raise FUSEError(errno.ENOENT)
        box.forget()
        self.forget_child(name)


class ResetFile(File):
    """`reset`: writing 1 resets the controller (needs --passthru=all for the writer)."""
    perm = 0o200
    writable = True

    def __init__(self, ctrl: Controller):
        super().__init__("reset")
        self.ctrl = ctrl

    async def open(self, flags: int, ctx) -> Handle:
        require_all(self.tree, ctx.uid)
        if flags & os.O_ACCMODE != os.O_WRONLY:
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
