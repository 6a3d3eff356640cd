"""Shared test machinery: async tests run under trio; helpers to open sim controllers."""

from __future__ import annotations

import contextlib
import functools
import inspect
from pathlib import Path

import pytest
import trio

from nvmefs.backends import opened

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "qemu-nvme-cli"


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
