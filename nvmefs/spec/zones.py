"""Zones of a zoned namespace (ZNS Command Set 1.1): the zone states, the actions of
Zone Management Send, and the data of Zone Management Receive (a report).

A report (Figures 37-39) is a 64-byte header whose first 8 bytes count the zones
reported, then one 64-byte zone descriptor per zone, each followed by its zone
descriptor extension (ZDES x 64 bytes) in an extended report. A zone as JSON has
the keys of a zone of nvme-cli's `nvme zns report-zones -o json` (`zone_list`):
slba, wp, cap, state, type, attrs, attrs_info (nvme-cli 2.3 prints ZAI under
"attrs" a second time, over ZA; later versions name it attrs_info), and
ext_data in an extended report.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .fields import Layout, u, x

REPORT_HEADER_SIZE = 64
ZONE_DESC_SIZE = 64

ZT_SEQWRITE_REQ = 0x2                    # Zone Type: Sequential Write Required

# Zone State (ZS, descriptor byte 1 bits 7:4; Figure 40)
ZS_EMPTY, ZS_IMPL_OPEN, ZS_EXPL_OPEN, ZS_CLOSED = 0x1, 0x2, 0x3, 0x4
ZS_READ_ONLY, ZS_FULL, ZS_OFFLINE = 0xD, 0xE, 0xF
STATE_NAMES = {ZS_EMPTY: "EMPTY", ZS_IMPL_OPEN: "IMP_OPENED", ZS_EXPL_OPEN: "EXP_OPENED",
               ZS_CLOSED: "CLOSED", ZS_READ_ONLY: "READONLY", ZS_FULL: "FULL",
               ZS_OFFLINE: "OFFLINE"}       # nvme-cli's names
TYPE_NAMES = {ZT_SEQWRITE_REQ: "SEQWRITE_REQ"}
OPEN_STATES = frozenset({ZS_IMPL_OPEN, ZS_EXPL_OPEN})
NO_WRITE_POINTER = frozenset({ZS_FULL, ZS_READ_ONLY, ZS_OFFLINE})     # WP not valid
WP_INVALID = (1 << 64) - 1

# Zone Attributes (ZA, byte 2)
ZA_ZFC, ZA_FZR, ZA_RZR, ZA_ZRWAV, ZA_ZDEV = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 7

# Zone Send Action (Zone Management Send CDW13 bits 7:0; Figure 35)
ZSA_CLOSE, ZSA_FINISH, ZSA_OPEN, ZSA_RESET, ZSA_OFFLINE = 0x01, 0x02, 0x03, 0x04, 0x05
ZSA_SET_ZDE, ZSA_FLUSH_ZRWA = 0x10, 0x11

# Zone Receive Action and its Specific Field (CDW13 bits 7:0 and 15:8; Figure 33)
ZRA_REPORT, ZRA_EXTENDED = 0x00, 0x01
ZRASF_ALL = 0x00
ZRASF_STATES = {0x01: ZS_EMPTY, 0x02: ZS_IMPL_OPEN, 0x03: ZS_EXPL_OPEN, 0x04: ZS_CLOSED,
                0x05: ZS_FULL, 0x06: ZS_READ_ONLY, 0x07: ZS_OFFLINE}

ZONE_DESC = Layout("zone-descriptor", ZONE_DESC_SIZE, [
    x("zt", 0, 1), x("zs", 1, 1), x("za", 2, 1), x("zai", 3, 1),
    u("zcap", 8, 8), u("zslba", 16, 8), u("wp", 24, 8),
])


def report_stride(ext_size: int) -> int:
    """Bytes per zone in a report: the descriptor and its extension."""
    return ZONE_DESC_SIZE + ext_size


def zones_that_fit(length: int, ext_size: int = 0) -> int:
    return max(0, (length - REPORT_HEADER_SIZE) // report_stride(ext_size))


def report_length(zones: int, ext_size: int = 0) -> int:
    """Bytes of a report with room for `zones` zones."""
    return REPORT_HEADER_SIZE + zones * report_stride(ext_size)


def decode_report(buf: bytes, ext_size: int = 0) -> tuple[int, list[tuple[dict[str, Any], bytes]]]:
    """The header's zone count and the (descriptor, extension) of each zone the buffer
    holds whole, no more than the count (a report with the Partial Report bit clear
    counts zones beyond what fits). Bytes after them are ignored."""
    if len(buf) < REPORT_HEADER_SIZE:
        raise ValueError(f"a zone report needs {REPORT_HEADER_SIZE} bytes, got {len(buf)}")
    count = int.from_bytes(buf[:8], "little")
    stride = report_stride(ext_size)
    zones = []
    for i in range(min(count, zones_that_fit(len(buf), ext_size))):
        start = REPORT_HEADER_SIZE + i * stride
        zones.append((ZONE_DESC.decode(buf[start:start + ZONE_DESC_SIZE]),
                      bytes(buf[start + ZONE_DESC_SIZE:start + stride])))
    return count, zones


def _printable_lines(data: bytes, width: int = 16) -> list[str]:
    """nvme-cli's ext_data: the bytes as text lines of `width`, '.' for what is not
    printable."""
    text = "".join(chr(b) if 0x21 <= b <= 0x7E else "." for b in data)
    return [text[i:i + width] for i in range(0, len(text), width)]


def zone_json(desc: Mapping[str, Any], ext: bytes = b"") -> dict[str, Any]:
    """One zone as nvme-cli's report-zones JSON shows it; `ext`: its extension, in an
    extended report."""
    out = {"slba": desc["zslba"], "wp": desc["wp"], "cap": desc["zcap"],
           "state": STATE_NAMES.get(desc["zs"] >> 4, "Unknown State"),
           "type": TYPE_NAMES.get(desc["zt"] & 0xF, "Unknown"),
           "attrs": desc["za"], "attrs_info": desc["zai"]}
    if ext:
        out["ext_data"] = _printable_lines(ext) if desc["za"] & ZA_ZDEV else "Not valid"
    return out


def decode_report_json(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    """A report as `nvme zns report-zones -o json`: nr_zones and zone_list. ctx "zdes":
    the extension size in 64-byte units, for an extended report."""
    count, zones = decode_report(buf, int(ctx.get("zdes", 0)) * 64)
    return {"nr_zones": count, "zone_list": [zone_json(d, e) for d, e in zones]}


def encode_zone(zslba: int, zcap: int, state: int, wp: int, za: int = 0, zai: int = 0,
                zt: int = ZT_SEQWRITE_REQ) -> bytes:
    return bytes(ZONE_DESC.encode(dict(zt=zt, zs=state << 4, za=za, zai=zai, zcap=zcap,
                                       zslba=zslba, wp=wp)))


def encode_report(count: int, zones: Iterable[bytes], length: int) -> bytes:
    """A report of `length` bytes: the header counting `count` zones, then `zones`
    (each descriptor with its extension), cut or zero-filled to `length`."""
    body = count.to_bytes(8, "little").ljust(REPORT_HEADER_SIZE, b"\0") + b"".join(zones)
    return body[:length].ljust(length, b"\0")
