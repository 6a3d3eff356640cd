"""NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0): a sans-IO codec.

One `Connection` per TCP connection and side ("host" or "controller"), as h11
does it: bytes in (`receive_data`), PDUs out (`next_pdu`, which returns
NEED_DATA until a whole PDU is there), and the bytes of a PDU to send
(`send`). The header and data digests are CRC32C, computed by the function the
caller gives (a maintained library), so this module stays standard library
only. A PDU that breaks the protocol raises `ProtocolError` with the Fatal
Error Status and offset a Termination Request carries (§3.6.2.4).
"""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Union

from .queue import Command

# PDU types (§3.6.2, Figure 15)
IC_REQ, IC_RESP, H2C_TERM_REQ, C2H_TERM_REQ = 0x00, 0x01, 0x02, 0x03
CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = 0x04, 0x05, 0x06, 0x07, 0x09
# Common header flags (Figure 16)
HDGSTF, DDGSTF, DATA_LAST, DATA_SUCCESS = 1 << 0, 1 << 1, 1 << 2, 1 << 3
# ICReq/ICResp DGST field: the digests asked for and granted
DGST_HEADER, DGST_DATA = 1 << 0, 1 << 1
# Termination Request FES (Figure 26)
FES_INVALID_HEADER, FES_SEQUENCE, FES_HEADER_DIGEST, FES_DATA_RANGE = 0x01, 0x02, 0x03, 0x04
FES_LIMIT_EXCEEDED, FES_UNSUPPORTED = 0x05, 0x06
# SGL descriptor types in a command's DPTR (Base 2.0 §4.1.2): type << 4 | subtype
SGL_IN_CAPSULE = 0x01           # Data Block, Offset: the data follows the command in its capsule
SGL_TRANSPORT = 0x5A            # Transport SGL Data Block: C2HData, or H2CData after R2T
PSDT_SGL = 0x40                 # CDW0 flags bits 7:6 = 01b: SGLs for data

COMMON = struct.Struct("<BBBBI")        # type, flags, hlen, pdo, plen
DIGEST = struct.Struct("<I")
IC = struct.Struct("<HBBI112x")         # pfv, hpda/cpda, dgst, maxr2t/maxh2cdata
DATA = struct.Struct("<HHII4x")         # cccid, ttag, offset, length (H2C/C2HData, R2T)
TERM = struct.Struct("<HI10x")          # fes, fei; the PDU header that caused it follows
HLEN = {IC_REQ: 128, IC_RESP: 128, H2C_TERM_REQ: 24, C2H_TERM_REQ: 24, CAPSULE_CMD: 72,
        CAPSULE_RESP: 24, H2C_DATA: 24, C2H_DATA: 24, R2T: 24}
RECEIVES = {"host": {IC_RESP, C2H_TERM_REQ, CAPSULE_RESP, C2H_DATA, R2T},
            "controller": {IC_REQ, H2C_TERM_REQ, CAPSULE_CMD, H2C_DATA}}
TERMS = {H2C_TERM_REQ, C2H_TERM_REQ}
PLAIN = {IC_REQ, IC_RESP} | TERMS   # PDUs without digests (§3.6.2.2); a TermReq's data is the
MAX_TERM_HEADER = 152               # bad PDU's header, at most this much, right after its own
NEED_DATA = object()


class ICReq(NamedTuple):
    pfv: int = 0
    hpda: int = 0               # 0's based dwords the host wants C2H data aligned to
    dgst: int = 0
    maxr2t: int = 0             # 0's based R2Ts outstanding per command


class ICResp(NamedTuple):
    pfv: int = 0
    cpda: int = 0               # 0's based dwords the controller wants H2C data aligned to
    dgst: int = 0
    maxh2cdata: int = 0         # bytes one H2CData PDU may carry


class CapsuleCmd(NamedTuple):
    sqe: bytes                  # 64 bytes
    data: bytes = b""           # in-capsule data


class CapsuleResp(NamedTuple):
    cqe: bytes                  # 16 bytes


class H2CData(NamedTuple):
    cccid: int
    ttag: int
    offset: int
    data: bytes
    last: bool = True


class C2HData(NamedTuple):
    cccid: int
    offset: int
    data: bytes
    last: bool = True
    success: bool = False       # no CapsuleResp follows: the command succeeded
    digest_ok: bool = True


class R2TPdu(NamedTuple):
    cccid: int
    ttag: int
    offset: int
    length: int


class TermReq(NamedTuple):
    kind: int                   # H2C_TERM_REQ or C2H_TERM_REQ
    fes: int
    fei: int = 0                # the offset of the bad field, or the bad value
    header: bytes = b""         # the header of the PDU that caused it


