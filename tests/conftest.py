"""Shared test machinery: async tests run under trio; helpers to open sim controllers;
a watchdog for the whole run."""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import inspect
import os
import sys
import threading
from pathlib import Path

import pytest
import trio

from nvmefs.backends import opened

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "qemu-nvme-cli"


RUN_LIMIT = 45 * 60     # seconds: the whole run, well inside CI's 90 minutes


def _run_over() -> None:
    print(f"\ntest run still going after {RUN_LIMIT} s: every thread's stack, then exit",
          file=sys.stderr, flush=True)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(3)


def pytest_sessionstart(session):
    """A test that hangs where a signal cannot reach it (a read of a mount whose daemon
    never answers) would otherwise hold the run: end it, saying where everything was."""
    watchdog = threading.Timer(RUN_LIMIT, _run_over)
    watchdog.daemon = True
    watchdog.start()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests with trio.run (no plugin needed)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        trio.run(functools.partial(pyfuncitem.obj, **kwargs))
        return True
    return None


@contextlib.asynccontextmanager
async def controller(uri: str = "sim", index: int = 0):
    """An opened controller named nvme<index>, closed afterwards."""
    async with opened(uri, index) as ctrl:
        ctrl.name = f"nvme{index}"
        yield ctrl
