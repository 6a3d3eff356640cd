"""`<ctrl>/faults`: the simulator's fault injection, from a shell (sim controllers and the
vfio:sim model).

Reading lists the armed faults, one per line, in the syntax that arms them
(COUNT is what is left):

    KIND:QUEUE:OPCODE:COUNT[:ARG]      e.g.  status:io:0x02:3:READ_ERROR

Writing a line arms a fault; writing `clear` disarms them all;
`temperature:KELVIN` sets the composite temperature (a SMART / Health event
past a threshold: see `events`). A write may hold
several lines, carried out in order, all or nothing: a bad line fails the
write with EINVAL and changes nothing (ENOSPC: more faults than a controller
keeps). Writing needs the writer's passthru policy to be `all`, as `reset`
does. The syntax is `nvmefs.backends.sim.faults`.
"""

from __future__ import annotations

import errno

from pyfuse3 import FUSEError

from typing import Callable

from ..backends.base import Controller
from ..backends.sim.faults import FaultError, Faults, FaultsFull
from .nodes import ControlFile, Handle, Node, SnapshotHandle

MAX_WRITE = 64 * 1024       # bytes one write may hold: a control file, not a data path


class FaultsFile(ControlFile):
    """The control file over a sim controller's `Faults` (`SimController.faults`)."""

    def __init__(self, faults: Faults, set_temperature: Callable[[int], None],
                 name: str = "faults"):
        super().__init__(name)
        self.faults = faults
        self.set_temperature = set_temperature

    def text(self) -> bytes:
        return self.faults.describe().encode()

    def handle(self) -> Handle:
        return FaultsHandle(self.faults, self.set_temperature, self.text())


class FaultsHandle(SnapshotHandle):
    """A writable open: reads see the faults armed at open; each write() is whole
    lines (a trailing newline may be left out)."""

    def __init__(self, faults: Faults, set_temperature: Callable[[int], None], listing: bytes):
        super().__init__(listing)
        self.faults = faults
        self.set_temperature = set_temperature

    async def write(self, offset: int, data: bytes) -> int:
        if len(data) > MAX_WRITE:
            raise FUSEError(errno.EINVAL)
        try:
            conditions = self.faults.apply(data.decode("ascii"))
        except FaultsFull:
            raise FUSEError(errno.ENOSPC) from None
        except (FaultError, UnicodeDecodeError):
            raise FUSEError(errno.EINVAL) from None
        if "temperature" in conditions:
            self.set_temperature(conditions["temperature"])
        return len(data)


def sim_files(ctrl: Controller) -> list[Node]:
    """The files only a sim controller's directory has: `faults`."""
    faults = getattr(ctrl, "faults", None)
    return [FaultsFile(faults, ctrl.set_temperature)] if isinstance(faults, Faults) else []
