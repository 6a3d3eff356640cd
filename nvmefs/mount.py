"""Daemon lifetime: open the backends, mount, serve until unmounted or signalled.

The mount is announced ready (to a waiting parent when daemonized) only once
the FUSE session is serving and a read by a child process has checked
that FUSE_INTERRUPT reaches the requests (fs.interrupt). SIGINT and SIGTERM
unmount cleanly. A mountpoint left behind by a killed daemon ("Transport
endpoint is not connected") is detached and reused, with a message saying so.
The daemon's modules (FUSE, trio, the backends, the tree) are imported by `serve`
only: `nvmefs umount` and the checks before a mount do without them.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .sdnotify import notify

if TYPE_CHECKING:
    import trio

log = logging.getLogger(__name__)

FSNAME = "nvmefs"
# Requests served at once (pyfuse3 tasks). A blocked read holds one; fs.waits lets at most
# MAX_WAITERS (768) wait, so tasks always remain to serve others and to read FUSE_INTERRUPT.
MAX_FUSE_TASKS = 1024


class MountError(Exception):
    pass


@dataclass
class MountOptions:
    mountpoint: str
    devices: list[str]
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0
    passthru: str = "readonly"     # for the mounting user and root
    others: str = "info"           # for every other user (never more than passthru)
    max_buffer: int | None = None  # bytes of answers the mount may hold; None: fs.budget.MOUNT
    flags: tuple[str, ...] = ()    # kernel mount flags (ro, noexec, noatime, ...) from -o

    def fuse_options(self) -> set[str]:
        opts = {f"fsname={FSNAME}", f"subtype={FSNAME}", "default_permissions", "nodev", "nosuid"}
        if self.allow_other:
            opts.add("allow_other")
        return opts | set(self.flags)


def _unescape(field: bytes) -> bytes:
    """A /proc/self/mountinfo field as the path it names (the kernel writes space, tab,
    newline and backslash as \\ooo octal escapes)."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field)


def mounts_at(mountpoint: str | bytes) -> list[str]:
    """File system types mounted at `mountpoint`, from /proc/self/mountinfo; any name
    works (spaces, newlines, bytes that are not UTF-8)."""
    target = os.path.realpath(os.fsencode(mountpoint))
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.rstrip(b"\n").partition(b" - ")
            fields = left.split(b" ")
            if len(fields) > 4 and _unescape(fields[4]) == target:
                found.append(right.split(b" ")[0].decode(errors="replace"))
    return found


def stale(mountpoint: str) -> bool:
    """True if a FUSE daemon that is gone left `mountpoint` mounted. Listing asks the
    daemon (stat may answer from attributes the kernel still holds)."""
    try:
        os.stat(mountpoint)
        if os.path.isdir(mountpoint):
            os.listdir(mountpoint)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return True
        raise MountError(f"{mountpoint}: {e.strerror}") from None
    return False


def prepare_mountpoint(mountpoint: str, say: Callable[[str], None]) -> None:
    """Refuse a live nvmefs mount; detach a stale one left by a killed daemon."""
    if stale(mountpoint):
        detach(mountpoint)
        say(f"nvmefs: {mountpoint} was left mounted by a daemon that is gone "
            "(Transport endpoint is not connected); detached it and mounting again")
        return
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: not a directory")
    if f"fuse.{FSNAME}" in mounts_at(mountpoint):
        raise MountError(f"{mountpoint}: an nvmefs daemon is already serving it "
                         f"(unmount it with: nvmefs umount {mountpoint})")


def detach(mountpoint: str) -> None:
    """Lazy unmount (the kernel drops the mount once nothing uses it)."""
    for cmd in (["fusermount3", "-u", "-z", mountpoint], ["umount", "-l", mountpoint]):
        try:
            if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            continue
    raise MountError(f"{mountpoint}: could not detach the stale mount")


def unmount(mountpoint: str) -> None:
    """`nvmefs umount`: unmount, detaching if the daemon is already gone."""
    if stale(mountpoint):
        detach(mountpoint)
        return
    if not any(t.startswith("fuse") for t in mounts_at(mountpoint)):
        raise MountError(f"{mountpoint}: not mounted")
    r = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise MountError(r.stderr.strip() or f"{mountpoint}: unmount failed")


def controller_names(ctrls) -> list[str]:
    """Keep names the system already uses (Linux nvmeX); number the rest after them."""
    taken = {c.preferred_name for c in ctrls if c.preferred_name}
    numbers = (f"nvme{i}" for i in range(10_000) if f"nvme{i}" not in taken)
    return [c.preferred_name or next(numbers) for c in ctrls]


async def serve(opts: MountOptions, ready: Callable[[], None]) -> None:
    """Open every controller, mount, call `ready`, serve until unmount or signal.
    A failure comes out as itself, not in the exception groups of the nurseries
    it crossed (the command line reports it)."""
    try:
        await _serve(opts, ready)
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is group:
            raise
        raise sole from None


def sole_exception(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


async def _serve(opts: MountOptions, ready: Callable[[], None]) -> None:
    import pyfuse3
    import trio

    from . import fs
    from .backends import opened_all
    from .fs import interrupt
    from .fs.access import Access
    from .fs.budget import MOUNT

    # opened at once; the names follow the order of the command line
    async with opened_all(opts.devices) as ctrls:
        for ctrl, name in zip(ctrls, controller_names(ctrls), strict=True):
            ctrl.name = name
        interrupt.install()
        # catch the signals before the mount is visible: one sent right after must unmount
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            mounted = False
            try:
                # the FUSE loop, the signal watcher and the work requests leave behind
                async with trio.open_nursery() as nursery:
                    ops = fs.build(ctrls, nursery, opts.uid, opts.gid, umask=opts.umask,
                                   access=Access(opts.uid, opts.passthru, opts.others),
                                   max_buffer=opts.max_buffer or MOUNT)
                    try:
                        pyfuse3.init(ops, opts.mountpoint, opts.fuse_options())
                    except RuntimeError as e:
                        raise MountError(f"{opts.mountpoint}: mount failed ({e})") from None
                    mounted = True
                    nursery.start_soon(_fuse_main, nursery.cancel_scope)
                    nursery.start_soon(_watch_signals, signals, nursery.cancel_scope)
                    # a child's read: is FUSE_INTERRUPT reaching requests? (never a thread of
                    # ours: a daemon killed while it waits on its own mount could not exit)
                    await interrupt.confirm(os.path.join(opts.mountpoint, ctrls[0].name, "info"))
                    ready()
                    notify("READY=1", f"STATUS=serving {opts.mountpoint}: " + ", ".join(
                        f"{c.name} ({uri})" for c, uri in zip(ctrls, opts.devices)))
            finally:
                if mounted:
                    notify("STOPPING=1", f"STATUS=unmounting {opts.mountpoint}")
                    pyfuse3.close(unmount=True)


async def _fuse_main(scope: trio.CancelScope) -> None:
    import pyfuse3
    await pyfuse3.main(min_tasks=1, max_tasks=MAX_FUSE_TASKS)
    scope.cancel()       # unmounted from outside: stop the signal watcher too


async def _watch_signals(signals, scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("%s: unmounting", signal.Signals(signum).name)
        scope.cancel()
        return
