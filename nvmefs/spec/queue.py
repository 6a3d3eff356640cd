"""Submission and completion queue entries (NVMe Base 2.0 §4.2, §4.6).

`Command` is the 64-byte SQE, `Completion` the 16-byte CQE plus the data (and
separate metadata) the command returned. Status is kept in the 15-bit form Linux and libnvme use:
SC bits 7:0, SCT 10:8, CRD 12:11, More 13, DNR 14 (the CQE's DW3[31:17]).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

SQE_SIZE = 64
CQE_SIZE = 16

# opcode flags cid nsid cdw2 cdw3 mptr prp1 prp2 cdw10..cdw15 (Figure 88)
SQE_LAYOUT = struct.Struct("<BBHIIIQQQ6I")
# dw0 dw1 sqhd sqid cid status|phase (Figure 90)
CQE_LAYOUT = struct.Struct("<IIHHHH")
assert SQE_LAYOUT.size == SQE_SIZE and CQE_LAYOUT.size == CQE_SIZE

FUSE_MASK = 0x03       # CDW0 bits 9:8, flags bits 1:0
PSDT_MASK = 0xC0       # CDW0 bits 15:14, flags bits 7:6


class Command(NamedTuple):
    opcode: int
    nsid: int = 0
    cdw10: int = 0
    cdw11: int = 0
    cdw12: int = 0
    cdw13: int = 0
    cdw14: int = 0
    cdw15: int = 0
    cdw2: int = 0
    cdw3: int = 0
    flags: int = 0
    cid: int = 0
    mptr: int = 0
    prp1: int = 0
    prp2: int = 0

    def encode(self) -> bytes:
        return SQE_LAYOUT.pack(self.opcode, self.flags, self.cid, self.nsid, self.cdw2, self.cdw3,
                         self.mptr, self.prp1, self.prp2, self.cdw10, self.cdw11, self.cdw12,
                         self.cdw13, self.cdw14, self.cdw15)

    @classmethod
    def decode(cls, buf: bytes | memoryview) -> "Command":
        (opcode, flags, cid, nsid, cdw2, cdw3, mptr, prp1, prp2,
         c10, c11, c12, c13, c14, c15) = SQE_LAYOUT.unpack_from(buf)
        return cls(opcode, nsid, c10, c11, c12, c13, c14, c15, cdw2, cdw3, flags, cid, mptr,
                   prp1, prp2)

    def with_cid(self, cid: int) -> "Command":
        return from_fields(Command, self[:_CID] + (cid,) + self[_CID + 1:])


# from_fields(Cls, (every field, in order)): a NamedTuple made without the keyword
# handling of its __new__ (a hot path's Command, Completion, PassthruRequest)
from_fields = tuple.__new__
_CID = Command._fields.index("cid")

# Status field parts (Figure 92)
SC_MASK, SCT_SHIFT, SCT_MASK = 0xFF, 8, 0x7
CRD_SHIFT, CRD_MASK, MORE, DNR = 11, 0x3, 1 << 13, 1 << 14


def make_status(sct: int, sc: int, dnr: bool = False, more: bool = False, crd: int = 0) -> int:
    return (sc & SC_MASK) | (sct & SCT_MASK) << SCT_SHIFT | (crd & CRD_MASK) << CRD_SHIFT \
        | (MORE if more else 0) | (DNR if dnr else 0)


class Completion(NamedTuple):
    status: int = 0           # 15-bit status (no phase)
    dw0: int = 0
    dw1: int = 0
    sqhd: int = 0
    sqid: int = 0
    cid: int = 0
    data: bytes = b""         # data in, as the command returned it
    metadata: bytes = b""     # metadata in (a separate buffer, MPTR), as the command returned it

    @property
    def sc(self) -> int:
        return self.status & SC_MASK

    @property
    def sct(self) -> int:
        return self.status >> SCT_SHIFT & SCT_MASK

    @property
    def crd(self) -> int:
        return self.status >> CRD_SHIFT & CRD_MASK

    @property
    def more(self) -> bool:
        return bool(self.status & MORE)

    @property
    def dnr(self) -> bool:
        return bool(self.status & DNR)

    @property
    def ok(self) -> bool:
        return self.sc == 0 and self.sct == 0

    def encode(self, phase: int = 1, cid: int | None = None) -> bytes:
        """The 16-byte CQE; `cid` in place of the completion's own."""
        return CQE_LAYOUT.pack(self.dw0, self.dw1, self.sqhd, self.sqid,
                               self.cid if cid is None else cid,
                               (self.status << 1 | phase & 1) & 0xFFFF)

    @classmethod
    def decode(cls, buf: bytes | memoryview, data: bytes = b"",
               metadata: bytes = b"") -> "Completion":
        dw0, dw1, sqhd, sqid, cid, sf = CQE_LAYOUT.unpack_from(buf)
        return cls(sf >> 1, dw0, dw1, sqhd, sqid, cid, data, metadata)
