"""cdq/: Controller Data Queues as files (DESIGN §4).

    cdq/ctl                 write `create NAME entries=N [entry_size=32] [mos=0x0] [cqs=CNTLID]`;
                            read: one line per queue (name, cdqid, entries, state)
    cdq/NAME/entries        the queue's entries, raw, as a blocking stream
    cdq/NAME/entries.jsonl  the same entries decoded, one JSON object per line
    cdq/NAME/info           key: value lines (backends.cdq.HostQueue.info)
    cdq/NAME/track          write `start` / `stop` (Track Send); read: on / off
    rmdir cdq/NAME          deletes the queue

Everything here needs the caller's passthru policy to be `all`: reading takes
entries off the queue and gives their space back to the controller. A queue
has one head, so its readers share it: each entry goes to exactly one read,
whichever file or open it comes through (as with a pipe's readers).
"""

from __future__ import annotations

import errno
import logging
import re

import trio
from pyfuse3 import FUSEError

from ..backends.base import Controller, Unsupported
from ..backends.cdq import LIVE, HostQueue
from ..spec import cdq as Q
from ..spec import status
from .nodes import (ControlFile, Dir, File, Handle, Node, SnapshotFile, StaticDir, require_all,
                    wants_write)
from .streams import STREAM_WAIT, StreamHandle
from .views import text_lines

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_ENTRIES = 1 << 20           # 32 MiB of ring
MAX_CTL = 4096                  # bytes of one ctl write
# statuses a create may get, and the errno DESIGN §4 gives each
CREATE_ERRNO = {status.code(status.INVALID_OPCODE): errno.EOPNOTSUPP,
                status.code(status.NOT_ENOUGH_RESOURCES): errno.ENOSPC}


def parse_create(line: str, default_cntlid: int) -> tuple[str, int, int]:
    """(name, entries, cntlid) of a `create` line; ValueError says what is wrong."""
    words = line.split()
    if len(words) < 2 or words[0] != "create":
        raise ValueError("expected: create NAME entries=N [entry_size=32] [mos=0x0] [cqs=CNTLID]")
    name, opts = words[1], {"entry_size": Q.ENTRY_SIZE, "mos": Q.QT_UDMQ,
                            "cqs": default_cntlid}
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a queue name ([A-Za-z0-9_.-], 1..64)")
    for word in words[2:]:
        key, eq, value = word.partition("=")
        if not eq or key not in ("entries", *opts):
            raise ValueError(f"unknown option {word!r}")
        opts[key] = int(value, 0)
    entries = opts.get("entries")
    if entries is None or not 2 <= entries <= MAX_ENTRIES:
        raise ValueError(f"entries=N is required, 2..{MAX_ENTRIES}")
    if opts["entry_size"] != Q.ENTRY_SIZE or opts["mos"] != Q.QT_UDMQ:
        raise ValueError("only User Data Migration Queues (mos=0, entry_size=32) are defined")
    if not 0 <= opts["cqs"] <= 0xFFFF:
        raise ValueError("cqs is a controller ID, 0..65535")
    return name, entries, opts["cqs"]


class CdqDir(Dir):
    def __init__(self, ctrl: Controller):
        super().__init__("cdq")
        self.ctrl = ctrl

    async def entries(self) -> list[Node]:
        ctl = self.child("ctl", lambda: CtlFile(self))
        return [ctl, *(self.child(name, lambda q=q: queue_dir(self.ctrl, q))
                       for name, q in self.ctrl.cdqs.items())]

    async def lookup(self, name: str) -> Node | None:
        if name != "ctl" and name not in self.ctrl.cdqs:
            return None
        return await super().lookup(name)

    async def rmdir(self, name: str, ctx) -> None:
        require_all(self.tree, ctx.uid)
        q = self.ctrl.cdqs.get(name)
        if q is None:
            raise FUSEError(errno.ENOENT)
        cpl = await self.ctrl.cdq_delete(q)
        if not cpl.ok:
            raise FUSEError(status.errno_of(cpl.status))
        self.forget_child(name)


class CtlFile(ControlFile):
    def __init__(self, parent: CdqDir):
        super().__init__("ctl")
        self.parent = parent

    def text(self) -> bytes:
        return "".join(f"{q.name} cdqid={q.cdqid} entries={q.entries} state={q.state}\n"
                       for q in self.parent.ctrl.cdqs.values()).encode()

    def handle(self) -> Handle:
        return CtlHandle(self.parent)


