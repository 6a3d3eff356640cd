"""The FUSE request being answered: who asks, and FUSE_INTERRUPT (DESIGN §5).

A process blocked in a FUSE request cannot even be killed until the daemon
replies. When its caller gets a signal, the kernel sends FUSE_INTERRUPT for
the request; libfuse hands it to the function registered for that request
with `fuse_req_interrupt_func()`. pyfuse3 (3.5) registers none and keeps the
`fuse_req_t` to itself, and its read/write/release handlers are not even told
who asks. So this module:

- wraps pyfuse3's module-level `fuse_*_async` coroutines (pyfuse3's C
  callbacks look them up as module globals at each request), so a handler
  knows the `_Container` pyfuse3 made for its request;
- reads the `fuse_req_t` out of that container at an offset it learns on the
  first read and verifies: the container also holds the read's fh, offset and
  size, which must equal the handler's arguments at their fixed places around
  `req` (`confirm()`, at mount time, also checks that a read by a child
  process it starts shows that process as its caller);
- calls libfuse through cffi (ABI mode, the libfuse3 pyfuse3 itself uses):
  `fuse_req_ctx()` for the caller (uid, gid, pid of THIS request: the thread
  that reads, not the one that opened), and `fuse_req_interrupt_func()` with
  one callback for all requests, keyed by an integer. The callback runs on the
  trio thread, inside pyfuse3's session loop, and cancels the request's cancel
  scope; the handler answers EINTR. A request is deregistered before it is
  answered, and the callback acts only on keys still registered, so a late
  interrupt never touches a finished scope (libfuse itself drops the request
  from its list when it is answered).

If anything here does not hold (another pyfuse3 or libfuse), one warning is
logged and requests run without FUSE_INTERRUPT: `fs.waits` then looks at the
caller's pending signals (`signal_pending`) twice a second while it waits, the
caller being the request's where pyfuse3 tells it (open, lookup, ...) and the
opener's for read and write.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple

import trio

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0        # seconds the startup read may take before it is given up

_CDEF = """
typedef struct fuse_req *fuse_req_t;
struct fuse_ctx { uint32_t uid; uint32_t gid; int32_t pid; uint32_t umask; };
typedef void (*fuse_interrupt_func_t)(fuse_req_t req, void *data);
const struct fuse_ctx *fuse_req_ctx(fuse_req_t req);
void fuse_req_interrupt_func(fuse_req_t req, fuse_interrupt_func_t func, void *data);
"""

UNKNOWN, ACTIVE, FALLBACK = "unknown", "active", "fallback"


class Caller(NamedTuple):
    """Who made a request: uid, gid, the calling thread's id (0 if unknown), umask."""
    uid: int
    gid: int
    pid: int
    umask: int = 0


NOBODY = Caller(-1, -1, 0)

# set by the wrapped pyfuse3 coroutine for the request it runs: (name, pyfuse3 _Container)
_dispatched: ContextVar[tuple[str, Any] | None] = ContextVar("nvmefs_dispatched", default=None)
# the request a handler is answering
_current: ContextVar["Request | None"] = ContextVar("nvmefs_request", default=None)


def caller() -> Caller:
    """The caller of the FUSE request being handled. LookupError outside one."""
    request = _current.get()
    if request is None:
        raise LookupError("not inside a FUSE request")
    return request.caller


def interruptible() -> bool:
    """True if FUSE_INTERRUPT can reach the request being handled (it cancels it)."""
    request = _current.get()
    return request is not None and request.key != 0


def _caller_of(ctx) -> Caller:
    if ctx is None:
        return NOBODY
    if isinstance(ctx, Caller):
        return ctx
    return Caller(ctx.uid, ctx.gid, ctx.pid, getattr(ctx, "umask", 0))


class Request:
    """One FUSE request being handled (a context manager around the handler).

    It knows the request's caller (`caller()` inside it) and holds a cancel
    scope that the request's FUSE_INTERRUPT cancels. `ctx` is pyfuse3's
    RequestContext where the handler has one, else the opener's Caller;
    `read=(fh, offset, size)` lets a read teach the container's layout.
    `__exit__` returns True when it swallowed the cancellation of an interrupt:
    the handler then answers EINTR."""

    __slots__ = ("ctx", "read", "op", "req", "key", "caller", "scope", "interrupted", "_token")

    def __init__(self, ctx=None, read: tuple[int, int, int] | None = None):
        self.ctx, self.read = ctx, read
        self.op = "request"
        self.req = None
        self.key = 0
        self.interrupted = False

    def __enter__(self) -> "Request":
        dispatched = _dispatched.get()
        found = None
        if dispatched is not None:
            self.op, container = dispatched
            self.req = _hook.req_of(container, self.read)
            if self.req is not None:
                found = _hook.caller_of(self.req)
        self.caller = found or _caller_of(self.ctx)
        if found is not None and self.read is not None:
            _hook.saw_read(found)
        self.scope = trio.CancelScope()
        self.scope.__enter__()
        self._token = _current.set(self)
        if self.req is not None:
            _hook.register(self)        # calls interrupt() at once if already interrupted
        return self

    def __exit__(self, etype, exc, tb) -> bool:
        if self.key:
            _hook.unregister(self)      # before pyfuse3 answers (and libfuse frees req)
        _current.reset(self._token)
        swallowed = self.scope.__exit__(etype, exc, tb)
        return bool(swallowed) and self.interrupted

    def interrupt(self) -> None:
        self.interrupted = True
        self.scope.cancel()


