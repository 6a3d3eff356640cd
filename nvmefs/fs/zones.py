"""ns/N/zones: a zoned namespace's zones as JSON lines, read from the controller as
they are read (Zone Management Receive, sized to the read and bounded by MDTS), so
a namespace of any number of zones costs one report's worth of memory."""

from __future__ import annotations

import errno
import json

from pyfuse3 import FUSEError

from ..backends.base import Controller
from ..spec import commands as C
from ..spec import identify as ID
from ..spec import iocs
from ..spec import zones as Z
from .errors import check
from .nodes import File, Handle, wants_write

SHORTEST_LINE = 96          # bytes of the shortest zone line: a read of n bytes takes n / this zones
UNLIMITED_REPORT = 1 << 20  # the largest report asked of a controller with no MDTS


class ZonesHandle(Handle):
    """Reads go on from where the last one ended (the file cannot seek); each read that
    finds nothing left over asks for the zones after the last one reported."""
    nonseekable = True

    def __init__(self, ctrl: Controller, nsid: int, blocks: int, zone_blocks: int, ext: int):
        self.ctrl, self.nsid = ctrl, nsid
        self.blocks, self.zone_blocks, self.ext = blocks, zone_blocks, ext
        self.next = 0                   # SLBA of the next zone to report
        self.pending = b""              # lines made and not yet read
        self.limit = Z.zones_that_fit(ctrl.max_transfer or UNLIMITED_REPORT, ext)

    @property
    def done(self) -> bool:
        return self.next >= self.blocks

    async def read(self, offset: int, size: int) -> bytes:
        if not self.pending and not self.done:
            self.pending = await self._report(size)
        out, self.pending = self.pending[:size], self.pending[size:]
        return out

    async def _report(self, size: int) -> bytes:
        left = -(-(self.blocks - self.next) // self.zone_blocks)
        count = max(1, min(-(-size // SHORTEST_LINE), self.limit, left))
        length = Z.report_length(count, self.ext)
        cmd = C.zone_mgmt_recv(self.nsid, self.next, length,
                               Z.ZRA_EXTENDED if self.ext else Z.ZRA_REPORT)
        _, zones = Z.decode_report(check(await self.ctrl.io(cmd, data_in_len=length)), self.ext)
        lines = []
        for desc, ext in zones:
            if desc["zslba"] < self.next:      # a report must move on
                raise FUSEError(errno.EIO)
            lines.append(json.dumps(Z.zone_json(desc, ext), separators=(",", ":")) + "\n")
            self.next = desc["zslba"] + self.zone_blocks
        if not zones:
            self.next = self.blocks
        return "".join(lines).encode()


class ZonesFile(File):
    attr_timeout = 0.0

    def __init__(self, ctrl: Controller, nsid: int):
        super().__init__("zones")
        self.ctrl, self.nsid = ctrl, nsid

    async def open(self, flags: int, ctx) -> Handle:
        if wants_write(flags):
            raise FUSEError(errno.EACCES)
        ctrl, nsid = self.ctrl, self.nsid
        ns = ID.decode_id_ns(check(await ctrl.identify_ns(nsid)))
        raw = check(await ctrl.admin(C.identify(ID.CNS_NS_CS, nsid, csi=C.CSI_ZNS),
                                     data_in_len=ID.IDENTIFY_SIZE), unsupported_is_eopnotsupp=True)
        zns = iocs.decode_zns_id_ns(raw, {})     # all 64 formats: FLBAS picks one
        zone_blocks, ext = iocs.zone_geometry(zns, ID.lba_format_index(ns["flbas"]))
        if not zone_blocks:
            raise FUSEError(errno.EIO)      # a zoned namespace without a zone size
        return ZonesHandle(ctrl, nsid, ns["nsze"], zone_blocks, ext)
