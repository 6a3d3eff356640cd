"""I/O Command Sets (Base 2.0 §5.17.2.x, NVM Command Set 1.0 §4.1.5, ZNS 1.1 §4.1.5):
which command set a namespace belongs to (its Namespace Identification Descriptor
list, CNS 03h), and the I/O Command Set specific Identify structures (CNS 05h for a
namespace, 06h for the controller, CSI in CDW11 bits 31:24).

JSON keys follow nvme-cli 2.3: `nvme nvm-id-ns` and `nvme nvm-id-ctrl` (NVM, CSI 0),
`nvme zns id-ns` and `nvme zns id-ctrl` (Zoned Namespace, CSI 2), `-o json`;
fields nvme-cli 2.3 does not print are added after their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .commands import CSI_KV, CSI_NVM, CSI_ZNS
from .fields import Layout, kv_text, s32, u, x
from .identify import IDENTIFY_SIZE

# ------------------------------------------------------------------ the command sets


@dataclass(frozen=True)
class CommandSet:
    csi: int
    name: str                       # in file names: identify-<name>
    ns_kind: str | None = None      # renderer of its CNS 05h data (None: raw only)
    ctrl_kind: str | None = None    # renderer of its CNS 06h data
    base: int | None = None         # the command set it extends (whose commands it takes)
    zoned: bool = False             # its namespaces have zones (a zone report)


COMMAND_SETS: dict[int, CommandSet] = {s.csi: s for s in [
    CommandSet(CSI_NVM, "nvm", "nvm-id-ns", "nvm-id-ctrl"),
    CommandSet(CSI_KV, "kv"),
    CommandSet(CSI_ZNS, "zns", "zns-id-ns", "zns-id-ctrl", base=CSI_NVM, zoned=True),
]}


def command_set(csi: int) -> CommandSet:
    """The command set `csi`; one nvmefs has no table for is named csiN, raw only."""
    return COMMAND_SETS.get(csi) or CommandSet(csi, f"csi{csi}")


def with_bases(csis: Iterable[int]) -> list[int]:
    """The command sets `csis` and those they extend (ZNS: NVM), in CSI order."""
    out: set[int] = set()
    for csi in csis:
        while csi is not None and csi not in out:
            out.add(csi)
            csi = command_set(csi).base
    return sorted(out)

# ------------------------------------------------------------------ Namespace Identification Descriptors


NIDT_EUI64, NIDT_NGUID, NIDT_UUID, NIDT_CSI = 0x01, 0x02, 0x03, 0x04   # Figure 279
DESC_HEADER = 4         # NIDT, NIDL, 2 reserved bytes; then NIDL bytes of NID


def decode_ns_descs(buf: bytes) -> list[tuple[int, bytes]]:
    """(NIDT, NID) of each descriptor, up to the first of type 0 or one the buffer
    cuts short."""
    out, pos, end = [], 0, min(len(buf), IDENTIFY_SIZE)
    while pos + DESC_HEADER <= end and buf[pos]:
        nidt, nidl = buf[pos], buf[pos + 1]
        if pos + DESC_HEADER + nidl > end:
            break
        out.append((nidt, bytes(buf[pos + DESC_HEADER:pos + DESC_HEADER + nidl])))
        pos += DESC_HEADER + nidl
    return out


def encode_ns_descs(descs: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([nidt, len(nid), 0, 0]) + nid for nidt, nid in descs)


def ns_csi(buf: bytes) -> int | None:
    """The Command Set Identifier a descriptor list gives (None: it has none, as before
    NVMe 2.0; the namespace is then an NVM one)."""
    for nidt, nid in decode_ns_descs(buf):
        if nidt == NIDT_CSI and nid:
            return nid[0]
    return None

# ------------------------------------------------------------------ NVM Command Set (CSI 0)


ELBAF_OFFSET, ELBAF_SIZE, LBAF_COUNT = 12, 4, 64

# NVM Command Set 1.0 Figure 97: I/O Command Set specific Identify Namespace
NVM_ID_NS = Layout("nvm-id-ns", IDENTIFY_SIZE, [
    x("lbstm", 0, 8), x("pic", 8, 1), x("pifa", 9, 1),
    u("npdgl", 268, 4), u("nprg", 272, 4), u("npra", 276, 4), u("nors", 280, 4),
    u("npdal", 284, 4), u("lbapss", 288, 4), u("tlbaag", 292, 4),
])
_NVM_ID_NS_HEAD = ("lbstm", "pic", "pifa")      # then elbafs, then the rest

# NVM Command Set 1.0 Figure 100: I/O Command Set specific Identify Controller
NVM_ID_CTRL = Layout("nvm-id-ctrl", IDENTIFY_SIZE, [
    u("vsl", 0, 1), u("wzsl", 1, 1), u("wusl", 2, 1), u("dmrl", 3, 1), u("dmrsl", 4, 4),
    u("dmsl", 8, 8), x("kpiocap", 16, 1), u("wzdsl", 17, 1), x("aocs", 18, 2), x("ver", 20, 4),
    x("lbamqf", 24, 1),
])


def _formats(ctx: Mapping[str, Any]) -> int:
    """How many LBA formats to show: NLBAF + 1 of the namespace's Identify Namespace
    where the caller knows it (ctx "nlbaf"), else all 64."""
    return min(int(ctx.get("nlbaf", LBAF_COUNT - 1)) + 1, LBAF_COUNT)


def decode_nvm_id_ns(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    d = NVM_ID_NS.decode(buf)
    words = [int.from_bytes(buf[ELBAF_OFFSET + ELBAF_SIZE * i:ELBAF_OFFSET + ELBAF_SIZE * (i + 1)],
                            "little") for i in range(_formats(ctx))]
    head = {k: d.pop(k) for k in _NVM_ID_NS_HEAD}
    return {**head, "elbafs": [{"sts": w & 0x7F, "pif": w >> 7 & 0x3} for w in words], **d}


def text_nvm_id_ns(d: Mapping[str, Any]) -> str:
    pairs = NVM_ID_NS.text_lines(d)
    pairs[len(_NVM_ID_NS_HEAD):len(_NVM_ID_NS_HEAD)] = [
        (f"elbaf {i:2d}", f"pif:{f['pif']} sts:{f['sts']}") for i, f in enumerate(d["elbafs"])]
    return kv_text(pairs)


def encode_nvm_id_ns(values: Mapping[str, Any], elbafs: list[Mapping[str, int]]) -> bytes:
    buf = NVM_ID_NS.encode(values)
    for i, f in enumerate(elbafs):
        word = f.get("sts", 0) & 0x7F | (f.get("pif", 0) & 0x3) << 7
        buf[ELBAF_OFFSET + ELBAF_SIZE * i:ELBAF_OFFSET + ELBAF_SIZE * (i + 1)] = \
            word.to_bytes(ELBAF_SIZE, "little")
    return bytes(buf)

# ------------------------------------------------------------------ Zoned Namespace Command Set (CSI 2)


LBAFE_OFFSET, LBAFE_SIZE = 2816, 16
ZDES_UNIT = 64          # ZDES counts the zone descriptor extension in 64-byte units
NO_LIMIT = -1           # MAR, MOR (all ones, decoded signed as nvme-cli does): no limit
OZCS_RAZB = 1 << 0      # Read Across Zone Boundaries

# ZNS 1.1 Figure 49: I/O Command Set specific Identify Namespace
ZNS_ID_NS = Layout("zns-id-ns", IDENTIFY_SIZE, [
    u("zoc", 0, 2), u("ozcs", 2, 2), s32("mar", 4), s32("mor", 8), u("rrl", 12, 4),
    u("frl", 16, 4), u("rrl1", 20, 4), u("rrl2", 24, 4), u("rrl3", 28, 4), u("frl1", 32, 4),
    u("frl2", 36, 4), u("frl3", 40, 4), x("numzrwa", 44, 4), u("zrwafg", 48, 2),
    u("zrwasz", 50, 2), u("zrwacap", 52, 1),
])
# ZNS 1.1 Figure 50: LBA Format Extension (zone size in logical blocks, ZDES)
LBAFE = Layout("lbafe", LBAFE_SIZE, [u("zsze", 0, 8), u("zdes", 8, 1)])
# ZNS 1.1 Figure 51: I/O Command Set specific Identify Controller
ZNS_ID_CTRL = Layout("zns-id-ctrl", IDENTIFY_SIZE, [u("zasl", 0, 1)])


def decode_zns_id_ns(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    d = ZNS_ID_NS.decode(buf)
    d["lbafe"] = [LBAFE.decode(buf[LBAFE_OFFSET + LBAFE_SIZE * i:LBAFE_OFFSET + LBAFE_SIZE * (i + 1)])
                  for i in range(_formats(ctx))]
    return d


def text_zns_id_ns(d: Mapping[str, Any]) -> str:
    return kv_text(ZNS_ID_NS.text_lines(d) + [
        (f"lbafe {i:2d}", f"zsze:{f['zsze']:#x} zdes:{f['zdes']}") for i, f in enumerate(d["lbafe"])])


def encode_zns_id_ns(values: Mapping[str, Any], lbafe: list[Mapping[str, int]]) -> bytes:
    buf = ZNS_ID_NS.encode(values)
    for i, f in enumerate(lbafe):
        LBAFE.encode(f, memoryview(buf)[LBAFE_OFFSET + LBAFE_SIZE * i:
                                        LBAFE_OFFSET + LBAFE_SIZE * (i + 1)])
    return bytes(buf)


def zone_geometry(zns: Mapping[str, Any], lbaf: int) -> tuple[int, int]:
    """(zone size in logical blocks, zone descriptor extension bytes) of LBA format
    `lbaf`, from a decoded ZNS Identify Namespace."""
    f = zns["lbafe"][lbaf]
    return f["zsze"], f["zdes"] * ZDES_UNIT
