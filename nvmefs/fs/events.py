"""`events`: a controller's asynchronous events as JSON lines (DESIGN §5).

Each open has its own place in the controller's event log
(backends.events): a reader sees every event published after its open,
whatever other readers do; one that falls more than the log keeps behind
reads a `{"type_name": "lost", "count": N}` line where the events it missed were.
"""

from __future__ import annotations

import errno
import json

import trio
from pyfuse3 import FUSEError

from ..backends.base import Controller
from .nodes import File, Handle, wants_write
from .streams import StreamHandle


class EventsFile(File):
    attr_timeout = 0.0
    waits = False

    def __init__(self, ctrl: Controller):
        super().__init__("events")
        self.ctrl = ctrl

    async def open(self, flags: int, ctx) -> Handle:
        if wants_write(flags):
            raise FUSEError(errno.EACCES)
        if self.tree.access.policy_for(ctx.uid) == "off":
            raise FUSEError(errno.EACCES)
        return EventsHandle(self, flags)


class EventsHandle(StreamHandle):
    def __init__(self, node: EventsFile, flags: int):
        super().__init__(node.tree, flags)
        self.log = node.ctrl.events
        self.cursor = self.log.count

    def ready(self) -> bool:
        return self.log.count > self.cursor

    def changed(self) -> trio.Event:
        return self.log.changed()

    async def produce(self, size: int) -> bytes:
        lines, lost = self.log.since(self.cursor)
        out = [json.dumps({"type_name": "lost", "count": lost}).encode() + b"\n"] if lost else []
        n, taken = sum(map(len, out)), 0
        for line in lines:          # whole lines up to `size` (at least one)
            if out and n + len(line) > size:
                break
            out.append(line)
            n += len(line)
            taken += 1
        self.cursor = self.log.count - len(lines) + taken
        return b"".join(out)
