"""From what the controller said to the errno a file operation returns."""

from __future__ import annotations

import errno

from pyfuse3 import FUSEError

from ..spec import status as S
from ..spec.queue import Completion

# A controller that does not know a log page or feature answers one of these.
UNSUPPORTED = {S.code(S.INVALID_OPCODE), S.code(S.INVALID_FIELD), S.code(S.INVALID_LOG_PAGE)}


def check(cpl: Completion, unsupported_is_eopnotsupp: bool = False) -> bytes:
    """The completion's data, or FUSEError with the status's errno."""
    if cpl.ok:
        return cpl.data
    if unsupported_is_eopnotsupp and S.code(cpl.status) in UNSUPPORTED:
        raise FUSEError(errno.EOPNOTSUPP)
    raise FUSEError(S.errno_of(cpl.status))
