"""I/O Command Sets: opcode tables per CSI, their verdicts, the command set specific
Identify structures, the descriptor list, zone reports. Vectors are built by hand
(struct), not with the encoders under test."""

import errno
import json
import struct

import pytest

from nvmefs.spec import commands as C
from nvmefs.spec import identify as ID
from nvmefs.spec import iocs
from nvmefs.spec import logs as L
from nvmefs.spec import passthru as P
from nvmefs.spec import render
from nvmefs.spec import status as S
from nvmefs.spec import zones as Z
from nvmefs.spec.opcodes import ADMIN, ALL, IO, READONLY, COMMAND_SETS, lookup, name_of
from nvmefs.spec.session import MailboxSession

req = P.encode_request


# ------------------------------------------------------------------ opcode tables


def test_each_command_set_has_its_opcodes():
    zmr = lookup(IO, 0x7A, C.CSI_ZNS)
    assert (zmr.name, zmr.policy) == ("Zone Management Receive", READONLY)
    assert lookup(IO, 0x79, C.CSI_ZNS).name == "Zone Management Send"
    assert lookup(IO, 0x7D, C.CSI_ZNS).name == "Zone Append"
    for op in (0x79, 0x7A, 0x7D):
        assert lookup(IO, op) is None and lookup(IO, op, C.CSI_KV) is None     # not NVM's, not KV's
    # ZNS namespaces take the NVM commands too
    for op, row in COMMAND_SETS[C.CSI_NVM].items():
        assert lookup(IO, op, C.CSI_ZNS) == row
    kv = {op: name_of(IO, op, C.CSI_KV) for op in (0x01, 0x02, 0x10, 0x14, 0x06)}
    assert kv == {0x01: "Store", 0x02: "Retrieve", 0x10: "Delete", 0x14: "Exist", 0x06: "List"}
    assert lookup(IO, 0x02, C.CSI_KV).policy == READONLY and lookup(IO, 0x01, C.CSI_KV).policy == ALL
    assert name_of(IO, 0x0D, C.CSI_KV) == "Reservation Register"
    assert lookup(IO, 0x05, C.CSI_KV) is None               # Compare is NVM's
    # common to every command set, and admin whatever the CSI
    for csi in (C.CSI_NVM, C.CSI_KV, C.CSI_ZNS, 7):
        assert lookup(IO, 0x7F, csi).queue_mgmt and lookup(IO, 0x18, csi).queue_mgmt
        assert lookup(ADMIN, 0x06, csi).name == "Identify"
    assert lookup(IO, 0x02, 7) is None                      # a command set nvmefs has no table for


def test_data_lengths_of_the_command_set_commands():
    recv = C.zone_mgmt_recv(1, 0x1_0000_0000, 64 + 3 * 64, Z.ZRA_REPORT, 0x04, partial=True)
    assert (recv.cdw10, recv.cdw11, recv.cdw12, recv.cdw13) == (0, 1, 63, 0x0001_0400)
    assert lookup(IO, 0x7A, C.CSI_ZNS).data_len(recv, 512) == 256
    send = C.zone_mgmt_send(1, 2048, Z.ZSA_RESET, select_all=True)
    assert (send.opcode, send.cdw10, send.cdw13) == (0x79, 2048, 0x104)
    assert lookup(IO, 0x79, C.CSI_ZNS).data_len(send, 512) == 0
    assert lookup(IO, 0x79, C.CSI_ZNS).data_len(send._replace(cdw13=0x10), 512) is None
    append = C.rw(C.OP_ZONE_APPEND, 1, 4096, 8)
    assert lookup(IO, 0x7D, C.CSI_ZNS).data_len(append, 4096) == 8 * 4096
    store = C.command(C.OP_KV_STORE, 1, cdw10=100)
    assert lookup(IO, 0x01, C.CSI_KV).data_len(store, 512) == 100
    with pytest.raises(ValueError):
        C.zone_mgmt_recv(1, 0, 66)


