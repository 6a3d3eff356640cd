"""From what the controller said to the errno a file operation returns."""

from __future__ import annotations

import errno

from pyfuse3 import FUSEError

from ..spec import status as S
from ..spec.queue import Completion

# A controller that does not know a log page or feature answers one of these.
UNSUPPORTED = {S.INVALID_OPCODE & 0x7FF, S.INVALID_FIELD & 0x7FF, S.INVALID_LOG_PAGE & 0x7FF}


def check(cpl: Completion, unsupported_is_eopnotsupp: bool = False) -> bytes:
    """The completion's data, or FUSEError with the status's errno."""
    if cpl.ok:
        return cpl.data
    if unsupported_is_eopnotsupp and cpl.status & 0x7FF in UNSUPPORTED:
        raise FUSEError(errno.EOPNOTSUPP)
    raise FUSEError(S.errno_of(cpl.status))