Pdu = Union[ICReq, ICResp, CapsuleCmd, CapsuleResp, H2CData, C2HData, R2TPdu, TermReq]


class ProtocolError(Exception):
    """A PDU the other side must be told about with a Termination Request."""

    def __init__(self, fes: int, fei: int, message: str, header: bytes = b""):
        super().__init__(message)
        self.fes, self.fei, self.header = fes, fei, header


def transport_sgl(cmd: Command, length: int) -> Command:
    """DPTR for data moved by C2HData, or by H2CData after R2T."""
    return cmd._replace(flags=cmd.flags | PSDT_SGL, prp1=0, prp2=length | SGL_TRANSPORT << 56)


def in_capsule_sgl(cmd: Command, length: int) -> Command:
    """DPTR for data carried in the command capsule (offset 0 of it)."""
    return cmd._replace(flags=cmd.flags | PSDT_SGL, prp1=0, prp2=length | SGL_IN_CAPSULE << 56)


class Connection:
    """One side of one NVMe/TCP connection: framing, digests, the IC exchange."""

    def __init__(self, role: str, crc32c: Callable[[bytes], int] | None = None,
                 max_data: int = 1 << 20):
        if role not in RECEIVES:
            raise ValueError(f"role is host or controller, not {role!r}")
        self.role = role
        self.crc32c = crc32c
        self.max_data = max_data        # the largest data one received PDU may carry
        self.hdgst = self.ddgst = False
        self.send_align = 4             # bytes data sent is aligned to in its PDU (HPDA/CPDA)
        self.ready = False              # the IC exchange is done
        self._buf = bytearray()

    def negotiated(self, ic: ICReq | ICResp) -> None:
        """Apply what the IC exchange settled (the ICResp on both sides, and the
        host's ICReq at the controller for its HPDA)."""
        if isinstance(ic, ICResp):
            self.hdgst, self.ddgst = bool(ic.dgst & DGST_HEADER), bool(ic.dgst & DGST_DATA)
            if (self.hdgst or self.ddgst) and self.crc32c is None:
                raise ValueError("digests need a crc32c function")
            if self.role == "host":
                self.send_align = (ic.cpda + 1) * 4
            self.ready = True
        elif self.role == "controller":
            self.send_align = (ic.hpda + 1) * 4

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_pdu(self) -> Pdu | object:
        """The next whole PDU, or NEED_DATA. ProtocolError for one that breaks the protocol."""
        buf = self._buf
        if len(buf) < COMMON.size:
            return NEED_DATA
        kind, flags, hlen, pdo, plen = COMMON.unpack_from(buf)
        self._check_header(kind, hlen, plen)
        if len(buf) < plen:
            return NEED_DATA
        raw = bytes(buf[:plen])
        del buf[:plen]
        return self._decode(kind, flags, hlen, pdo, plen, raw)

    def _check_header(self, kind: int, hlen: int, plen: int) -> None:
        head = bytes(self._buf[:COMMON.size])
        if kind not in RECEIVES[self.role]:
            raise ProtocolError(FES_INVALID_HEADER, 0, f"PDU type {kind:#x} is not one a "
                                f"{self.role} receives", head)
        if kind not in TERMS and (kind in (IC_REQ, IC_RESP)) == self.ready:
            raise ProtocolError(FES_SEQUENCE, 0, "an IC PDU after the exchange, or another PDU "
                                "before it", head)
        if hlen != HLEN[kind]:
            raise ProtocolError(FES_INVALID_HEADER, 2, f"HLEN {hlen} for PDU type {kind:#x}, "
                                f"expected {HLEN[kind]}", head)
        digests = 4 * (self.hdgst + self.ddgst)
        if not hlen <= plen <= hlen + digests + 4 * 32 + self.max_data:
            raise ProtocolError(FES_INVALID_HEADER, 4, f"PLEN {plen} for a PDU of type "
                                f"{kind:#x}", head)

    def _decode(self, kind: int, flags: int, hlen: int, pdo: int, plen: int, raw: bytes) -> Pdu:
        header = raw[:hlen]
        if kind in TERMS:
            return _DECODE[kind](header, flags, raw[hlen:], True)
        end = hlen
        if self.hdgst and kind not in PLAIN:
            if not flags & HDGSTF or plen < hlen + 4:
                raise ProtocolError(FES_INVALID_HEADER, 1, "no header digest", header)
            if DIGEST.unpack_from(raw, hlen)[0] != self.crc32c(header):
                raise ProtocolError(FES_HEADER_DIGEST, 0, "header digest mismatch", header)
            end += 4
        data, digest_ok = b"", True
        if plen > end:
            ddgst = 4 if self.ddgst and flags & DDGSTF else 0
            if not end <= pdo <= plen - ddgst:
                raise ProtocolError(FES_INVALID_HEADER, 3, f"PDO {pdo} outside the PDU", header)
            data = raw[pdo:plen - ddgst]
            if ddgst:
                digest_ok = DIGEST.unpack_from(raw, plen - 4)[0] == self.crc32c(data)
        return _DECODE[kind](header, flags, data, digest_ok)

    # ------------------------------------------------------------------ sending

    def send(self, pdu: Pdu) -> bytes:
        kind, flags, specific, data = _ENCODE[type(pdu)](pdu)
        hlen = COMMON.size + len(specific)
        if kind in TERMS:
            return COMMON.pack(kind, 0, hlen, 0, hlen + len(data)) + specific + data
        digests = kind not in PLAIN
        hd = 4 if self.hdgst and digests else 0
        pdo = 0
        pad = b""
        if data:
            pdo = -(-(hlen + hd) // self.send_align) * self.send_align
            pad = bytes(pdo - hlen - hd)
        dd = 4 if self.ddgst and digests and data else 0
        flags |= (HDGSTF if hd else 0) | (DDGSTF if dd else 0)
        plen = (pdo or hlen + hd) + len(data) + dd
        header = COMMON.pack(kind, flags, hlen, pdo, plen) + specific
        parts = [header]
        if hd:
            parts.append(DIGEST.pack(self.crc32c(header)))
        if data:
            parts += [pad, data]
            if dd:
                parts.append(DIGEST.pack(self.crc32c(data)))
        return b"".join(parts)


def _c2h(fields: tuple[int, int, int, int], flags: int, data: bytes, ok: bool) -> C2HData:
    cccid, _, offset, _ = fields
    return C2HData(cccid, offset, data, bool(flags & DATA_LAST), bool(flags & DATA_SUCCESS), ok)


def _term_decode(kind: int):
    def decode(h: bytes, flags: int, data: bytes, ok: bool) -> TermReq:
        fes, fei = TERM.unpack_from(h, 8)
        return TermReq(kind, fes, fei, data)
    return decode


_DECODE = {
    IC_REQ: lambda h, f, d, ok: ICReq(*IC.unpack_from(h, 8)),
    IC_RESP: lambda h, f, d, ok: ICResp(*IC.unpack_from(h, 8)),
    CAPSULE_CMD: lambda h, f, d, ok: CapsuleCmd(h[8:72], d),
    CAPSULE_RESP: lambda h, f, d, ok: CapsuleResp(h[8:24]),
    H2C_DATA: lambda h, f, d, ok: H2CData(*DATA.unpack_from(h, 8)[:3], d, bool(f & DATA_LAST)),
    C2H_DATA: lambda h, f, d, ok: _c2h(DATA.unpack_from(h, 8), f, d, ok),
    R2T: lambda h, f, d, ok: R2TPdu(*DATA.unpack_from(h, 8)),
    H2C_TERM_REQ: _term_decode(H2C_TERM_REQ),
    C2H_TERM_REQ: _term_decode(C2H_TERM_REQ),
}

_ENCODE = {
    ICReq: lambda p: (IC_REQ, 0, IC.pack(p.pfv, p.hpda, p.dgst, p.maxr2t), b""),
    ICResp: lambda p: (IC_RESP, 0, IC.pack(p.pfv, p.cpda, p.dgst, p.maxh2cdata), b""),
    CapsuleCmd: lambda p: (CAPSULE_CMD, 0, p.sqe, p.data),
    CapsuleResp: lambda p: (CAPSULE_RESP, 0, p.cqe, b""),
    H2CData: lambda p: (H2C_DATA, DATA_LAST if p.last else 0,
                        DATA.pack(p.cccid, p.ttag, p.offset, len(p.data)), p.data),
    C2HData: lambda p: (C2H_DATA, (DATA_LAST if p.last else 0) |
                        (DATA_SUCCESS if p.success else 0),
                        DATA.pack(p.cccid, 0, p.offset, len(p.data)), p.data),
    R2TPdu: lambda p: (R2T, 0, DATA.pack(p.cccid, p.ttag, p.offset, p.length), b""),
    TermReq: lambda p: (p.kind, 0, TERM.pack(p.fes, p.fei), p.header[:MAX_TERM_HEADER]),
}
