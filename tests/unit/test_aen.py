"""Asynchronous Event Request completions: the DW0 fields, their names, and the
log page that explains (and re-arms) each event."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmefs.spec import commands as C
from nvmefs.spec import events as E


@given(st.integers(0, 7), st.integers(0, 0xFF), st.integers(0, 0xFF))
def test_encode_aen_round_trip(kind, info, lid):
    dw0 = E.encode_aen(kind, info, lid)
    assert dw0 == kind | info << 8 | lid << 16          # type 2:0, info 15:8, LID 23:16
    assert E.aen(dw0) == (kind, info, lid)


@given(st.integers(0, 0xFFFFFFFF))
def test_aen_ignores_reserved_bits(dw0):
    kind, info, lid = E.aen(dw0)
    assert E.encode_aen(kind, info, lid) == dw0 & 0x00FFFF07


def test_encode_aen_bit_positions():
    assert E.encode_aen(E.TYPE_SMART, E.SMART_TEMPERATURE, C.LID_SMART) == 0x00020101
    assert E.encode_aen(E.TYPE_NOTICE, E.NOTICE_NS_CHANGED, C.LID_CHANGED_NS) == 0x00040002
    assert E.aen(0xFF_AB_CD_FF) == (7, 0xCD, 0xAB)


def test_decode_smart_temperature():
    dw0 = E.encode_aen(1, 1, 2)
    assert E.decode_aen(dw0) == {"type": 1, "type_name": "smart", "info": 1,
                                 "info_name": "temperature-threshold", "lid": 2}
    assert E.decode_aen(dw0, dw1=0x1234)["lid"] == 2     # DW1 means nothing here
    assert "cdqid" not in E.decode_aen(dw0, dw1=0x1234)


def test_decode_notice_namespace_changed():
    got = E.decode_aen(E.encode_aen(E.TYPE_NOTICE, E.NOTICE_NS_CHANGED, C.LID_CHANGED_NS))
    assert got == {"type": 2, "type_name": "notice", "info": 0, "info_name": "ns-attr-changed",
                   "lid": 4}


def test_decode_one_shot_cdq_tail_pointer_trigger():
    got = E.decode_aen(E.encode_aen(E.TYPE_ONE_SHOT, E.ONE_SHOT_CDQ_TPT, 0), dw1=0xABCD0007)
    assert got == {"type": 4, "type_name": "one-shot", "info": 0,
                   "info_name": "cdq-tail-pointer-trigger", "cdqid": 7}
    assert "lid" not in got
    # a LID field in a one-shot event's DW0 still names no log page
    got = E.decode_aen(E.encode_aen(4, 1, 0x09), dw1=3)
    assert got["info_name"] == "cdq-full" and got["cdqid"] == 3 and "lid" not in got


@pytest.mark.parametrize("kind, info, type_name, info_name", [
    (0, 0x05, "error", "fw-image-load-error"),
    (2, 0x03, "notice", "ana-change"),
    (2, 0xF0, "notice", "discovery-log-changed"),
    (6, 0x01, "io-command-set", "sanitize-completed"),
])
def test_known_names(kind, info, type_name, info_name):
    got = E.decode_aen(E.encode_aen(kind, info, 0))
    assert (got["type_name"], got["info_name"]) == (type_name, info_name)


def test_unknown_type_and_info_get_generic_names():
    got = E.decode_aen(E.encode_aen(5, 0x33, 0x10))
    assert got == {"type": 5, "type_name": "type5", "info": 0x33, "info_name": "info0x33",
                   "lid": 0x10}
    got = E.decode_aen(E.encode_aen(E.TYPE_SMART, 0x7F, C.LID_SMART))
    assert got["type_name"] == "smart" and got["info_name"] == "info0x7f"
    assert E.decode_aen(E.encode_aen(E.TYPE_VENDOR, 0, 0))["info_name"] == "info0x00"


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_every_dw0_decodes_to_named_strings(dw0, dw1):
    got = E.decode_aen(dw0, dw1)
    kind, info, lid = E.aen(dw0)
    assert (got["type"], got["info"]) == (kind, info)
    assert isinstance(got["type_name"], str) and got["type_name"]
    assert isinstance(got["info_name"], str) and got["info_name"]
    if kind == E.TYPE_ONE_SHOT:
        assert got["cdqid"] == dw1 & 0xFFFF and "lid" not in got
    else:
        assert got["lid"] == lid and "cdqid" not in got


@pytest.mark.parametrize("kind, info, lid, length", [
    (E.TYPE_SMART, E.SMART_TEMPERATURE, C.LID_SMART, 512),
    (E.TYPE_SMART, E.SMART_SPARE, C.LID_SMART, 512),
    (E.TYPE_NOTICE, E.NOTICE_NS_CHANGED, C.LID_CHANGED_NS, 4096),
    (E.TYPE_ERROR, 0x01, C.LID_ERROR, 64),
    (E.TYPE_NOTICE, E.NOTICE_FW_ACTIVATION, C.LID_FW_SLOT, 512),
])
def test_explaining_log_of_known_pages(kind, info, lid, length):
    assert E.explaining_log(E.encode_aen(kind, info, lid)) == (lid, length)


@pytest.mark.parametrize("lid", [C.LID_TELEMETRY_CTRL, C.LID_ANA, C.LID_SANITIZE, 0xC0])
def test_explaining_log_of_other_pages_reads_a_small_valid_length(lid):
    got = E.explaining_log(E.encode_aen(E.TYPE_NOTICE, E.NOTICE_TELEMETRY, lid))
    assert got == (lid, 4)
    C.get_log_page(*got, rae=False)                     # a length Get Log Page accepts


def test_explaining_log_of_known_lengths_are_valid_log_reads():
    for lid, length in E.EXPLAINING_LOGS.items():
        assert C.log_page_len(C.get_log_page(lid, length, rae=False)) == length


def test_one_shot_events_have_no_log():
    assert E.explaining_log(E.encode_aen(E.TYPE_ONE_SHOT, E.ONE_SHOT_CDQ_TPT, 0)) is None
    assert E.explaining_log(E.encode_aen(E.TYPE_ONE_SHOT, E.ONE_SHOT_CDQ_FULL, C.LID_SMART)) is None
