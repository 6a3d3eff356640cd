"""Identify data structures (NVMe Base 2.0 §5.17.2): controller, namespace, lists.

JSON keys and order follow nvme-cli 2.3 `id-ctrl -o json` / `id-ns -o json`;
fields nvme-cli 2.3 does not print are added after their neighbours.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from .fields import ASCII, HEX, IEEE, NQN, U128, UUID, Field, Layout, kv_text, u, x

IDENTIFY_SIZE = 4096
PSD_OFFSET, PSD_SIZE, PSD_COUNT = 2048, 32, 32
LBAF_OFFSET, LBAF_SIZE, LBAF_COUNT = 128, 4, 64

# CNS values (§5.17.1, Figure 273)
CNS_NS = 0x00
CNS_CTRL = 0x01
CNS_NS_ACTIVE_LIST = 0x02
CNS_NS_DESC_LIST = 0x03
CNS_NS_CS = 0x05            # I/O Command Set specific Identify Namespace (CSI in CDW11)
CNS_CTRL_CS = 0x06          # I/O Command Set specific Identify Controller (spec.iocs)

ID_CTRL = Layout("id-ctrl", IDENTIFY_SIZE, [
    x("vid", 0, 2), x("ssvid", 2, 2),
    Field("sn", 4, 20, ASCII), Field("mn", 24, 40, ASCII), Field("fr", 64, 8, ASCII),
    u("rab", 72, 1), Field("ieee", 73, 3, IEEE), x("cmic", 76, 1), u("mdts", 77, 1),
    x("cntlid", 78, 2), x("ver", 80, 4), x("rtd3r", 84, 4), x("rtd3e", 88, 4),
    x("oaes", 92, 4), x("ctratt", 96, 4), x("rrls", 100, 2), x("bpcap", 102, 1),
    u("nssl", 104, 4), x("plsi", 110, 1), u("cntrltype", 111, 1),
    Field("fguid", 112, 16, UUID), u("crdt1", 128, 2), u("crdt2", 130, 2), u("crdt3", 132, 2),
    x("crcap", 134, 1), u("ciu", 135, 1), x("cirn", 136, 8),
    u("nvmsr", 253, 1), u("vwci", 254, 1), u("mec", 255, 1),
    x("oacs", 256, 2), u("acl", 258, 1), u("aerl", 259, 1), x("frmw", 260, 1), x("lpa", 261, 1),
    u("elpe", 262, 1), u("npss", 263, 1), x("avscc", 264, 1), x("apsta", 265, 1),
    u("wctemp", 266, 2), u("cctemp", 268, 2), u("mtfa", 270, 2),
    u("hmpre", 272, 4), u("hmmin", 276, 4),
    Field("tnvmcap", 280, 16, U128), Field("unvmcap", 296, 16, U128),
    x("rpmbs", 312, 4), u("edstt", 316, 2), u("dsto", 318, 1), u("fwug", 319, 1),
    u("kas", 320, 2), x("hctma", 322, 2), u("mntmt", 324, 2), u("mxtmt", 326, 2),
    x("sanicap", 328, 4), u("hmminds", 332, 4), u("hmmaxd", 336, 2),
    u("nsetidmax", 338, 2), u("endgidmax", 340, 2), u("anatt", 342, 1), u("anacap", 343, 1),
    u("anagrpmax", 344, 4), u("nanagrpid", 348, 4), u("pels", 352, 4), u("domainid", 356, 2),
    x("kpioc", 358, 1), u("mptfawr", 360, 2),
    Field("megcap", 368, 16, U128), x("tmpthha", 384, 1), u("cqt", 386, 2), x("cdpa", 388, 2),
    u("mup", 390, 2), u("ipmsr", 392, 2), u("msmt", 394, 2),
    x("sqes", 512, 1), x("cqes", 513, 1), u("maxcmd", 514, 2), u("nn", 516, 4),
    x("oncs", 520, 2), x("fuses", 522, 2), x("fna", 524, 1), x("vwc", 525, 1),
    u("awun", 526, 2), u("awupf", 528, 2), u("icsvscc", 530, 1), u("nwpc", 531, 1),
    u("acwu", 532, 2), x("ocfs", 534, 2), x("sgls", 536, 4), u("mnan", 540, 4),
    Field("maxdna", 544, 16, U128), u("maxcna", 560, 4), u("oaqd", 564, 4),
    u("rhiri", 568, 1), u("hirt", 569, 1), u("cmmrtd", 570, 2), u("nmmrtd", 572, 2),
    u("minmrtg", 574, 1), u("maxmrtg", 575, 1), x("trattr", 576, 1),
    u("mcudmq", 578, 2), u("mnsudmq", 580, 2), u("mcmr", 582, 2), u("nmcmr", 584, 2),
    u("mcdqpc", 586, 2),
    Field("subnqn", 768, 256, NQN, when=lambda v: v["subnqn"] != ""),
    u("ioccsz", 1792, 4), u("iorcsz", 1796, 4), u("icdoff", 1800, 2), x("fcatt", 1802, 1),
    u("msdbd", 1803, 1), u("ofcs", 1804, 2), u("dctype", 1806, 1), u("ccrl", 1807, 1),
])

# Power State Descriptor (§5.17.2.1, Figure 276): raw fields, used to encode.
PSD = Layout("psd", PSD_SIZE, [
    u("mp", 0, 2), x("flags", 3, 1), u("enlat", 4, 4), u("exlat", 8, 4),
    u("rrt", 12, 1), u("rrl", 13, 1), u("rwt", 14, 1), u("rwl", 15, 1),
    u("idlp", 16, 2), x("ips", 18, 1), u("actp", 20, 2), x("apws", 22, 1),
])
PSD_FLAG_MXPS = 1 << 0   # max power in 0.0001 W units instead of 0.01 W
PSD_FLAG_NOPS = 1 << 1   # non-operational state

_npwg = lambda v: bool(v["nsfeat"] & 0x10)   # noqa: E731 (NSFEAT.OPTPERF gates npwg..nows)

ID_NS = Layout("id-ns", IDENTIFY_SIZE, [
    x("nsze", 0, 8), x("ncap", 8, 8), x("nuse", 16, 8), x("nsfeat", 24, 1), u("nlbaf", 25, 1),
    x("flbas", 26, 1), x("mc", 27, 1), x("dpc", 28, 1), x("dps", 29, 1), x("nmic", 30, 1),
    x("rescap", 31, 1), x("fpi", 32, 1), u("dlfeat", 33, 1),
    u("nawun", 34, 2), u("nawupf", 36, 2), u("nacwu", 38, 2), u("nabsn", 40, 2),
    u("nabo", 42, 2), u("nabspf", 44, 2), u("noiob", 46, 2), Field("nvmcap", 48, 16, U128),
    u("nsattr", 99, 1), u("nvmsetid", 100, 2),
    u("npwg", 64, 2, when=_npwg), u("npwa", 66, 2, when=_npwg), u("npdg", 68, 2, when=_npwg),
    u("npda", 70, 2, when=_npwg), u("nows", 72, 2, when=_npwg),
    u("mssrl", 74, 2), u("mcl", 76, 4), u("msrc", 80, 1), x("kpios", 81, 1), u("nulbaf", 82, 1),
    u("kpiodaag", 84, 4), u("anagrpid", 92, 4), u("endgid", 102, 2),
    Field("eui64", 120, 8, HEX), Field("nguid", 104, 16, HEX),
])

# LBA Format data structure (§5.17.2.1 NVM Command Set, Figure 98): ds = LBADS.
LBAF = Layout("lbaf", LBAF_SIZE, [u("ms", 0, 2), u("ds", 2, 1), u("rp", 3, 1)])


def _array(layout: Layout, buf: bytes, offset: int, count: int) -> list[dict[str, Any]]:
    return [layout.decode(buf[offset + i * layout.size: offset + (i + 1) * layout.size])
            for i in range(count)]


def _power_scale(b: int) -> int:
    return (b >> 6) & 0x3


def decode_id_ctrl(buf: bytes) -> dict[str, Any]:
    out = ID_CTRL.decode(buf)
    out["psds"] = [{
        "max_power": p["mp"], "flags": p["flags"], "entry_lat": p["enlat"],
        "exit_lat": p["exlat"], "read_tput": p["rrt"], "read_lat": p["rrl"],
        "write_tput": p["rwt"], "write_lat": p["rwl"], "idle_power": p["idlp"],
        "idle_scale": _power_scale(p["ips"]), "active_power": p["actp"],
        "active_power_work": p["apws"] & 0x7, "active_scale": _power_scale(p["apws"]),
    } for p in _array(PSD, buf, PSD_OFFSET, out["npss"] + 1)]
    return out


def _watts(value: int, scale: int) -> str:
    if scale == 0:
        return "-"
    if scale == 1:
        return f"{value // 10000}.{value % 10000:04d}W"
    if scale == 2:
        return f"{value // 100}.{value % 100:02d}W"
    return "reserved"


def text_id_ctrl(d: Mapping[str, Any]) -> str:
    pairs = ID_CTRL.text_lines(d)
    for i, p in enumerate(d["psds"]):
        mp = _watts(p["max_power"], 1 if p["flags"] & PSD_FLAG_MXPS else 2)
        op = "non-operational" if p["flags"] & PSD_FLAG_NOPS else "operational"
        pairs.append((f"ps {i}", f"mp:{mp} {op} enlat:{p['entry_lat']} exlat:{p['exit_lat']} "
                      f"rrt:{p['read_tput']} rrl:{p['read_lat']} rwt:{p['write_tput']} "
                      f"rwl:{p['write_lat']} idle_power:{_watts(p['idle_power'], p['idle_scale'])} "
                      f"active_power:{_watts(p['active_power'], p['active_scale'])}"))
    return kv_text(pairs)


def decode_id_ns(buf: bytes) -> dict[str, Any]:
    out = ID_NS.decode(buf)
    out["lbafs"] = _array(LBAF, buf, LBAF_OFFSET, out["nlbaf"] + 1)
    return out


def lba_format_index(flbas: int) -> int:
    """FLBAS bits 3:0 plus bits 6:5 as the upper bits (NVMe 2.0, Figure 97)."""
    return (flbas & 0xF) | ((flbas >> 5) & 0x3) << 4


def block_size(ns: Mapping[str, Any]) -> int:
    """Bytes per logical block in the LBA format FLBAS selects (decoded Identify Namespace)."""
    return 1 << ns["lbafs"][lba_format_index(ns["flbas"])]["ds"]


class NsFormat(NamedTuple):
    """What a command's data length depends on, for one namespace: its LBA data size,
    metadata bytes per block, whether metadata is carried in the data (FLBAS bit 4,
    extended LBAs), its I/O Command Set (CSI, from the descriptor list) and its End-to-end
    Data Protection Type Settings (DPS: bits 2:0 the protection information type, 0: none)."""
    block: int
    ms: int = 0
    extended: bool = False
    csi: int = 0
    dps: int = 0


FLBAS_EXTENDED = 1 << 4     # FLBAS bit 4: metadata at the end of each LBA's data (MSET 1)
DPS_PIT = 0x7               # DPS bits 2:0: the protection information type (0: none)


def ns_format(ns: Mapping[str, Any], csi: int = 0) -> NsFormat:
    """The format of a decoded Identify Namespace."""
    lbaf = ns["lbafs"][lba_format_index(ns["flbas"])]
    return NsFormat(1 << lbaf["ds"], lbaf["ms"], bool(ns["flbas"] & FLBAS_EXTENDED), csi,
                    ns["dps"])


def text_id_ns(d: Mapping[str, Any]) -> str:
    pairs = ID_NS.text_lines(d)
    in_use = lba_format_index(d["flbas"])
    for i, f in enumerate(d["lbafs"]):
        pairs.append((f"lbaf {i:2d}", f"ms:{f['ms']:<3d} lbads:{f['ds']:<2d} rp:{f['rp']:#x}"
                      + (" (in use)" if i == in_use else "")))
    return kv_text(pairs)


def _encode_array(buf: bytearray, layout: Layout, offset: int, items: list[Mapping[str, int]]) -> bytes:
    for i, item in enumerate(items):
        start = offset + i * layout.size
        buf[start:start + layout.size] = layout.encode(item)
    return bytes(buf)


def encode_id_ctrl(values: Mapping[str, Any], psds: list[Mapping[str, int]]) -> bytes:
    return _encode_array(ID_CTRL.encode(values), PSD, PSD_OFFSET, psds)


def encode_id_ns(values: Mapping[str, Any], lbafs: list[Mapping[str, int]]) -> bytes:
    return _encode_array(ID_NS.encode(values), LBAF, LBAF_OFFSET, lbafs)


def decode_ns_list(buf: bytes) -> list[int]:
    """Active Namespace ID list (CNS 02h): ascending NSIDs, zero terminated."""
    ids = []
    for i in range(0, min(len(buf), IDENTIFY_SIZE), 4):
        nsid = int.from_bytes(buf[i:i + 4], "little")
        if nsid == 0:
            break
        ids.append(nsid)
    return ids


def encode_ns_list(nsids: list[int]) -> bytes:
    return b"".join(n.to_bytes(4, "little") for n in sorted(nsids)[:1024]).ljust(IDENTIFY_SIZE, b"\0")
