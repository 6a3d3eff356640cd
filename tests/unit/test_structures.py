"""Layouts, log pages, features, command packing and the renderer table."""

import json

import pytest

from nvmefs.spec import commands, features, identify, logs, render
from nvmefs.spec.fields import ASCII, HEX, U128, UUID, Field, Layout, u


def test_layout_round_trip_every_kind():
    layout = Layout("t", 64, [u("a", 0, 2), Field("b", 2, 16, U128), Field("c", 18, 6, ASCII),
                              Field("d", 24, 8, HEX), Field("e", 32, 16, UUID)])
    values = {"a": 0xBEEF, "b": str(2**100 + 5), "c": "ab    ", "d": "0102030405060708",
              "e": "12345678-9abc-def0-1234-56789abcdef0"}
    raw = layout.encode(values)
    assert layout.decode(raw) == values
    with pytest.raises(KeyError):
        layout.encode({"nope": 1})
    with pytest.raises(ValueError):
        Layout("bad", 4, [u("x", 2, 4)])


def test_identify_controller_encode_decode():
    raw = identify.encode_id_ctrl(dict(vid=0x1234, sn="S", mn="M", fr="F", mdts=5, nn=4, npss=1,
                                       subnqn=""), [dict(mp=900), dict(mp=5, flags=3)])
    d = identify.decode_id_ctrl(raw)
    assert len(raw) == 4096 and d["vid"] == 0x1234 and d["sn"] == "S" + " " * 19
    assert "subnqn" not in d            # nvme-cli leaves an empty NQN out
    assert [p["max_power"] for p in d["psds"]] == [900, 5]
    assert "mp:0.0005W non-operational" in identify.text_id_ctrl(d)


def test_namespace_list_round_trip():
    raw = identify.encode_ns_list([3, 1, 2])
    assert len(raw) == 4096 and identify.decode_ns_list(raw) == [1, 2, 3]
    assert identify.decode_ns_list(raw + b"\x07\x00\x00\x00") == [1, 2, 3]


def test_lba_format_index_uses_the_upper_bits():
    assert identify.lba_format_index(0x01) == 1
    assert identify.lba_format_index(0x61) == 0x31


def test_effects_round_trip_and_nvme_cli_keys():
    raw = logs.encode_effects({0x06: logs.CSUPP, 0x80: logs.CSUPP | logs.LBCC},
                              {0x02: logs.CSUPP, 0x99: 0})
    acs, iocs = logs.effects_tables(raw)
    assert acs[0x80] == 3 and iocs[0x02] == 1
    (page,) = logs.decode_effects(raw, {"csi": 0})
    assert page["admin_cmd_set"] == {"ACS_6 (Identify)": 1, "ACS_128 (Format NVM)": 3}
    assert page["io_cmd_set"] == {"IOCS_2 (Read)": 1}


def test_self_test_log():
    raw = logs.encode_self_test(1, 42, [dict(dsts=0x10, vdi=logs.VDI_NSID, nsid=1, poh=7)])
    d = logs.decode_self_test(raw, {})
    assert d["Current Device Self-Test Operation"] == 1
    assert d["Current Device Self-Test Completion"] == 42
    first, unused = d["List of Valid Reports"][0], d["List of Valid Reports"][1]
    assert first["Self test code"] == 1 and first["Namespace Identifier"] == 1
    assert first["Power on hours"] == 7 and "Failing LBA" not in first
    assert unused == {"Self test result": 15}


def test_error_entry_round_trip():
    raw = logs.encode_error_entry(9, 1, 0x42, 0x4002, 5, 0x02, lba=1000)
    (e,) = logs.decode_error(raw, {})["errors"]
    assert (e["error_count"], e["sqid"], e["cmdid"]) == (9, 1, 0x42)
    assert (e["status_field"], e["phase_tag"]) == (0x4002, 0)
    assert (e["nsid"], e["opcode"], e["lba"]) == (5, 2, 1000)