def test_csi_fields_of_identify_and_get_log_page():
    cmd = C.identify(ID.CNS_NS_CS, nsid=3, csi=C.CSI_ZNS)
    assert (cmd.cdw10, cmd.cdw11, cmd.nsid) == (0x05, 0x0200_0000, 3)
    log = C.get_log_page(C.LID_EFFECTS, 4096, csi=C.CSI_ZNS)
    assert log.cdw14 == 0x0200_0000 and C.LOG_CSI.get(log) == 2


# ------------------------------------------------------------------ verdicts per command set


def _effects(entries: dict[int, int]) -> list[int]:
    return [entries.get(op, 0) for op in range(256)]


NVM_IOCS = _effects({0x00: 1, 0x01: 3, 0x02: 1})
ZNS_IOCS = _effects({0x00: 1, 0x01: 3, 0x02: 1, 0x79: 3, 0x7A: 1, 0x7D: 3})
NAMESPACES = {1: ID.NsFormat(512), 2: ID.NsFormat(4096, csi=C.CSI_ZNS)}


def _target(policy: str, effects=None) -> P.Target:
    return P.Target(IO, policy, 1 << 20, NAMESPACES,
                    {0: NVM_IOCS, 2: ZNS_IOCS} if effects is None else effects)


def refused(write: bytes, t: P.Target) -> int | None:
    s = MailboxSession()
    s.receive_data(write)
    out = s.next_request(t)
    return out.errno if isinstance(out, P.RequestError) else None


REPORT = dict(cdw12=63, cdw13=1 << 16, data_len=256)      # 3 zones, Partial Report


def test_readonly_admits_zone_management_receive_on_a_zoned_namespace():
    t = _target("readonly")
    assert refused(req(0x7A, nsid=2, **REPORT), t) is None
    assert refused(req(0x7A, nsid=2, **REPORT, text=True), t) is None
    assert refused(req(0x79, nsid=2, cdw13=Z.ZSA_RESET), t) == errno.EACCES
    assert refused(req(0x7D, nsid=2, cdw12=0, data=bytes(4096)), t) == errno.EACCES
    # an NVM namespace has no zones: neither nvmefs nor its effects log knows 7Ah
    assert refused(req(0x7A, nsid=1, **REPORT), t) == errno.EOPNOTSUPP
    assert refused(req(0x02, nsid=2, cdw12=0, data_len=4096), t) is None     # NVM's Read
    assert refused(req(0x7A, nsid=2, cdw12=63, data_len=252), t) == errno.EINVAL   # NUMD's bytes
    # what the opcode decides is kept per (opcode, command set)
    assert {(0x7A, 2), (0x7A, 0), (0x79, 2), (0x7D, 2), (0x02, 2)} <= set(t.verdicts)


def test_the_effects_log_of_the_namespaces_command_set_decides():
    # a controller whose CSI 2 page does not list Zone Management Receive
    t = _target("readonly", {0: NVM_IOCS, 2: _effects({0x02: 1})})
    assert refused(req(0x7A, nsid=2, **REPORT), t) == errno.EOPNOTSUPP
    # one whose CSI 2 page marks it changing data: readonly refuses it
    t = _target("readonly", {0: NVM_IOCS, 2: _effects({0x7A: 3})})
    assert refused(req(0x7A, nsid=2, **REPORT), t) == errno.EACCES
    # a vendor I/O opcode of the zoned set is known from its effects log, for all
    zns = _effects({0x7A: 1, 0x90: 1})
    assert refused(req(0x90, nsid=2), _target("all", {0: NVM_IOCS, 2: zns})) is None
    assert refused(req(0x90, nsid=1), _target("all", {0: NVM_IOCS, 2: zns})) == errno.EOPNOTSUPP
    # no page for the command set (the controller refused it): the table alone
    t = _target("readonly", {0: NVM_IOCS})
    assert refused(req(0x7A, nsid=2, **REPORT), t) is None
    assert refused(req(0x7A, nsid=2, **REPORT), _target("readonly", None)) is None