class CtlHandle(Handle):
    def __init__(self, parent: CdqDir):
        self.parent = parent

    async def write(self, offset: int, data: bytes) -> int:
        ctrl = self.parent.ctrl
        try:
            if len(data) > MAX_CTL:
                raise ValueError("a ctl write is at most 4096 bytes")
            name, entries, cntlid = parse_create(data.decode("ascii"), ctrl.id_ctrl["cntlid"])
        except (ValueError, UnicodeDecodeError):
            raise FUSEError(errno.EINVAL) from None
        if name in ctrl.cdqs:
            raise FUSEError(errno.EEXIST)
        try:
            cpl, _ = await ctrl.cdq_create(name, entries, cntlid)
        except Unsupported as e:
            log.warning("cdq/ctl: %s", e)
            raise FUSEError(e.errno) from None
        if not cpl.ok:
            code = status.code(cpl.status)
            log.warning("%s: cdq/ctl: the controller refused to create %s: %s%s", ctrl.name, name,
                        status.describe(cpl.status).name,
                        " (it has no Controller Data Queues)"
                        if code == status.code(status.INVALID_OPCODE) else "")
            raise FUSEError(CREATE_ERRNO.get(code, status.errno_of(cpl.status)))
        return len(data)


def queue_dir(ctrl: Controller, q: HostQueue) -> Dir:
    async def info() -> bytes:
        return text_lines(q.info())

    return StaticDir(q.name, [EntriesFile(ctrl, q, "entries"), EntriesFile(ctrl, q, "entries.jsonl"),
                              SnapshotFile("info", info, waits=False), TrackFile(ctrl, q)])


class EntriesFile(File):
    attr_timeout = 0.0
    waits = False

    def __init__(self, ctrl: Controller, q: HostQueue, name: str):
        super().__init__(name)
        self.ctrl, self.q = ctrl, q
        self.decoded = name.endswith(".jsonl")

    async def open(self, flags: int, ctx) -> Handle:
        if wants_write(flags):
            raise FUSEError(errno.EACCES)
        require_all(self.tree, ctx.uid)
        return EntriesHandle(self, flags)


class EntriesHandle(StreamHandle):
    def __init__(self, node: EntriesFile, flags: int):
        super().__init__(node.tree, flags)
        self.q, self.decoded = node.q, node.decoded
        self.min_read = 1 if self.decoded else Q.ENTRY_SIZE   # never part of an entry

    def ready(self) -> bool:
        return self.q.ready()

    def changed(self) -> trio.Event:
        return self.q.changed()

    async def wait(self) -> None:
        await self.q.wait_entries(self.tree.waiters, STREAM_WAIT)

    async def poll(self, poll_handle=None) -> int:
        if not self.pending and not self.q.ready():
            await self.q.give_back(arm=True)        # the controller's event wakes us
        return await super().poll(poll_handle)

    async def produce(self, size: int) -> bytes:
        if not self.decoded:
            return await self.q.take(size // Q.ENTRY_SIZE)
        # only the entries whose lines fit are taken: a taken entry is never left
        # half read in an open that may be closed
        lines = Q.json_lines(self.q.peek(size // Q.MIN_LINE + 1))
        n = total = 0
        while n < len(lines) and total + len(lines[n]) <= size:
            total += len(lines[n])
            n += 1
        if lines and not n:
            raise FUSEError(errno.EINVAL)           # too small for the next line
        await self.q.take(n)
        return "".join(lines[:n]).encode()



class TrackFile(ControlFile):
    def __init__(self, ctrl: Controller, q: HostQueue):
        super().__init__("track")
        self.ctrl, self.q = ctrl, q

    def text(self) -> bytes:
        return b"on\n" if self.q.tracking else b"off\n"

    def handle(self) -> Handle:
        return TrackHandle(self.ctrl, self.q)


class TrackHandle(Handle):
    def __init__(self, ctrl: Controller, q: HostQueue):
        self.ctrl, self.q = ctrl, q

    async def write(self, offset: int, data: bytes) -> int:
        word = data.strip()
        if word not in (b"start", b"stop"):
            raise FUSEError(errno.EINVAL)
        if self.q.state != LIVE:
            raise FUSEError(errno.ENOENT)
        cpl = await self.ctrl.cdq_track(self.q, word == b"start")
        if not cpl.ok:
            raise FUSEError(status.errno_of(cpl.status))
        return len(data)