@dataclass(frozen=True)
class InterruptStatistics:
    state: str              # unknown (not learned yet), active, fallback
    registered: int         # requests FUSE_INTERRUPT can reach now
    interrupts: int         # FUSE_INTERRUPTs that reached a registered request
    learned_offset: int     # where fuse_req_t sits in pyfuse3's container (-1: not known)


class _Hook:
    """The process's one link to pyfuse3's requests and libfuse."""

    def __init__(self) -> None:
        self.state = UNKNOWN
        self.installed = False
        self.ffi = self.lib = self.callback = None
        self.offset: int | None = None         # of fuse_req_t in the container
        self.container_type: type | None = None
        self.registered: dict[int, Request] = {}
        self.keys = itertools.count(1)
        self.interrupts = 0
        self.thread = 0                         # the trio thread's ident
        self.token: trio.lowlevel.TrioToken | None = None
        self.probing = False                    # the startup read is under way
        self.probe_seen: dict[int, Caller] = {} # callers of reads meanwhile, by pid

    # ---- setup

    def install(self) -> bool:
        if self.installed:
            return self.state != FALLBACK
        self.installed = True
        self.thread = threading.get_ident()
        self.token = trio.lowlevel.current_trio_token()
        try:
            self._load()
        except Exception as e:                  # noqa: BLE001: any failure means the fallback
            self.fall_back(f"cannot call libfuse3 through cffi ({e})")
            return False
        import pyfuse3
        names = [n for n in vars(pyfuse3) if n.startswith("fuse_") and n.endswith("_async")]
        if "fuse_read_async" not in names:
            self.fall_back("pyfuse3 has no module-level fuse_read_async to wrap")
            return False
        for name in names:
            setattr(pyfuse3, name, _dispatching(name, getattr(pyfuse3, name)))
        return True

    def _load(self) -> None:
        import cffi
        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        self.lib = ffi.dlopen(_libfuse_path())
        self.callback = ffi.callback("fuse_interrupt_func_t", _on_interrupt, onerror=_on_error)
        self.ffi = ffi

    def fall_back(self, why: str) -> None:
        if self.state != FALLBACK:
            log.warning("FUSE_INTERRUPT is not handled (%s): waits look at the caller's "
                        "pending signals instead", why)
        self.state = FALLBACK

    # ---- per request

    def req_of(self, container, read):
        """The fuse_req_t in pyfuse3's container, or None where it cannot be known."""
        if self.state == FALLBACK:
            return None
        if self.offset is None:
            if read is None or not self.learn(container, *read):
                return None
        if type(container) is not self.container_type:
            return None
        req = self.ffi.cast("fuse_req_t *", id(container) + self.offset)[0]
        return None if req == self.ffi.NULL else req

    def learn(self, container, fh: int, off: int, size: int) -> bool:
        """Find `req` in the container of a read: pyfuse3 declares it as
        `fuse_req_t req; int flags; mode_t mode; off_t off; size_t size; struct stat
        stat; uint64_t fh` (the last field), and a read sets req, off, size and fh."""
        kind = type(container)
        if kind.__name__ != "_Container" or not self.ffi:
            self.fall_back(f"pyfuse3 passed a {kind.__name__}, not its _Container")
            return False
        if size <= 0:
            return False                        # nothing to recognise; wait for another read
        n = kind.__basicsize__
        raw = bytes(self.ffi.buffer(self.ffi.cast("char *", id(container)), n))
        u64 = lambda at: int.from_bytes(raw[at:at + 8], sys.byteorder)  # noqa: E731
        if n < 48 or n % 8 or u64(n - 8) != fh:
            self.fall_back("the read's fh is not the last field of pyfuse3's _Container")
            return False
        pair = [at for at in range(24, n - 16, 8)
                if u64(at) == off and u64(at + 8) == size]
        if len(pair) > 1:
            return False                        # ambiguous; the next read will tell
        if not pair:
            self.fall_back("the read's offset and size are not in pyfuse3's _Container")
            return False
        at = pair[0] - 16                       # req, int flags, mode_t mode, off
        req = u64(at)
        if not req or req % 8:
            self.fall_back(f"no fuse_req_t at offset {at} of pyfuse3's _Container")
            return False
        self.offset, self.container_type = at, kind
        ctx = self.lib.fuse_req_ctx(self.ffi.cast("fuse_req_t", req))
        if ctx == self.ffi.NULL or ctx.pid <= 0:
            self.offset = self.container_type = None
            self.fall_back(f"libfuse gives no caller for the fuse_req_t at offset {at}")
            return False
        self.state = ACTIVE
        log.debug("learned fuse_req_t at offset %d of pyfuse3's _Container", at)
        return True

    def caller_of(self, req) -> Caller:
        ctx = self.lib.fuse_req_ctx(req)
        return Caller(ctx.uid, ctx.gid, ctx.pid, ctx.umask)

    def saw_read(self, who: Caller) -> None:
        if self.probing and len(self.probe_seen) < 64:
            self.probe_seen[who.pid] = who

    def register(self, request: Request) -> None:
        key = request.key = next(self.keys)
        self.registered[key] = request
        self.lib.fuse_req_interrupt_func(request.req, self.callback, self.ffi.cast("void *", key))

    def unregister(self, request: Request) -> None:
        self.lib.fuse_req_interrupt_func(request.req, self.ffi.NULL, self.ffi.NULL)
        del self.registered[request.key]
        request.key = 0

    def interrupted(self, req, data) -> None:
        request = self.registered.get(int(self.ffi.cast("uintptr_t", data)))
        if request is None or request.req != req:
            return                              # answered already: nothing to cancel
        self.interrupts += 1
        log.debug("%s of pid %d interrupted", request.op, request.caller.pid)
        if threading.get_ident() == self.thread:
            request.interrupt()
        else:                                   # not seen with pyfuse3 3.5: its loop is trio's
            self.token.run_sync_soon(request.interrupt)

    def statistics(self) -> InterruptStatistics:
        return InterruptStatistics(self.state, len(self.registered), self.interrupts,
                                   -1 if self.offset is None else self.offset)