def test_a_binary_entry_may_start_with_an_opcode_of_any_command_set_in_use():
    zoned, plain = _target("all"), P.Target(IO, "all", 1 << 20, {1: ID.NsFormat(512)}, {0: NVM_IOCS})
    assert P.plausible_opcode(zoned, 0x7A) and not P.plausible_opcode(plain, 0x7A)
    assert zoned.command_sets == (0, 2) and plain.command_sets == (0,)
    assert P.Target(ADMIN, "all", effects=_effects({0x06: 1})).effects_of(2)[0x06] == 1


def test_the_effects_log_names_io_opcodes_as_its_command_set_does():
    raw = L.encode_effects({0x06: L.CSUPP}, {0x01: L.CSUPP | L.LBCC, 0x7A: L.CSUPP})
    (zns,) = L.decode_effects(raw, {"csi": 2})
    assert zns["command_set_identifier"] == 2
    assert zns["io_cmd_set"] == {"IOCS_1 (Write)": 3, "IOCS_122 (Zone Management Receive)": 1}
    (kv,) = L.decode_effects(raw, {"csi": 1})
    assert list(kv["io_cmd_set"]) == ["IOCS_1 (Store)", "IOCS_122 (Unknown)"]
    (nvm,) = L.decode_effects(raw, {})
    assert nvm["command_set_identifier"] == 0 and "IOCS_122 (Unknown)" in nvm["io_cmd_set"]


def test_zns_statuses():
    assert S.describe(S.ZONE_INVALID_WRITE).name == "ZNS_INVALID_WRITE"
    assert S.describe(S.ZONE_BOUNDARY_ERROR).name == "ZNS_BOUNDARY_ERROR"
    assert S.describe(S.INVALID_ZONE_STATE_TRANSITION).name == "ZNS_INVAL_TRANSITION"
    assert S.errno_of(S.ZONE_IS_FULL) == errno.ENOSPC
    assert S.errno_of(S.TOO_MANY_OPEN_ZONES) == errno.ETOOMANYREFS
    assert S.code(S.ZONE_IS_READ_ONLY) == 0x1BA


# ------------------------------------------------------------------ descriptor lists


def _desc(nidt: int, nid: bytes) -> bytes:
    return struct.pack("<BBH", nidt, len(nid), 0) + nid


def test_namespace_descriptor_list_gives_the_command_set():
    buf = (_desc(1, bytes(range(8))) + _desc(2, bytes(16)) + _desc(4, b"\x02")).ljust(4096, b"\0")
    assert iocs.decode_ns_descs(buf) == [(1, bytes(range(8))), (2, bytes(16)), (4, b"\x02")]
    assert iocs.ns_csi(buf) == 2
    assert iocs.ns_csi(_desc(1, bytes(8)).ljust(4096, b"\0")) is None     # before NVMe 2.0
    assert iocs.ns_csi(bytes(4096)) is None
    # one the buffer cuts short ends the list; so does NIDT 0
    assert iocs.decode_ns_descs(_desc(1, bytes(8)) + _desc(4, b"\x02")[:4]) == [(1, bytes(8))]
    assert iocs.decode_ns_descs(_desc(4, b"\x00") + b"\0" * 8 + _desc(4, b"\x02")) == [(4, b"\0")]
    assert iocs.encode_ns_descs([(4, b"\x02")]) == _desc(4, b"\x02")


def test_command_sets_and_what_they_extend():
    assert iocs.with_bases([2]) == [0, 2] and iocs.with_bases([1, 0]) == [0, 1]
    assert iocs.with_bases([]) == [] and iocs.with_bases([5]) == [5]
    assert iocs.command_set(2).name == "zns" and iocs.command_set(5).name == "csi5"


# ------------------------------------------------------------------ command set specific Identify


