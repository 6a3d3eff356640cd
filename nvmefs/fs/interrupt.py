"""Bounded, interruptible waits inside FUSE handlers (DESIGN §5).

pyfuse3 does not act on FUSE_INTERRUPT, and a process whose request the daemon
holds cannot even be killed until the daemon replies. So a handler that waits
watches the process that opened the file: once a signal is pending for it
(SigPnd/ShdPnd in /proc, any thread, not blocked), the wait ends with EINTR.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

import trio
from pyfuse3 import FUSEError

WATCH_INTERVAL = 0.1        # seconds between looks at the caller


def _mask(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[1], 16)
    return 0


def signal_pending(pid: int) -> bool:
    """True if any thread of `pid` has an unblocked signal pending (or `pid` is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except OSError:
            continue
        pending = _mask(status, "SigPnd:") | _mask(status, "ShdPnd:")
        if pending & ~_mask(status, "SigBlk:"):
            return True
    return False


async def wait_until(ready: Callable[[], bool], changed: Callable[[], trio.Event], pid: int,
                     limit: float) -> None:
    """Wait until `ready()`; `changed()` gives the event set at each change.
    EINTR if the caller gets a signal, ETIMEDOUT after `limit` seconds."""
    if ready():
        return
    with trio.move_on_after(limit) as scope:
        while not ready():
            with trio.move_on_after(WATCH_INTERVAL):
                await changed().wait()
            if not ready() and pid and signal_pending(pid):
                raise FUSEError(errno.EINTR)
    if scope.cancelled_caught:
        raise FUSEError(errno.ETIMEDOUT)