_hook = _Hook()


def _dispatching(name: str, original):
    async def dispatch(container, *args):
        token = _dispatched.set((name.removeprefix("fuse_").removesuffix("_async"), container))
        try:
            await original(container, *args)
        finally:
            _dispatched.reset(token)
    dispatch.__name__ = dispatch.__qualname__ = name
    dispatch.__wrapped__ = original
    return dispatch


def _on_interrupt(req, data) -> None:
    _hook.interrupted(req, data)


def _on_error(etype, exc, tb) -> None:
    log.error("FUSE_INTERRUPT callback failed", exc_info=(etype, exc, tb))


def _libfuse_path() -> str:
    """The libfuse3 this process already has (pyfuse3's), else the soname."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith("libfuse3.so"):
                    return path
    except OSError:
        pass
    return "libfuse3.so.3"


def install() -> bool:
    """Hook pyfuse3 (once, from the trio thread, before it serves). False, with one
    warning, where this pyfuse3 or libfuse cannot be hooked: waits then look at
    the caller's pending signals."""
    return _hook.install()


def statistics() -> InterruptStatistics:
    return _hook.statistics()


async def confirm(path: str) -> bool:
    """Have a child process read `path` (a small file of the daemon's own mount) and
    check that the read arrives as that process's: the fuse_req_t found is the
    request's. False, with one warning, if it does not; True if requests are
    interruptible. The reader is never a thread of the daemon: a daemon killed while
    one of its own threads waits on its mount could not exit (that thread would wait
    for an answer only the dying daemon could give)."""
    if _hook.state == FALLBACK or not _hook.installed:
        return False
    _hook.probe_seen, _hook.probing = {}, True
    reader = None
    try:
        with trio.move_on_after(PROBE_TIMEOUT):
            reader = await trio.lowlevel.open_process(
                ["head", "-c", "1", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            await reader.wait()
    finally:
        _hook.probing = False
        if reader is not None and reader.returncode is None:
            reader.kill()           # this daemon answers its read, so it can go
            with trio.CancelScope(shield=True):
                await reader.wait()
    seen, _hook.probe_seen = _hook.probe_seen.get(reader.pid) if reader else None, {}
    if reader is None or reader.returncode != 0:
        log.info("could not read %s to confirm FUSE_INTERRUPT handling (%s); relying on "
                 "the first read's check", path,
                 "timed out" if reader is None else f"exit {reader.returncode}")
        return _hook.state == ACTIVE
    if _hook.state == FALLBACK:
        return False
    if seen is None or seen.uid != os.geteuid():
        _hook.fall_back(f"a read of {path} by process {reader.pid} did not arrive as its own")
        return False
    return True


def _mask(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[1], 16)
    return 0


def signal_pending(pid: int) -> bool:
    """True if thread `pid` (or its process) has a signal pending that it does not
    block. A thread or process that is gone has none: never EINTR for that."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return False
    pending = _mask(status, "SigPnd:") | _mask(status, "ShdPnd:")
    return bool(pending & ~_mask(status, "SigBlk:"))
