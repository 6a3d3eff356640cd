"""Backends behind one async interface (base.Controller), chosen by URI.

  sim[:options]                    the simulated controller (sim.config documents options)
  /dev/nvmeX, linux:/dev/nvmeX     the Linux kernel's passthrough interfaces (backends.linux,
                                   imported only when used: it needs the compiled extension)
  vfio:BDF, vfio:sim[:options]     nvmefs's own PCIe driver on a device bound to vfio-pci, or
                                   on the register-level model of the sim (backends.vfio)
  tcp://HOST[:PORT]/SUBNQN         an NVMe/TCP target (backends.tcp)
"""

from __future__ import annotations

import contextlib
import importlib
from typing import AsyncIterator, Sequence

import trio

from .base import Controller, Request
from .errors import ControllerFatal, ControllerGone, TransportError, Unsupported

OPEN_TIMEOUT = 120.0       # seconds to open and identify a controller (several open at once)

# scheme -> "module:Class"
REGISTRY = {
    "sim": "nvmefs.backends.sim:SimController",
    "linux": "nvmefs.backends.linux:LinuxController",
    "vfio": "nvmefs.backends.vfio.backend:VfioBackend",
    "tcp": "nvmefs.backends.tcp:TcpController",
}


def scheme_of(uri: str) -> str:
    if uri.startswith("/dev/"):
        return "linux"
    return uri.partition(":")[0]


def controller_class(uri: str) -> type[Controller]:
    scheme = scheme_of(uri)
    if scheme not in REGISTRY:
        raise ValueError(f"unknown device {uri!r}: expected sim[:key=value,...], /dev/nvmeN, "
                         "vfio:BDF or tcp://HOST/NQN")
    module, _, name = REGISTRY[scheme].partition(":")
    return getattr(importlib.import_module(module), name)


@contextlib.asynccontextmanager
async def opened(uri: str, index: int = 0) -> AsyncIterator[Controller]:
    """The controller a URI names, started and identified, with a nursery for its
    background tasks (completion reapers); closed on exit."""
    async with opened_all([uri], index) as (ctrl,):
        yield ctrl


@contextlib.asynccontextmanager
async def opened_all(uris: Sequence[str], first: int = 0) -> AsyncIterator[list[Controller]]:
    """The controllers `uris` name (indexes from `first` on), in that order, started and
    identified concurrently, their background tasks in one nursery; all closed on exit.
    If one fails to open, the others are closed and its error is raised (of several,
    the first in `uris`)."""
    ctrls = [controller_class(uri)(uri, first + i) for i, uri in enumerate(uris)]
    async with trio.open_nursery() as nursery:
        try:
            await _start_all(ctrls, nursery)
            yield ctrls
        finally:
            async with trio.open_nursery() as closing:
                for ctrl in ctrls:
                    closing.start_soon(ctrl.aclose)
            nursery.cancel_scope.cancel()


async def _start_all(ctrls: Sequence[Controller], nursery: trio.Nursery) -> None:
    """Start every controller at once, each within OPEN_TIMEOUT. The first failure
    cancels the starts still under way; of the failures, the one of the first
    controller in order is raised, alone (never a group of several)."""
    errors: list[Exception | None] = [None] * len(ctrls)

    async def start(i: int) -> None:
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                await ctrls[i].start(nursery)
        except Exception as e:
            errors[i] = e
            starting.cancel_scope.cancel()

    async with trio.open_nursery() as starting:
        for i in range(len(ctrls)):
            starting.start_soon(start, i)
    for error in errors:
        if error is not None:
            raise error


def local_devices() -> list[str]:
    """This machine's controllers, as `nvmefs list` shows them: the kernel's, then PCI
    functions bound to vfio-pci (empty where there are none)."""
    from . import sysfs
    from .vfio import bind
    return [c.dev for c in sysfs.controllers()] + [
        f.uri for f in bind.pci_nvme_functions() if f.driver == bind.VFIO_DRIVER]


__all__ = ["Controller", "ControllerFatal", "ControllerGone", "Request", "TransportError",
           "Unsupported", "REGISTRY", "opened", "opened_all", "controller_class", "scheme_of",
           "local_devices"]
