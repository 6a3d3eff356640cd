"""Discovery Log Page: nvme-cli 2.3's `nvme discover` JSON and text for a hand-built page."""

import json
import struct

import pytest

from nvmefs.spec import discovery, render
from nvmefs.spec.discovery import DISC_ENTRY_SIZE, DISC_HEADER_SIZE

GENCTR = 2**40 + 5


def header(genctr: int, numrec: int, recfmt: int = 0) -> bytes:
    return struct.pack("<QQH", genctr, numrec, recfmt).ljust(DISC_HEADER_SIZE, b"\0")


def entry(trtype, adrfam, subtype, treq, portid, cntlid, asqsz, eflags,
          trsvcid: bytes, subnqn: bytes, traddr: bytes, tsas: bytes = b"") -> bytes:
    e = bytearray(DISC_ENTRY_SIZE)
    struct.pack_into("<BBBBHHHH", e, 0, trtype, adrfam, subtype, treq, portid, cntlid, asqsz, eflags)
    e[32:32 + len(trsvcid)] = trsvcid
    e[256:256 + len(subnqn)] = subnqn
    e[512:512 + len(traddr)] = traddr
    e[768:768 + len(tsas)] = tsas
    assert len(e) == DISC_ENTRY_SIZE
    return bytes(e)


# TCP (3), IPv4 (1), NVMe subsystem (2), TREQ 4, dynamic controllers, SECTYPE 0
NVME_RECORD = entry(3, 1, 2, 4, 1, 0xFFFF, 32, 0, b"4420", b"nqn.2026-12.io.nvmefs:test",
                    b"127.0.0.1", b"\x00")
# the current discovery subsystem (3), EPCSD | DUPRETINFO; TRSVCID and TRADDR space padded
DISC_RECORD = entry(3, 1, 3, 0, 1, 0xFFFF, 32, 3, b"4420".ljust(32), b"nqn.2014-08.org.nvmexpress.discovery",
                    b"127.0.0.1".ljust(256), b"\x00")
RAW = header(GENCTR, 2) + NVME_RECORD + DISC_RECORD

# what nvme-cli 2.3's json_discovery_log() prints for RAW
EXPECTED = {
    "genctr": GENCTR,
    "records": [
        {
            "trtype": "tcp",
            "adrfam": "ipv4",
            "subtype": "nvme subsystem",
            "treq": "not specified, sq flow control disable supported",
            "portid": 1,
            "trsvcid": "4420",
            "subnqn": "nqn.2026-12.io.nvmefs:test",
            "traddr": "127.0.0.1",
            "eflags": "none",
            "sectype": "none",
        },
        {
            "trtype": "tcp",
            "adrfam": "ipv4",
            "subtype": "current discovery subsystem",
            "treq": "not specified",
            "portid": 1,
            "trsvcid": "4420",
            "subnqn": "nqn.2014-08.org.nvmexpress.discovery",
            "traddr": "127.0.0.1",
            "eflags": "explicit discovery connections, duplicate discovery information",
            "sectype": "none",
        },
    ],
}

# and what its print_discovery_log() prints
EXPECTED_TEXT = f"""
Discovery Log Number of Records 2, Generation counter {GENCTR}
=====Discovery Log Entry 0======
trtype:  tcp
adrfam:  ipv4
subtype: nvme subsystem
treq:    not specified, sq flow control disable supported
portid:  1
trsvcid: 4420
subnqn:  nqn.2026-12.io.nvmefs:test
traddr:  127.0.0.1
eflags:  none
sectype: none
=====Discovery Log Entry 1======
trtype:  tcp
adrfam:  ipv4
subtype: current discovery subsystem
treq:    not specified
portid:  1
trsvcid: 4420
subnqn:  nqn.2014-08.org.nvmexpress.discovery
traddr:  127.0.0.1
eflags:  explicit discovery connections, duplicate discovery information
sectype: none
"""


def test_sizes():
    assert DISC_HEADER_SIZE == DISC_ENTRY_SIZE == 1024
    assert discovery.discovery_log_len(0) == 1024
    assert discovery.discovery_log_len(2) == len(RAW) == 3072
    with pytest.raises(ValueError):
        discovery.discovery_log_len(-1)


def test_json_is_nvme_cli_2_3s_key_for_key():
    got = discovery.decode_discovery(RAW)
    assert got == EXPECTED
    assert list(got) == ["genctr", "records"]
    for record, expected in zip(got["records"], EXPECTED["records"]):
        assert list(record) == list(expected)
        assert type(record["portid"]) is int


def test_text_view():
    assert discovery.text_discovery(discovery.decode_discovery(RAW)) == EXPECTED_TEXT