def test_telemetry_size_counts_data_area_4_only_when_supported():
    header = logs.TELEMETRY.encode(dict(dalb1=1, dalb2=2, dalb3=3, dalb4=99))
    assert logs.telemetry_size(bytes(header), {"lpa": 0}) == 4 * 512
    assert logs.telemetry_size(bytes(header), {"lpa": 0x40}) == 100 * 512


def test_log_table_sizes_and_support_bits():
    idc = {"elpe": 15, "lpa": 0x2A, "oacs": 0x10, "oaes": 0, "ctratt": 0, "cmic": 0, "sanicap": 0,
           "cntrltype": 1}
    assert logs.LOG_PAGES[0x01].size(idc) == 16 * 64
    supported = {lid for lid, p in logs.LOG_PAGES.items() if p.supported(idc)}
    assert supported == {0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08}
    assert logs.LOG_PAGES[0x70].supported({**idc, "cntrltype": 2})     # a discovery controller
    header = (7).to_bytes(8, "little") + (3).to_bytes(8, "little") + bytes(1008)
    assert logs.LOG_PAGES[0x70].length_from(header) == 1024 + 3 * 1024
    assert logs.LOG_BY_NAME["smart"].lid == 0x02


def test_get_log_page_packing_splits_numd():
    cmd = commands.get_log_page(0x07, 0x40000 + 8, offset=(5 << 32) | 12, lsp=1, lsi=3, rae=True)
    numd = 0x40000 // 4 + 1
    assert cmd.cdw10 == 0x07 | 1 << 8 | 1 << 15 | (numd & 0xFFFF) << 16
    assert cmd.cdw11 == numd >> 16 | 3 << 16
    assert (cmd.cdw12, cmd.cdw13) == (12, 5)
    assert commands.log_page_fields(cmd) == (0x07, 1, 0x40000 + 8, (5 << 32) | 12, 3)
    with pytest.raises(ValueError):
        commands.get_log_page(2, 510)


def test_rw_packing():
    cmd = commands.rw(0x02, 1, (1 << 40) + 3, 8)
    assert (cmd.cdw10, cmd.cdw11, cmd.cdw12) == (3, 1 << 8, 7)
    assert commands.rw_fields(cmd) == ((1 << 40) + 3, 8)
    with pytest.raises(ValueError):
        commands.rw(0x02, 1, 0, 0)


def test_feature_decoding():
    d = features.decode_feature(features.encode_feature(0x0A0B0C03), {"fid": 0x01})
    assert (d["ab"], d["lpw"], d["mpw"], d["hpw"]) == (3, 0x0C, 0x0B, 0x0A)
    ts = (1_700_000_000_000).to_bytes(6, "little") + bytes([0x03, 0])
    d = features.decode_feature(features.encode_feature(0, ts), {"fid": 0x0E})
    assert d["timestamp"] == 1_700_000_000_000 and d["synch"] == 1 and d["origin"] == 1
    d = features.decode_feature(features.encode_feature(5), {"fid": 0x06, "sel": 3})
    assert (d["saveable"], d["ns_specific"], d["changeable"]) == (1, 0, 1)
    assert features.decode_feature(b"\1\0\0\0", {"fid": 0xC5})["feature"] == "Unknown"


@pytest.mark.parametrize("kind", sorted(render.RENDERERS))
def test_every_renderer_gives_three_views(kind):
    r = render.RENDERERS[kind]
    raw = bytes(r.size)
    ctx = {"fid": 1, "name": "nvme0"}
    assert render.render(kind, raw, "raw", ctx) == raw
    json.loads(render.render(kind, raw, "json", ctx))
    text = render.render(kind, raw, "txt", ctx).decode()
    assert all(" : " in line for line in text.splitlines())
    with pytest.raises(ValueError):
        render.render(kind, raw, "yaml", ctx)
