"""One request's context (fs.operations.handling, fs.interrupt) and bounded waits
(fs.waits), without a mount: what leaves a handler, who the caller is, when a
wait ends. The real FUSE_INTERRUPT is tested through a mount (tests/mount)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

import pytest
import trio
from pyfuse3 import FUSEError

from nvmefs.backends.base import ControllerGone
from nvmefs.fs import interrupt
from nvmefs.fs.operations import handling
from nvmefs.fs.waits import Waiters
from nvmefs.mount import _unescape, mounts_at


class Ctx:
    uid, gid, pid, umask = 1000, 100, 4242, 0o022


@pytest.mark.parametrize("raised,expected", [
    (ControllerGone("gone"), errno.ENODEV),
    (trio.TooSlowError(), errno.ETIMEDOUT),
    (PermissionError(errno.EACCES, "no"), errno.EACCES),
    (ValueError("a bug"), errno.EIO),
    (FUSEError(errno.ENOENT), errno.ENOENT),
])
async def test_only_fuse_errors_leave_a_handler(raised, expected):
    with pytest.raises(FUSEError) as e:
        with handling(Ctx()):
            await trio.lowlevel.checkpoint()
            raise raised
    assert e.value.errno == expected


async def test_the_caller_is_known_inside_a_request_only():
    with pytest.raises(LookupError):
        interrupt.caller()
    with handling(Ctx()):
        assert interrupt.caller() == interrupt.Caller(1000, 100, 4242, 0o022)
        with handling(interrupt.Caller(7, 8, 9)):        # an opener's, for read and write
            assert interrupt.caller().pid == 9
        assert interrupt.caller().uid == 1000
        with interrupt.armed() as armed:
            assert not armed.interruptible                  # no pyfuse3 request behind it
    with pytest.raises(LookupError):
        interrupt.caller()


async def test_an_interrupt_answers_eintr_only_if_it_cancelled_the_handler():
    async def handler(request_seen: list, wait: float):
        with handling(Ctx()) as request:
            request_seen.append(request)
            await trio.sleep(wait)
            return "answer"

    seen: list = []
    async with trio.open_nursery() as nursery:
        result = []

        async def run():
            try:
                result.append(await handler(seen, 10))
            except FUSEError as e:
                result.append(e.errno)
        nursery.start_soon(run)
        await trio.sleep(0.01)
        seen[0].interrupt()
    assert result == [errno.EINTR]

    done: list = []
    answer = await handler(done, 0)
    done[0].interrupt()                 # a late interrupt: the request has its answer
    assert answer == "answer"


async def test_a_handler_that_does_not_wait_arms_only_its_waits():
    """waits=False: no cancel scope around the handler; `armed()` makes one around
    the wait it guards, and an interrupt there answers EINTR."""
    seen: list = []

    async def handler(wait: float):
        with handling(Ctx(), waits=False) as request:
            seen.append(request)
            assert request.scope is None
            with interrupt.armed():
                assert request.scope is not None
                with interrupt.armed():                     # nested: the outer one
                    await trio.sleep(wait)
            assert request.scope is None
            return "answer"

    results: list = []

    async def run():
        try:
            results.append(await handler(10))
        except FUSEError as e:
            results.append(e.errno)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(0.01)
        seen[0].interrupt()
    assert results == [errno.EINTR]
    assert await handler(0) == "answer"


async def test_a_cancellation_of_the_daemon_is_not_eintr():
    with trio.CancelScope() as outer:
        with handling(Ctx()):
            outer.cancel()
            await trio.sleep(10)
    assert outer.cancelled_caught


async def test_waiters_wait_for_the_event_without_polling():
    waiters = Waiters()
    state = {"ready": False, "event": trio.Event()}

    async def change():
        await trio.sleep(0.05)
        state["ready"] = True
        state["event"].set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change)
        with handling(Ctx()):
            await waiters.wait_until(lambda: state["ready"], lambda: state["event"], 5)
    stats = waiters.statistics()
    assert (stats.waiting, stats.most_waiting, stats.timed_out) == (0, 1, 0)


async def test_waiters_time_out_and_refuse_beyond_their_bound():
    waiters = Waiters(max_waiters=2)
    never = trio.Event()
    with handling(Ctx()):
        with pytest.raises(FUSEError) as e:
            await waiters.wait_until(lambda: False, lambda: never, 0.05)
    assert e.value.errno == errno.ETIMEDOUT

    refused = []
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(waiters.wait_until, lambda: False, lambda: never, 10)
        await trio.sleep(0.01)
        try:
            await waiters.wait_until(lambda: False, lambda: never, 10)
        except FUSEError as err:
            refused.append(err.errno)
        assert waiters.statistics().waiting == 2
        nursery.cancel_scope.cancel()
    assert refused == [errno.EAGAIN]
    assert waiters.statistics().refused == 1


async def test_without_fuse_interrupt_a_wait_ends_on_the_callers_pending_signal_only():
    waiters = Waiters()
    never = trio.Event()
    sleeper = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)        # a stopped process keeps SIGTERM pending
        with handling(interrupt.Caller(0, 0, sleeper.pid)):
            start = time.monotonic()
            with pytest.raises(FUSEError) as e:
                await waiters.wait_until(lambda: False, lambda: never, 0.7)
            assert e.value.errno == errno.ETIMEDOUT       # nothing pending: no EINTR
            os.kill(sleeper.pid, signal.SIGTERM)
            start = time.monotonic()
            with pytest.raises(FUSEError) as e:
                await waiters.wait_until(lambda: False, lambda: never, 10)
            assert e.value.errno == errno.EINTR and time.monotonic() - start < 1
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    gone = sleeper.pid                                   # reaped: no such process
    with handling(interrupt.Caller(0, 0, gone)):
        with pytest.raises(FUSEError) as e:
            await waiters.wait_until(lambda: False, lambda: never, 0.6)
    assert e.value.errno == errno.ETIMEDOUT


def test_mountinfo_names_are_unescaped():
    assert _unescape(rb"/tmp/a\040b\011c\012d\134e") == b"/tmp/a b\tc\nd\\e"
    assert _unescape("/tmp/é".encode()) == "/tmp/é".encode()
    assert mounts_at("/")