def test_through_the_renderer_table():
    assert json.loads(render.render("discovery", RAW, "json")) == EXPECTED
    assert render.render("discovery", RAW, "raw") == RAW
    txt = render.render("discovery", RAW, "txt").decode().splitlines()
    assert txt[0] == f"genctr            : {GENCTR}"          # `.txt` files are `key : value` lines
    assert "records.1.subtype : current discovery subsystem" in txt and len(txt) == 21
    assert render.RENDERERS["discovery"].size == DISC_HEADER_SIZE


def test_trailing_bytes_are_ignored():
    assert discovery.decode_discovery(RAW + b"\xa5" * 100) == EXPECTED
    assert discovery.decode_discovery(RAW + NVME_RECORD) == EXPECTED      # beyond NUMREC
    assert discovery.decode_discovery(bytearray(RAW)) == EXPECTED


def test_only_whole_records_that_fit():
    assert discovery.decode_discovery(RAW[:DISC_HEADER_SIZE]) == {"genctr": GENCTR, "records": []}
    one = discovery.decode_discovery(RAW[:-1])
    assert one["records"] == EXPECTED["records"][:1]
    assert discovery.text_discovery(one).startswith(
        f"\nDiscovery Log Number of Records 1, Generation counter {GENCTR}\n")


@pytest.mark.parametrize("size", [0, 17, DISC_HEADER_SIZE - 1])
def test_short_buffer_is_an_error(size):
    with pytest.raises(ValueError):
        discovery.decode_discovery(RAW[:size])
    with pytest.raises(ValueError):
        render.render("discovery", RAW[:size], "json")


def test_rdma_record_and_unknown_codes():
    # RDMA: QPTYPE connected, PRTYPE roce-v2, CMS rdma-cm, PKEY 0x1234; unnamed ADRFAM/SUBTYPE/TREQ/EFLAGS
    tsas = bytes([1, 4, 1, 0, 0, 0, 0, 0]) + struct.pack("<H", 0x1234)
    rdma = entry(1, 7, 9, 5, 2, 0, 32, 8, b"4420", b"nqn.x", b"", tsas)
    (record,) = discovery.decode_discovery(header(0, 1) + rdma)["records"]
    assert record == {
        "trtype": "rdma", "adrfam": "unrecognized", "subtype": "unrecognized",
        "treq": "unrecognized", "portid": 2, "trsvcid": "4420", "subnqn": "nqn.x", "traddr": "",
        "eflags": "unrecognized", "rdma_prtype": "roce-v2", "rdma_qptype": "connected",
        "rdma_cms": "rdma-cm", "rdma_pkey": 0x1234,
    }
    text = discovery.text_discovery({"genctr": 0, "records": [record]})
    assert "\nadrfam:  \n" in text                  # blank without a TRADDR, as nvme-cli prints it
    assert text.endswith("rdma_prtype: roce-v2\nrdma_qptype: connected\n"
                         "rdma_cms:    rdma-cm\nrdma_pkey: 0x1234\n")


def test_fc_and_loop_show_no_transport_attributes():
    for trtype, shown in [(2, "fc"), (254, "loop"), (0, "unrecognized")]:
        raw = header(1, 1) + entry(trtype, 4, 1, 2, 0, 0, 0, 4, b"none", b"nqn.y",
                                   b"nn-0x1:pn-0x2", b"\x07" * 16)
        (record,) = discovery.decode_discovery(raw)["records"]
        assert record["trtype"] == shown and "sectype" not in record and "rdma_pkey" not in record
        assert record["adrfam"] == "fibre-channel" and record["subtype"] == "discovery subsystem referral"
        assert record["treq"] == "not required" and record["eflags"] == "no cdc connectivity"


def test_strings_lose_trailing_padding_then_end_at_the_first_nul():
    e = entry(3, 1, 2, 0, 0, 0, 0, 0, b"44 20  ", b"nqn.a\0junk  \0", b"10.0.0.1 \0x  ")
    (record,) = discovery.decode_discovery(header(0, 1) + e)["records"]
    assert (record["trsvcid"], record["subnqn"], record["traddr"]) == ("44 20", "nqn.a", "10.0.0.1 ")


def test_string_tables_cover_libnvme_1_3():
    assert discovery.TRTYPES == {1: "rdma", 2: "fc", 3: "tcp", 254: "loop"}
    assert len(discovery.EFLAGS) == 8 and discovery.EFLAGS[7] == (
        "explicit discovery connections, duplicate discovery information, no cdc connectivity")
    assert discovery.SECTYPES[2] == "tls13" and discovery.name(discovery.SECTYPES, 3) == "unrecognized"
