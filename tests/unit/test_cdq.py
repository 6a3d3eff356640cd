"""Controller Data Queues (TP4159): command fields, the UDMQ entry, the entry stream,
and the host's reader against the controller's writer over one ring."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefs.spec import cdq
from nvmefs.spec.cdq import ENTRY_SIZE, Entry, EntryStream, QueueReader, QueueWriter, decode_entry
from nvmefs.spec.queue import SQE_SIZE, Command

U32, U64 = (1 << 32) - 1, (1 << 64) - 1

entries_st = st.builds(Entry, nsid=st.integers(0, U32), slba=st.integers(0, U64),
                       nlb=st.integers(0, U32), esa=st.integers(0, 7), dlba=st.booleans(),
                       lbacia=st.integers(0, 3))


def numbered(i: int) -> Entry:
    """An entry that says which one it is (nsid and slba), with varied attributes."""
    return Entry(nsid=i + 1, slba=i * 8, nlb=i % 7, esa=i % 4, dlba=bool(i & 1), lbacia=i % 3)


def ids(raw: bytes) -> list[int]:
    """The numbers of `numbered` entries in `raw`, in order (and their phase-free fields checked)."""
    assert len(raw) % ENTRY_SIZE == 0
    out = []
    for at in range(0, len(raw), ENTRY_SIZE):
        got = decode_entry(raw[at:at + ENTRY_SIZE])
        i = got["nsid"] - 1
        want = numbered(i)
        assert (got["slba"], got["nlb"], got["esa"], got["dlba"], got["lbacia"]) == \
            (want.slba, want.nlb, want.esa, want.dlba, want.lbacia)
        out.append(i)
    return out


# ------------------------------------------------------------------ the entry

def test_entry_wire_layout_is_pinned():
    raw = Entry(nsid=0x11223344, nlb=0x55667788, slba=0x0102030405060708, esa=cdq.ESA_LAST_FULL,
                dlba=True, lbacia=cdq.LBACIA_NONE).encode(1)
    assert len(raw) == ENTRY_SIZE == 32
    assert raw[0:4] == bytes.fromhex("44332211")
    assert raw[4:8] == bytes.fromhex("88776655")
    assert raw[8:16] == bytes.fromhex("0807060504030201")
    assert raw[16:31] == bytes(15)
    assert raw[31] == 0b10_1_0_111_1        # LBACIA 2 | DLBA | (reserved bit 4) | ESA 7 | CDQP


@pytest.mark.parametrize("phase, esa, dlba, lbacia, byte31", [
    (0, 0, False, 0, 0x00), (1, 0, False, 0, 0x01), (0, 1, False, 0, 0x02),
    (0, 7, False, 0, 0x0E), (0, 0, True, 0, 0x20), (0, 0, False, 1, 0x40),
    (0, 0, False, 3, 0xC0), (1, 3, True, 2, 0xA7)])
def test_attribute_byte_bits(phase, esa, dlba, lbacia, byte31):
    raw = Entry(esa=esa, dlba=dlba, lbacia=lbacia).encode(phase)
    assert raw == bytes(31) + bytes([byte31])


@given(entries_st, st.integers(0, 1))
def test_entry_round_trip(entry, phase):
    raw = entry.encode(phase)
    assert len(raw) == 32 and raw[16:31] == bytes(15)
    assert raw[31] == phase | entry.esa << 1 | entry.dlba << 5 | entry.lbacia << 6
    got = decode_entry(raw)
    assert got == {"nsid": entry.nsid, "slba": entry.slba, "nlb": entry.nlb, "esa": entry.esa,
                   "event": cdq.ESA_NAMES.get(entry.esa, f"esa{entry.esa}"),
                   "dlba": int(entry.dlba), "lbacia": entry.lbacia, "cdqp": phase}
    assert decode_entry(raw + b"\xff" * 5) == got        # bytes after the entry are not its


def test_esa_event_names():
    names = [decode_entry(Entry(esa=e).encode(1))["event"] for e in range(8)]
    assert names == ["range", "first", "stopped", "suspended", "esa4", "esa5", "esa6", "full"]


@given(st.lists(st.tuples(entries_st, st.integers(0, 1)), max_size=20))
def test_jsonl_is_one_line_per_entry_equal_to_decode_entry(items):
    raws = [e.encode(p) for e, p in items]
    out = cdq.jsonl(b"".join(raws))
    assert isinstance(out, bytes)
    lines = out.decode().splitlines(keepends=True)
    assert len(lines) == len(raws)
    assert all(line.endswith("\n") for line in lines)
    for line, raw in zip(lines, raws):
        assert json.loads(line) == decode_entry(raw)
        assert list(json.loads(line)) == list(decode_entry(raw))     # same keys, same order


# ------------------------------------------------------------------ commands

def test_create_fields_and_sqe_bytes():
    cmd = cdq.create(0x1_2345_6000, 4096, 0x0102, qt=0x5A)
    assert cmd.opcode == 0x45 and cmd.nsid == 0
    assert cmd.cdw10 & 0xFF == 0                        # SEL: create
    assert cmd.cdw10 >> 16 == 0x5A                      # MOS, QT in MOS 7:0
    assert cmd.cdw11 & 1 == 1 and cmd.cdw11 >> 16 == 0x0102     # PC, CQS = CNTLID
    assert cmd.cdw12 == 1024 and cmd.prp1 == 0x1_2345_6000
    raw = cmd.encode()
    assert len(raw) == SQE_SIZE
    assert raw == bytes.fromhex(
        "45 00 0000 00000000 00000000 00000000"         # opcode flags cid, nsid, cdw2, cdw3
        "0000000000000000"                              # mptr
        "0060452301000000"                              # prp1
        "0000000000000000"                              # prp2
        "00005a00 01000201 00040000"                    # cdw10 cdw11 cdw12
        "00000000 00000000 00000000")                   # cdw13..15
    assert Command.decode(raw) == cmd


def test_create_defaults_to_a_udmq():
    cmd = cdq.create(0x2000, 64 * ENTRY_SIZE, 7)
    assert cmd == Command(0x45, cdw10=0, cdw11=1 | 7 << 16, cdw12=512, prp1=0x2000)
    assert cdq.QT_UDMQ == 0
    with pytest.raises(ValueError):
        cdq.create(0x2000, 4096, 0x10000)               # CNTLID is 16 bits


def test_delete_fields():
    cmd = cdq.delete(0xBEEF)
    assert cmd == Command(0x45, cdw10=1, cdw11=0xBEEF)
    raw = cmd.encode()
    assert raw[0] == 0x45 and raw[40:44] == bytes.fromhex("01000000")
    assert raw[44:48] == bytes.fromhex("efbe0000")


def test_set_head_fields():
    cmd = cdq.set_head(3, 100)
    assert cmd == Command(0x09, cdw10=0x21, cdw11=3, cdw12=100, cdw13=0)
    assert cmd.cdw11 >> 31 == 0                         # no ETPT without a tpt
    cmd = cdq.set_head(0xFFFF, 0x12345678, tpt=50)
    assert cmd == Command(0x09, cdw10=0x21, cdw11=0xFFFF | 1 << 31, cdw12=0x12345678, cdw13=50)
    raw = cmd.encode()
    assert raw[0] == 0x09 and raw[40:44] == bytes.fromhex("21000000")
    assert raw[44:48] == bytes.fromhex("ffff0080") and raw[52:56] == bytes.fromhex("32000000")


def test_set_head_tpt_zero_still_sets_etpt():
    cmd = cdq.set_head(1, 5, tpt=0)
    assert cmd.cdw11 == 1 | 1 << 31 and cmd.cdw12 == 5 and cmd.cdw13 == 0


def test_track_send_fields():
    start, stop = cdq.track_send(9, True), cdq.track_send(9, False)
    assert start == Command(0x3D, cdw10=1 << 16, cdw11=9)
    assert stop == Command(0x3D, cdw10=0, cdw11=9)
    assert (start.cdw10 >> 16 & 0xF, stop.cdw10 >> 16 & 0xF) == (1, 0)     # LACT 19:16
    assert start.cdw10 & 0xFF == 0                      # SEL: log user data changes
    assert start.encode()[40:48] == bytes.fromhex("00000100 09000000")


def test_created_id_is_dw0_low_half():
    assert cdq.created_id(0xABCD1234) == 0x1234 and cdq.created_id(0) == 0


# ------------------------------------------------------------------ entry stream

def drain(stream: EntryStream) -> list[bytes]:
    out = []
    while (raw := stream.next_entry()) is not None:
        out.append(raw)
    return out


def test_stream_whole_and_byte_by_byte():
    raws = [numbered(i).encode(i & 1) for i in range(5)]
    data = b"".join(raws)
    whole = EntryStream()
    whole.receive_data(data)
    assert drain(whole) == raws and whole.trailing == 0
    assert whole.next_entry() is None
    single = EntryStream()
    got = []
    for i in range(len(data)):
        single.receive_data(data[i:i + 1])
        got += drain(single)
        assert single.trailing == (i + 1) % ENTRY_SIZE
        assert len(got) == (i + 1) // ENTRY_SIZE
    assert got == raws


def test_stream_keeps_a_partial_entry_back():
    raws = [numbered(i).encode(1) for i in range(2)]
    stream = EntryStream()
    stream.receive_data(b"".join(raws) + raws[0][:13])
    assert list(stream) == raws
    assert stream.next_entry() is None and stream.trailing == 13
    stream.receive_data(raws[0][13:31])
    assert stream.next_entry() is None and stream.trailing == 31
    stream.receive_data(raws[0][31:] + b"\x01\x02")
    assert drain(stream) == [raws[0]] and stream.trailing == 2


@given(st.lists(entries_st, max_size=12), st.lists(st.integers(0, 200), max_size=30),
       st.integers(0, ENTRY_SIZE - 1), st.sampled_from([ENTRY_SIZE, 16, 5]))
def test_stream_random_splits_give_the_same_entries(entries, cuts, extra, size):
    data = b"".join(e.encode(1) for e in entries) + bytes(range(1, extra + 1))
    whole = [data[i:i + size] for i in range(0, len(data) - len(data) % size, size)]
    stream = EntryStream(size)
    got, at = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        stream.receive_data(data[at:cut])
        at = max(at, cut)
        for raw in drain(stream):
            assert len(raw) == size
            got.append(raw)
        assert stream.trailing == at - len(got) * size < size
    assert got == whole
    assert stream.trailing == len(data) % size


# ------------------------------------------------------------------ reader and writer

def ring_of(entries: int) -> bytearray:
    return bytearray(entries * ENTRY_SIZE)


def test_reader_and_writer_over_many_wraps():
    n = 5
    ring, reader, writer = ring_of(n), QueueReader(n), QueueWriter(n)
    posted = taken = 0
    for batch in [1, 4, 2, 3, 4, 1, 4, 4, 3, 2] * 4:
        assert writer.free >= batch
        writer.post(ring, [numbered(i).record() for i in range(posted, posted + batch)])
        posted += batch
        assert reader.available(ring) == batch
        assert reader.ready(ring)
        assert ids(reader.take(ring, batch)) == list(range(taken, taken + batch))
        taken += batch
        assert reader.available(ring) == 0 and not reader.ready(ring)
        assert reader.take(ring, 3) == b""
        assert writer.set_head(reader.head)
        assert writer.free == n - 1
    stats = reader.statistics()
    assert stats.taken == taken == posted == writer.posted
    assert stats.head == taken % n == writer.tail
    assert stats.wraps == taken // n >= 20
    assert stats.phase == 1 ^ (stats.wraps & 1) == writer.phase


def test_available_counts_across_the_wrap():
    n = 6
    ring, reader, writer = ring_of(n), QueueReader(n), QueueWriter(n)
    writer.post(ring, [numbered(i).record() for i in range(4)])
    assert ids(reader.take(ring, 4)) == [0, 1, 2, 3]
    assert writer.set_head(4)
    writer.post(ring, [numbered(i).record() for i in range(4, 9)])   # slots 4, 5, then 0, 1, 2 (phase 0)
    assert (writer.tail, writer.phase) == (3, 0)
    assert [decode_entry(ring[i * ENTRY_SIZE:])["cdqp"] for i in range(n)] == [0, 0, 0, 1, 1, 1]
    assert writer.free == 0
    assert reader.available(ring) == 5
    assert [reader.available(ring, k) for k in range(8)] == [0, 1, 2, 3, 4, 5, 5, 5]
    assert ids(reader.take(ring, 5)) == [4, 5, 6, 7, 8]
    assert (reader.head, reader.phase, reader.wraps) == (3, 0, 1)


def test_take_with_a_limit_smaller_than_available():
    n = 8
    ring, reader, writer = ring_of(n), QueueReader(n), QueueWriter(n)
    writer.post(ring, [numbered(i).record() for i in range(7)])
    assert reader.available(ring) == 7
    assert ids(reader.take(ring, 3)) == [0, 1, 2]
    assert reader.available(ring) == 4 and reader.head == 3
    assert reader.take(ring, 0) == b"" and reader.head == 3
    assert ids(reader.take(ring, 2)) == [3, 4]
    assert ids(reader.take(ring, 100)) == [5, 6]
    assert reader.statistics().taken == 7


def test_zeroed_ring_has_nothing():
    reader = QueueReader(4)
    ring = ring_of(4)
    assert reader.available(ring) == 0 and not reader.ready(ring)
    assert reader.take(ring, 4) == b""
    assert reader.statistics() == cdq.ReaderStatistics(head=0, phase=1, taken=0, wraps=0)


def test_entries_of_an_earlier_pass_are_not_new():
    n = 4
    ring = bytearray(b"".join(numbered(i).encode(1) for i in range(n)))     # all of pass 1
    reader = QueueReader(n)
    assert ids(reader.take(ring, 3)) == [0, 1, 2]
    assert reader.available(ring) == 1                  # slot 3, still pass 1
    assert ids(reader.take(ring, 1)) == [3] and reader.phase == 0
    assert reader.available(ring) == 0 and not reader.ready(ring)     # pass 1 left over
    assert reader.take(ring, n) == b""
    # the reader in its first pass at slot 2: slots 0 and 1 (pass 1, taken) end the run
    reader = QueueReader(n)
    reader.take(ring, 2)
    assert reader.available(ring) == 2
    assert ids(reader.take(ring, n)) == [2, 3] and reader.head == 0


def test_half_written_entry_is_not_taken():
    n = 4
    ring, reader, writer = ring_of(n), QueueReader(n), QueueWriter(n)
    writer.post(ring, [numbered(0).record()])
    raw = numbered(1).encode(1)
    ring[32:63] = raw[:31]                              # all but the phase tag byte
    assert reader.available(ring) == 1
    assert ids(reader.take(ring, n)) == [0]
    assert reader.available(ring) == 0 and not reader.ready(ring)
    ring[63] = raw[31]
    assert ids(reader.take(ring, n)) == [1]
    # the same on the second pass, over the first pass's tags
    ring = bytearray(b"".join(numbered(i).encode(1) for i in range(n)))
    reader = QueueReader(n)
    reader.take(ring, n)
    ring[0:31] = numbered(4).encode(0)[:31]
    assert reader.available(ring) == 0
    ring[31] = numbered(4).encode(0)[31]
    assert ids(reader.take(ring, n)) == [4]


def test_writer_is_full_one_entry_before_the_ring():
    n = 4
    ring, writer = ring_of(n), QueueWriter(n)
    assert writer.free == n - 1
    for i in range(n - 1):
        writer.post(ring, [numbered(i).record()])
        assert writer.free == n - 2 - i
    assert writer.free == 0 and (writer.tail + 1) % n == writer.head
    assert ring[(n - 1) * ENTRY_SIZE:] == bytes(ENTRY_SIZE)     # the free slot stays unwritten
    assert writer.set_head(2) and writer.free == 2


def test_writer_set_head_accepts_only_head_to_tail():
    n = 8
    ring, writer = ring_of(n), QueueWriter(n)
    writer.post(ring, [numbered(i).record() for i in range(3)])  # head 0, tail 3
    for bad in (4, 7, n, -1, 100):
        assert not writer.set_head(bad)
        assert writer.head == 0
    assert writer.set_head(0) and writer.set_head(1) and writer.head == 1
    assert not writer.set_head(0) and writer.head == 1  # behind the head
    assert writer.set_head(3) and writer.head == 3 and writer.free == n - 1
    writer.post(ring, [numbered(i).record() for i in range(3, 10)])  # tail wraps: head 3, tail 2
    assert writer.tail == 2 and writer.free == 0
    for good in (3, 6, 7, 0, 2):
        assert writer.set_head(good) and writer.head == good
    assert writer.free == n - 1
    for bad in (1, 3, 7):
        assert not writer.set_head(bad) and writer.head == 2


@pytest.mark.parametrize("kwargs", [
    {"entries": 0}, {"entries": 1}, {"entries": -4},
    {"entries": 4, "phase_offset": 32}, {"entries": 4, "phase_offset": -1},
    {"entries": 4, "entry_size": 16, "phase_offset": 16},
    {"entries": 4, "phase_mask": 0}, {"entries": 4, "phase_mask": 0x100},
    {"entries": 4, "entry_size": 0, "phase_offset": 0}])
def test_reader_rejects_bad_geometry(kwargs):
    with pytest.raises(ValueError):
        QueueReader(**kwargs)


def test_reader_accepts_the_smallest_ring():
    reader = QueueReader(2, entry_size=16, phase_offset=15, phase_mask=0x80)
    assert reader.available(bytearray(32)) == 0


def test_custom_phase_offset_and_mask():
    n, size = 4, 16

    def slot(i: int, tag: bool, other: int = 0) -> bytes:
        return bytes([(0x80 if tag else 0) | other]) + bytes([i]) * (size - 1)

    # pass 1: tag bit set; the other bits of the tag byte do not count
    ring = bytearray(slot(0, True) + slot(1, True, 0x7F) + slot(2, False, 0x7F) + slot(3, False))
    reader = QueueReader(n, entry_size=size, phase_offset=0, phase_mask=0x80)
    assert reader.ready(ring) and reader.available(ring) == 2
    got = reader.take(ring, n)
    assert got == ring[:2 * size] and reader.head == 2
    assert reader.available(ring) == 0
    ring[2 * size:] = slot(2, True) + slot(3, True, 0x01)
    ring[:size] = slot(4, False, 0x7F)                  # pass 2: tag bit clear
    assert reader.available(ring) == 3
    got = reader.take(ring, n)
    assert got == bytes(ring[2 * size:]) + bytes(ring[:size])
    assert (reader.head, reader.phase, reader.wraps) == (1, 0, 1)
    assert reader.available(ring) == 0                  # slot 1 still carries pass 1's tag


steps_st = st.lists(st.tuples(st.sampled_from(["post", "take"]), st.integers(0, 12)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 9), steps_st)
def test_random_interleavings_lose_nothing(n, steps):
    ring, reader, writer = ring_of(n), QueueReader(n), QueueWriter(n)
    model: list[int] = []
    posted = taken = 0
    for op, k in steps:
        if op == "post":
            batch = list(range(posted, posted + min(k, writer.free)))
            writer.post(ring, [numbered(i).record() for i in batch])
            model += batch
            posted += len(batch)
            assert writer.free == n - 1 - len(model)
        else:
            assert reader.available(ring) == len(model)
            assert reader.available(ring, k) == min(k, len(model))
            assert reader.ready(ring) == bool(model)
            got = ids(reader.take(ring, k))
            assert got == model[:len(got)] and len(got) == min(k, len(model))
            del model[:len(got)]
            taken += len(got)
            assert writer.set_head(reader.head)
    assert ids(reader.take(ring, n)) == model
    stats = reader.statistics()
    assert stats.taken == posted == writer.posted
    assert stats.head == posted % n == writer.tail and stats.wraps == posted // n

