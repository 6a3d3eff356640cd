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
  one callback for all requests, keyed by an integer, only around a handler's
  waits (`armed`): a handler that answers at once costs no call into libfuse,
  nor a cancel scope. The callback runs on the
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

import errno
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
REAP_TIMEOUT = 1.0          # seconds to wait for that reader once it is killed

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

# (name, pyfuse3 _Container) of the request pyfuse3 is about to run: its worker task
# awaits the coroutine at once, so the handler's Request takes it (and clears it)
# before anything else runs. Every Request is made by a handler pyfuse3 dispatched,
# so a value left by one that needed no Request is replaced before it can be taken.
_dispatched: tuple[str, Any] | None = None
# the request a handler is answering
_current: ContextVar["Request | None"] = ContextVar("nvmefs_request", default=None)


def caller() -> Caller:
    """The caller of the FUSE request being handled. LookupError outside one."""
    request = _current.get()
    if request is None:
        raise LookupError("not inside a FUSE request")
    return request.caller


def learning() -> bool:
    """True while a read still has something to teach: where pyfuse3 keeps the
    request (the first read) or who reads (the startup check); such a read must
    be handled in a Request, even one served from memory."""
    return _hook.offset is None and _hook.state != FALLBACK or _hook.probing


def _caller_of(ctx) -> Caller:
    if ctx is None:
        return NOBODY
    if isinstance(ctx, Caller):
        return ctx
    return Caller(ctx.uid, ctx.gid, ctx.pid, getattr(ctx, "umask", 0))


_UNKNOWN = object()


class Request:
    """One FUSE request being handled (a context manager around the handler).

    It knows the request's caller (`caller()` inside it), found only when asked:
    `ctx` is pyfuse3's RequestContext where the handler has one (the request's
    own), else the opener's Caller, which libfuse's answer for this very
    request replaces. `read=(fh, offset, size)` lets a read teach the
    container's layout. Entering costs next to nothing: a handler that never
    waits is never registered with libfuse; `armed()` does that around waits."""

    __slots__ = ("ctx", "read", "op", "container", "_req", "_caller", "key", "scope",
                 "interrupted", "_token")

    def __init__(self, ctx=None, read: tuple[int, int, int] | None = None):
        self.ctx, self.read = ctx, read
        self.op = "request"
        self.container = None
        self._req = self._caller = _UNKNOWN
        self.key = 0
        self.scope: trio.CancelScope | None = None
        self.interrupted = False

    def __enter__(self) -> "Request":
        global _dispatched
        dispatched, _dispatched = _dispatched, None
        if dispatched is not None:
            self.op, self.container = dispatched
            if self.read is not None and (_hook.offset is None or _hook.probing) \
                    and self.req is not None:   # a read teaches the layout; the probe looks
                _hook.saw_read(self.caller)
        self._token = _current.set(self)
        return self

    def __exit__(self, etype, exc, tb) -> None:
        _current.reset(self._token)

    @property
    def req(self):
        """The request's fuse_req_t, or None where it cannot be known."""
        if self._req is _UNKNOWN:
            self._req = None if self.container is None else \
                _hook.req_of(self.container, self.read)
        return self._req

    @property
    def caller(self) -> Caller:
        if self._caller is _UNKNOWN:
            own = self.ctx is None or isinstance(self.ctx, Caller)
            req = self.req if own else None
            self._caller = _hook.caller_of(req) if req is not None else _caller_of(self.ctx)
        return self._caller

    def interrupt(self) -> None:
        self.interrupted = True
        if self.scope is not None:
            self.scope.cancel()


class armed:
    """Around a wait inside a handler: the request's FUSE_INTERRUPT cancels it, and
    the block raises InterruptedError (EINTR). `interruptible` says whether an
    interrupt can reach it at all (else waits watch the caller's signals). Nested
    blocks share the outer one; outside a request it does nothing."""

    __slots__ = ("request", "interruptible")

    def __enter__(self) -> "armed":
        request = _current.get()
        if request is None or request.scope is not None:
            self.request = None
            self.interruptible = request is not None and request.key != 0
            return self
        self.request = request
        request.scope = trio.CancelScope()
        request.scope.__enter__()
        if request.req is not None:
            _hook.register(request)         # calls interrupt() at once if already interrupted
        self.interruptible = request.key != 0
        return self

    def __exit__(self, etype, exc, tb) -> bool:
        request = self.request
        if request is None:
            return False
        if request.key:
            _hook.unregister(request)       # before pyfuse3 answers (and libfuse frees req)
        scope, request.scope = request.scope, None
        scope.__exit__(etype, exc, tb)
        if scope.cancelled_caught:          # only an interrupt cancels this scope
            raise InterruptedError(errno.EINTR, f"{request.op} interrupted")
        return False


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
    op = name.removeprefix("fuse_").removesuffix("_async")

    def dispatch(container, *args):
        global _dispatched
        _dispatched = (op, container)
        return original(container, *args)
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
            reader.kill()
            # Bounded even when shielded: a daemon stopping now no longer answers, and
            # the reader may be in close(), whose FLUSH not even SIGKILL ends; the
            # unmount that follows ends it.
            with trio.CancelScope(shield=True), trio.move_on_after(REAP_TIMEOUT):
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
