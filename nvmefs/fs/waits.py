"""Bounded, interruptible waits inside FUSE handlers (DESIGN §5).

A handler that must wait for something (a mailbox's answers, a stream's next
entry) waits here, on the event its node sets at each change. Waiting costs
nothing until the event fires or the bound passes: nothing polls. The request's
interrupt (FUSE_INTERRUPT, fs.interrupt) cancels the handler's scope, which
answers EINTR; `limit` answers ETIMEDOUT.

Every waiter holds one of pyfuse3's tasks, and the FUSE_INTERRUPT that frees
a waiter needs a free task to be read. So at most MAX_WAITERS wait at once, a
few hundred fewer than the daemon's tasks (mount.MAX_FUSE_TASKS): the next
caller gets EAGAIN, and the daemon keeps serving everyone else.

Where the daemon cannot learn of interrupts (fs.interrupt fell back), a waiter
looks at its caller's pending signals every FALLBACK_INTERVAL instead.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable

import trio
from pyfuse3 import FUSEError

from . import interrupt

MAX_WAITERS = 768           # < mount.MAX_FUSE_TASKS: tasks stay free to read interrupts
FALLBACK_INTERVAL = 0.5     # seconds between looks at the caller, without FUSE_INTERRUPT


@dataclass(frozen=True)
class WaitersStatistics:
    waiting: int            # handlers waiting now
    most_waiting: int       # the most that ever waited at once
    refused: int            # waits refused with EAGAIN (MAX_WAITERS were waiting)
    timed_out: int          # waits that ended with ETIMEDOUT
    polling: int            # waiting now without FUSE_INTERRUPT (looking at the caller)


class Waiters:
    """The waits of one mount's handlers, counted and bounded."""

    def __init__(self, max_waiters: int = MAX_WAITERS):
        self.max_waiters = max_waiters
        self._waiting = 0
        self._most = 0
        self._refused = 0
        self._timed_out = 0
        self._polling = 0

    async def wait_until(self, ready: Callable[[], bool], changed: Callable[[], trio.Event],
                         limit: float) -> None:
        """Return once `ready()`; `changed()` gives the event set at the next change.
        FUSEError: EAGAIN if MAX_WAITERS already wait, ETIMEDOUT after `limit` seconds.
        An interrupt of the request cancels the wait (the handler answers EINTR)."""
        if ready():
            return
        if self._waiting >= self.max_waiters:
            self._refused += 1
            raise FUSEError(errno.EAGAIN)
        self._waiting += 1
        self._most = max(self._most, self._waiting)
        try:
            with interrupt.armed() as armed, trio.move_on_after(limit) as deadline:
                if armed.interruptible:
                    while not ready():
                        await changed().wait()
                else:
                    await self._watching_caller(ready, changed)
        finally:
            self._waiting -= 1
        if deadline.cancelled_caught and not ready():
            self._timed_out += 1
            raise FUSEError(errno.ETIMEDOUT)

    async def _watching_caller(self, ready: Callable[[], bool],
                               changed: Callable[[], trio.Event]) -> None:
        """The fallback: wake every FALLBACK_INTERVAL to look for a signal pending
        for the caller; EINTR only if one really is."""
        try:
            pid = interrupt.caller().pid
        except LookupError:
            pid = 0
        self._polling += 1
        try:
            while not ready():
                with trio.move_on_after(FALLBACK_INTERVAL):
                    await changed().wait()
                if not ready() and pid and interrupt.signal_pending(pid):
                    raise FUSEError(errno.EINTR)
        finally:
            self._polling -= 1

    def statistics(self) -> WaitersStatistics:
        return WaitersStatistics(self._waiting, self._most, self._refused, self._timed_out,
                                 self._polling)