def test_zns_identify_namespace():
    buf = bytearray(4096)
    struct.pack_into("<HHIIIIIIIIII", buf, 0, 0x2, 0x1, 13, 0xFFFFFFFF, 5, 6, 7, 8, 9, 10, 11, 12)
    struct.pack_into("<IHHB", buf, 44, 4, 8, 16, 1)
    struct.pack_into("<QB", buf, 2816, 0x4000, 0)
    struct.pack_into("<QB", buf, 2832, 0x800, 2)
    d = iocs.decode_zns_id_ns(bytes(buf), {"nlbaf": 1})
    assert list(d) == ["zoc", "ozcs", "mar", "mor", "rrl", "frl", "rrl1", "rrl2", "rrl3", "frl1",
                       "frl2", "frl3", "numzrwa", "zrwafg", "zrwasz", "zrwacap", "lbafe"]
    assert (d["zoc"], d["ozcs"], d["mar"], d["mor"], d["rrl"], d["frl3"]) == \
        (2, 1, 13, -1, 5, 12)       # MOR all ones: -1, as nvme-cli's JSON has it
    assert (d["numzrwa"], d["zrwafg"], d["zrwasz"], d["zrwacap"]) == (4, 8, 16, 1)
    assert d["lbafe"] == [{"zsze": 0x4000, "zdes": 0}, {"zsze": 0x800, "zdes": 2}]
    assert len(iocs.decode_zns_id_ns(bytes(buf), {})["lbafe"]) == 64      # NLBAF unknown: all
    assert iocs.zone_geometry(d, 1) == (0x800, 128)
    text = render.render("zns-id-ns", bytes(buf), "txt", {"nlbaf": 1}).decode()
    assert "mar      : 0xd\n" in text and "mor      : 0xffffffff\n" in text and "lbafe  1 : zsze:0x800 zdes:2\n" in text
    assert iocs.encode_zns_id_ns({k: d[k] for k in d if k != "lbafe"}, d["lbafe"]) == \
        bytes(buf[:2848]).ljust(4096, b"\0")
    with pytest.raises(ValueError):
        iocs.decode_zns_id_ns(bytes(4095), {})


def test_nvm_identify_namespace_and_controllers():
    buf = bytearray(4096)
    struct.pack_into("<QBB", buf, 0, 0xFF00, 0x3, 0x1)
    struct.pack_into("<II", buf, 12, 0x05, 0x2 << 7 | 0x10)
    struct.pack_into("<I", buf, 268, 7)
    d = iocs.decode_nvm_id_ns(bytes(buf), {"nlbaf": 1})
    assert list(d)[:4] == ["lbstm", "pic", "pifa", "elbafs"]
    assert (d["lbstm"], d["pic"], d["pifa"], d["npdgl"]) == (0xFF00, 3, 1, 7)
    assert d["elbafs"] == [{"sts": 5, "pif": 0}, {"sts": 0x10, "pif": 2}]
    assert "elbaf  1 : pif:2 sts:16\n" in iocs.text_nvm_id_ns(d)
    assert iocs.encode_nvm_id_ns({"lbstm": 0xFF00, "pic": 3, "pifa": 1, "npdgl": 7},
                                 d["elbafs"]) == bytes(buf)
    ctrl = bytearray(4096)
    struct.pack_into("<BBBBIQ", ctrl, 0, 1, 2, 3, 4, 5, 6)
    nvm = render.decode("nvm-id-ctrl", bytes(ctrl))
    assert list(nvm.items())[:6] == [("vsl", 1), ("wzsl", 2), ("wusl", 3), ("dmrl", 4),
                                     ("dmrsl", 5), ("dmsl", 6)]
    assert render.decode("zns-id-ctrl", bytes([7]) + bytes(4095)) == {"zasl": 7}


# ------------------------------------------------------------------ zone reports


def _zone(zslba: int, state: int, wp: int, zcap: int = 0x4000, za: int = 0, zai: int = 0) -> bytes:
    return struct.pack("<BBBB4xQQQ32x", 0x2, state << 4, za, zai, zcap, zslba, wp)


def _report(count: int, *zones: bytes) -> bytes:
    return struct.pack("<Q56x", count) + b"".join(zones)


