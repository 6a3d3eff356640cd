"""Transport failures: the only exceptions a backend raises (a non-zero NVMe status
is a returned Completion). Each carries the errno a file caller gets."""

from __future__ import annotations

import errno


class TransportError(Exception):
    """The command could not be carried to or from the controller."""
    errno = errno.EIO

    def __init__(self, message: str, err: int | None = None):
        super().__init__(message)
        if err is not None:
            self.errno = err


class ControllerGone(TransportError):
    """The controller was removed (surprise removal, unbound, link down)."""
    errno = errno.ENODEV


class ControllerFatal(TransportError):
    """The controller reports Controller Fatal Status (CSTS.CFS) until reset."""
    errno = errno.EIO


class Unsupported(TransportError):
    """The backend cannot do this at all (e.g. Linux without the compiled extension)."""
    errno = errno.EOPNOTSUPP
