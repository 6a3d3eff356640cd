"""Backends behind one async interface (base.Controller), chosen by URI.

  sim[:options]            the simulated controller (sim.config documents options)
  /dev/nvmeX, linux:...    the Linux kernel's passthrough interfaces (imported lazily)
"""

from __future__ import annotations

import importlib

from .base import Controller, ControllerFatal, ControllerGone, Request, TransportError, Unsupported

# scheme -> "module:Class"; modules needing the compiled ffi are imported only when used
REGISTRY = {
    "sim": "nvmefs.backends.sim:SimController",
}


def scheme_of(uri: str) -> str:
    if uri.startswith("/dev/"):
        return "linux"
    return uri.partition(":")[0]


def controller_class(uri: str) -> type[Controller]:
    scheme = scheme_of(uri)
    if scheme not in REGISTRY:
        raise ValueError(f"unknown device {uri!r}: expected one of "
                         + ", ".join(f"{s}[:...]" for s in REGISTRY))
    module, _, name = REGISTRY[scheme].partition(":")
    return getattr(importlib.import_module(module), name)


async def open_controller(uri: str, index: int = 0) -> Controller:
    """Create, start and identify the controller a URI names."""
    ctrl = controller_class(uri)(uri, index)
    try:
        return await ctrl.start()
    except BaseException:
        await ctrl.aclose()
        raise


__all__ = ["Controller", "ControllerFatal", "ControllerGone", "Request", "TransportError",
           "Unsupported", "REGISTRY", "open_controller", "controller_class", "scheme_of"]
