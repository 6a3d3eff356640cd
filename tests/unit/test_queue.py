"""Submission and completion queue entries: wire sizes, round trips, status bits."""

import struct

import pytest

from nvmefs.spec.queue import CQE_SIZE, SQE_SIZE, Command, Completion, make_status


def test_wire_sizes_are_pinned():
    assert SQE_SIZE == 64 and len(Command(0x06).encode()) == 64
    assert CQE_SIZE == 16 and len(Completion().encode()) == 16


def test_sqe_field_offsets():
    raw = Command(0x02, nsid=0x11223344, cdw10=0xA, cdw11=0xB, cdw12=0xC, cdw13=0xD, cdw14=0xE,
                  cdw15=0xF, cdw2=2, cdw3=3, flags=0x40, cid=0xBEEF, mptr=5, prp1=6, prp2=7).encode()
    assert raw[0] == 0x02 and raw[1] == 0x40 and raw[2:4] == b"\xef\xbe"
    assert raw[4:8] == bytes.fromhex("44332211")
    assert int.from_bytes(raw[8:12], "little") == 2 and int.from_bytes(raw[12:16], "little") == 3
    assert int.from_bytes(raw[16:24], "little") == 5
    assert int.from_bytes(raw[24:32], "little") == 6 and int.from_bytes(raw[32:40], "little") == 7
    assert [int.from_bytes(raw[i:i + 4], "little") for i in range(40, 64, 4)] == list(range(0xA, 0x10))


def test_sqe_round_trip_whole_and_with_trailing_bytes():
    cmd = Command(0x80, nsid=1, cdw10=0x12345678, cid=7, prp2=1 << 60)
    raw = cmd.encode()
    assert Command.decode(raw) == cmd
    assert Command.decode(raw + b"trailing") == cmd


def test_cqe_status_and_phase():
    st = make_status(sct=3, sc=0x71, dnr=True, more=True, crd=2)
    cpl = Completion(status=st, dw0=1, dw1=2, sqhd=3, sqid=4, cid=5)
    raw = cpl.encode(phase=1)
    assert int.from_bytes(raw[14:16], "little") == (st << 1) | 1
    back = Completion.decode(raw)
    assert (back.sct, back.sc, back.dnr, back.more, back.crd) == (3, 0x71, True, True, 2)
    assert (back.dw0, back.dw1, back.sqhd, back.sqid, back.cid) == (1, 2, 3, 4, 5)
    assert Completion.decode(raw + b"\xff" * 3) == back
    assert not back.ok and Completion().ok


def test_success_with_flags_is_still_success():
    assert Completion(status=make_status(0, 0, dnr=True, more=True)).ok


def test_short_entries_are_rejected():
    with pytest.raises(struct.error):
        Command.decode(bytes(63))
    with pytest.raises(struct.error):
        Completion.decode(bytes(15))
