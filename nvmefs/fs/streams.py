"""Stream files (DESIGN §5): reads block until there is something, are
interruptible (fs.waits), and poll()/select()/epoll see when they would not
block. A record a short read cannot hold whole is kept for the next read, so
the stream never loses or repeats bytes; an open with O_NONBLOCK gets EAGAIN
instead of waiting.
"""

from __future__ import annotations

import errno
import logging
import os

import trio
from pyfuse3 import FUSEError

from .nodes import Handle, Tree

log = logging.getLogger(__name__)

POLLIN = 0x1
STREAM_WAIT = 24 * 3600.0       # seconds one read waits for a record, then ETIMEDOUT


class StreamHandle(Handle):
    nonseekable = True
    waits = False               # its waits arm themselves (fs.waits)
    min_read = 1                # a smaller read is EINVAL (it could never hold a record)

    def __init__(self, tree: Tree, flags: int):
        self.tree = tree
        self.nonblocking = bool(flags & os.O_NONBLOCK)
        self.pending = b""
        self._poll_scope: trio.CancelScope | None = None

    # ---- what a stream is

    def ready(self) -> bool:
        raise NotImplementedError

    def changed(self) -> trio.Event:
        raise NotImplementedError

    async def wait(self) -> None:
        """Until ready() (bounded, interruptible)."""
        await self.tree.waiters.wait_until(self.ready, self.changed, STREAM_WAIT)

    async def produce(self, size: int) -> bytes:
        """The records ready now, about `size` bytes of them."""
        raise NotImplementedError

    # ---- the file

    async def read(self, offset: int, size: int) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:size], self.pending[size:]
            return out
        if size < self.min_read:
            raise FUSEError(errno.EINVAL)
        if not self.ready():
            if self.nonblocking:
                raise FUSEError(errno.EAGAIN)
            await self.wait()
        data = await self.produce(size)
        if len(data) > size:
            data, self.pending = data[:size], data[size:]
        return data

    async def poll(self, poll_handle=None) -> int:
        if self.pending or self.ready():
            return POLLIN
        if poll_handle is not None:
            self._notify_later(poll_handle)
        return 0

    def _notify_later(self, poll_handle) -> None:
        """Tell the kernel (once) when the stream changes: one task per handle."""
        if self._poll_scope is not None:
            self._poll_scope.cancel()
        scope = self._poll_scope = trio.CancelScope()
        event = self.changed()

        async def notify() -> None:
            with scope:
                await event.wait()
                try:
                    poll_handle.notify()
                except OSError as e:            # the kernel forgot the poll: nothing to tell
                    log.debug("poll notify: %s", e)
        self.tree.nursery.start_soon(notify)

    async def release(self) -> None:
        if self._poll_scope is not None:
            self._poll_scope.cancel()