ZONES = [_zone(0, 0x1, 0), _zone(0x4000, 0x2, 0x4008), _zone(0x8000, 0xE, 2 ** 64 - 1, za=0x4, zai=1)]
EXPECTED = [
    {"slba": 0, "wp": 0, "cap": 0x4000, "state": "EMPTY", "type": "SEQWRITE_REQ", "attrs": 0,
     "attrs_info": 0},
    {"slba": 0x4000, "wp": 0x4008, "cap": 0x4000, "state": "IMP_OPENED", "type": "SEQWRITE_REQ",
     "attrs": 0, "attrs_info": 0},
    {"slba": 0x8000, "wp": 2 ** 64 - 1, "cap": 0x4000, "state": "FULL", "type": "SEQWRITE_REQ",
     "attrs": 4, "attrs_info": 1},
]


def test_a_report_decodes_to_nvme_cli_zones():
    buf = _report(3, *ZONES)
    count, zones = Z.decode_report(buf)
    assert count == 3 and [Z.zone_json(d, e) for d, e in zones] == EXPECTED
    assert list(Z.zone_json(*zones[0])) == ["slba", "wp", "cap", "state", "type", "attrs",
                                            "attrs_info"]
    assert Z.decode_report_json(buf, {}) == {"nr_zones": 3, "zone_list": EXPECTED}
    assert json.loads(render.render("zone-report", buf, "json")) == {"nr_zones": 3,
                                                                       "zone_list": EXPECTED}


def test_a_report_holds_no_more_than_its_count_and_its_length():
    buf = _report(3, *ZONES)
    # trailing bytes: a buffer longer than the zones it counts
    assert Z.decode_report(buf + bytes(200))[1] == Z.decode_report(buf)[1]
    assert len(Z.decode_report(_report(2, *ZONES))[1]) == 2
    # a count beyond the buffer (Partial Report clear): the whole descriptors there are
    count, zones = Z.decode_report(_report(1000, *ZONES) + ZONES[0][:63])
    assert count == 1000 and len(zones) == 3
    # byte by byte: every cut keeps the whole descriptors before it, and never more
    for cut in range(64, len(buf) + 1):
        assert len(Z.decode_report(buf[:cut])[1]) == (cut - 64) // 64
    with pytest.raises(ValueError):
        Z.decode_report(buf[:63])
    assert Z.decode_report(_report(0)) == (0, [])
    unknown = Z.zone_json(Z.ZONE_DESC.decode(struct.pack("<BB62x", 0x5, 0x90)))
    assert (unknown["state"], unknown["type"]) == ("Unknown State", "Unknown")


def test_an_extended_report_carries_each_zones_extension():
    ext = b"nvmefs!\x01" + bytes(56) + b"x" * 64
    buf = _report(2, _zone(0, 0x1, 0, za=Z.ZA_ZDEV), ext, _zone(0x4000, 0x1, 0x4000), bytes(128))
    count, zones = Z.decode_report(buf, 128)
    assert count == 2 and zones[0][1] == ext
    first, second = (Z.zone_json(d, e) for d, e in zones)
    assert first["ext_data"][0] == "nvmefs!." + "." * 8 and len(first["ext_data"]) == 8
    assert first["ext_data"][-1] == "x" * 16
    assert second["ext_data"] == "Not valid"
    assert Z.decode_report_json(buf, {"zdes": 2})["zone_list"][1]["ext_data"] == "Not valid"
    assert "ext_data" not in Z.decode_report_json(buf, {})["zone_list"][0]


def test_report_sizes_and_encoding():
    assert Z.report_length(3) == 256 and Z.zones_that_fit(256) == 3 and Z.zones_that_fit(63) == 0
    assert Z.report_length(2, 128) == 64 + 2 * 192 and Z.zones_that_fit(64 + 2 * 192, 128) == 2
    assert Z.encode_zone(0x8000, 0x4000, Z.ZS_FULL, 2 ** 64 - 1, za=4, zai=1) == ZONES[2]
    assert Z.encode_report(3, ZONES, 300) == _report(3, *ZONES).ljust(300, b"\0")
    assert Z.encode_report(3, ZONES, 128) == _report(3, *ZONES)[:128]
