"""passthru requests with metadata: the byte layout (pinned), parsing whole, byte by
byte and with trailing bytes, text keys, validation against extended, separate,
PI-only and metadata-free formats with the lengths each message names, answers
and their sizes."""

import errno
import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefs.spec import identify as ID
from nvmefs.spec import passthru as P
from nvmefs.spec import status as S
from nvmefs.spec.commands import (OP_COMPARE, OP_DSM, OP_FLUSH, OP_IDENTIFY, OP_READ, OP_VERIFY,
                                  OP_WRITE, OP_WRITE_ZEROES)
from nvmefs.spec.queue import CQE_SIZE, Command, Completion, make_status
from nvmefs.spec.session import NEED_DATA, MailboxSession, RequestError

NONE, EXTENDED, SEPARATE = ID.NsFormat(512), ID.NsFormat(512, 8, True), ID.NsFormat(512, 16)
PI_SEPARATE, PI_EXTENDED = ID.NsFormat(512, 8, False, 0, 1), ID.NsFormat(512, 8, True, 0, 1)
NAMESPACES = {1: NONE, 2: EXTENDED, 3: SEPARATE, 4: PI_SEPARATE, 5: PI_EXTENDED,
              6: ID.NsFormat(4096, 64, True), 7: ID.NsFormat(512, 8), 8: ID.NsFormat(512, 16, False, 0, 1)}
IO_T = P.Target("io", "all", 512 * 1024, NAMESPACES)
ADMIN_T = P.Target("admin", "all", 512 * 1024)
PRACT = 1 << 29
req = P.encode_request


def parse(write: bytes, target: P.Target = IO_T):
    s = MailboxSession()
    s.receive_data(write)
    return s.next_request(target)


def feed(pieces, target=IO_T):
    s = MailboxSession()
    out = []
    for piece in pieces:
        s.receive_data(piece)
        while (got := s.next_request(target)) is not NEED_DATA:
            if isinstance(got, RequestError):
                return out, got, s
            out.append(got)
    return out, None, s


def rw(op, nsid, blocks, **fields):
    return req(op, nsid=nsid, cdw10=100, cdw12=blocks - 1 | fields.pop("cdw12", 0), **fields)


# ------------------------------------------------------------------ layout

def test_binary_layout_entry_then_data_then_metadata():
    data, md = bytes(range(256)) * 4, bytes(range(32))
    raw = rw(OP_WRITE, 3, 2, data=data, metadata=md, cid=9)
    assert len(raw) == 64 + 1024 + 32
    descriptor = [int.from_bytes(raw[i:i + 4], "little") for i in range(24, 40, 4)]
    assert descriptor == [1024, 32, 0, 0] and raw[16:24] == bytes(8)       # MPTR stays 0
    assert raw[64:1088] == data and raw[1088:] == md
    r = parse(raw)
    assert (r.data_out, r.metadata_out, r.data_len, r.metadata_len) == (data, md, 1024, 32)
    assert (r.data_in_len, r.metadata_in_len, r.data_out_len, r.metadata_out_len) == (0, 0, 1024, 32)
    r = parse(rw(OP_READ, 3, 2, data_len=1024, metadata_len=32))
    assert (r.data_out, r.metadata_out, r.data_in_len, r.metadata_in_len) == (b"", b"", 1024, 32)
    assert len(rw(OP_READ, 3, 2, data_len=1024, metadata_len=32)) == 64       # nothing follows


def test_a_request_is_a_backend_request():
    from nvmefs.backends.base import Request
    r = parse(rw(OP_WRITE, 3, 1, data=bytes(512), metadata=bytes(16)))
    for name in Request._fields:
        assert hasattr(r, name), name
    assert Request._fields[-2:] == ("metadata_out", "metadata_in_len")
    assert Completion._fields[-1] == "metadata"
    assert Completion(0, 1, 2, 3, 4, 5, b"d").metadata == b""


BATCH = [rw(OP_WRITE, 3, 2, data=os.urandom(1024), metadata=os.urandom(32), cid=1),
         rw(OP_READ, 3, 2, data_len=1024, metadata_len=32, cid=2),
         rw(OP_WRITE, 2, 2, data=os.urandom(1040), cid=3),
         rw(OP_WRITE, 3, 1, data=os.urandom(512), metadata=os.urandom(16), cid=4, text=True),
         rw(OP_COMPARE, 3, 1, data=os.urandom(512), metadata=os.urandom(16), cid=5),
         rw(OP_WRITE, 1, 1, data=os.urandom(512), cid=6)]


def test_parse_whole_byte_by_byte_in_cuts_and_with_trailing_bytes():
    stream = b"".join(BATCH)
    whole, err, s = feed([stream])
    assert err is None and s.consumed == len(stream) and [r.cmd.cid for r in whole] == [1, 2, 3, 4, 5, 6]
    assert whole[0].metadata_out == BATCH[0][64 + 1024:] and whole[4].metadata_out == BATCH[4][-16:]
    assert whole[3].text and len(whole[3].metadata_out) == 16
    assert feed([bytes([b]) for b in stream])[0] == whole
    rng = random.Random(5)
    for _ in range(30):
        sizes, pos, pieces = [rng.randint(0, 700) for _ in range(12)], 0, []
        for n in sizes:
            pieces.append(stream[pos:pos + n])
            pos += n
        assert feed(pieces + [stream[pos:]])[0] == whole
    for k in range(64, len(BATCH[0])):          # a write is whole only with its metadata
        out, err, s = feed([BATCH[0][:k]])
        assert out == [] and err is None and s.consumed == 0
    out, err, s = feed([BATCH[0] + BATCH[1][:10]])
    assert len(out) == 1 and (s.consumed, s.buffered) == (len(BATCH[0]), 10)
    out, err, s = feed([BATCH[0] + b"opc"])
    assert len(out) == 1 and s.buffered == 3


def test_text_keys():
    md = bytes(range(16))
    r = parse(b"opcode=0x01 nsid=3 cdw12=0 data=" + bytes(512).hex().encode() +
              b" metadata=" + md.hex().encode() + b"\n")
    assert (r.metadata_len, r.metadata_out, r.text) == (16, md, True)
    r = parse(b"opcode=0x02 nsid=3 cdw12=1 data_len=1024 metadata_len=32\n")
    assert (r.metadata_in_len, r.metadata_out) == (32, b"")
    line = rw(OP_WRITE, 3, 1, data=bytes(512), metadata=md, text=True)
    assert b" metadata=000102" in line and b"metadata_len" not in line and parse(line).metadata_out == md
    for bad, says in ((b"opcode=0x01 nsid=3 data=" + bytes(512).hex().encode() + b" metadata_len=16\n",
                       "metadata_len=16 needs metadata=<hex>"),
                      (b"opcode=0x01 nsid=3 data=" + bytes(512).hex().encode() +
                       b" metadata_len=16 metadata=00\n", "metadata= has 1 bytes"),
                      (b"opcode=0x02 nsid=3 data_len=512 metadata_len=16 metadata=" + md.hex().encode() +
                       b"\n", "metadata= has 16 bytes"),
                      (b"opcode=0x02 nsid=3 data_len=512 metadata=zz\n", "metadata is not hex"),
                      (b"opcode=0x02 nsid=3 metadata=00 metadata=00\n", "metadata given twice")):
        out = parse(bad)
        assert isinstance(out, RequestError) and out.errno == errno.EINVAL and says in str(out), out


# ------------------------------------------------------------------ validation

def refusal(write: bytes, target: P.Target = IO_T) -> tuple[int, str]:
    out = parse(write, target)
    assert isinstance(out, RequestError), out
    return out.errno, str(out)


def accepted(write: bytes, target: P.Target = IO_T) -> P.PassthruRequest:
    out = parse(write, target)
    assert not isinstance(out, RequestError), out
    return out


def test_extended_lbas_move_metadata_in_the_data():
    r = accepted(rw(OP_READ, 2, 2, data_len=1040))               # `nvme read -z 1040`
    assert (r.data_in_len, r.metadata_in_len) == (1040, 0)
    accepted(rw(OP_WRITE, 2, 2, data=bytes(1040)))
    assert refusal(rw(OP_READ, 2, 2, data_len=1024)) == (errno.EINVAL, (
        "data_len=1024, but this Read moves 1040 bytes (2 blocks of 512+8, extended LBA)"))
    err, message = refusal(rw(OP_READ, 2, 2, data_len=1040, metadata_len=16))
    assert err == errno.EINVAL and message.startswith(
        "metadata_len=16, but this Read moves 0 bytes of metadata (extended LBA: each block's 8 "
        "bytes of metadata are in the data, data_len 2 x 512+8)")
    assert refusal(rw(OP_READ, 6, 3, data_len=3 * 4096)) == (errno.EINVAL, (
        "data_len=12288, but this Read moves 12480 bytes (3 blocks of 4096+64, extended LBA)"))


def test_separate_metadata_needs_its_buffer():
    r = accepted(rw(OP_READ, 3, 2, data_len=1024, metadata_len=32))
    assert (r.data_in_len, r.metadata_in_len) == (1024, 32)
    accepted(rw(OP_WRITE, 3, 2, data=bytes(1024), metadata=bytes(32)))
    accepted(rw(OP_COMPARE, 3, 1, data=bytes(512), metadata=bytes(16)))
    assert refusal(rw(OP_READ, 3, 2, data_len=1024)) == (errno.EINVAL, (
        "metadata_len=0, but this Read moves 32 bytes of metadata (2 blocks x 16, separate metadata)"))
    assert refusal(rw(OP_WRITE, 3, 2, data=bytes(1024), metadata=bytes(16)))[1].startswith(
        "metadata_len=16, but this Write moves 32 bytes of metadata")
    assert refusal(rw(OP_READ, 3, 2, data_len=1056, metadata_len=32)) == (errno.EINVAL, (
        "data_len=1056, but this Read moves 1024 bytes (2 blocks of 512; their metadata goes in "
        "metadata_len, separate metadata)"))


def test_pract_with_pi_only_metadata_needs_no_buffer():
    # ms 8 with protection information: PRACT strips or inserts it, nothing moves
    for md in (0, 16):
        r = accepted(rw(OP_READ, 4, 2, data_len=1024, metadata_len=md, cdw12=PRACT))
        assert r.metadata_in_len == md and r.cmd.cdw12 == PRACT | 1
    err, message = refusal(rw(OP_READ, 4, 2, data_len=1024, metadata_len=8, cdw12=PRACT))
    assert err == errno.EINVAL and message.startswith(
        "metadata_len=8, but this Read moves 0 or 16 bytes of metadata (PRACT: the controller "
        "strips or inserts the 8-byte protection information")
    assert refusal(rw(OP_READ, 4, 2, data_len=1024))[1].startswith(     # PRACT 0: it moves
        "metadata_len=0, but this Read moves 16 bytes of metadata")
    accepted(rw(OP_WRITE, 5, 2, data=bytes(1024), cdw12=PRACT))        # extended: data only
    assert refusal(rw(OP_WRITE, 5, 2, data=bytes(1040), cdw12=PRACT))[1].startswith(
        "data_len=1040, but this Write moves 1024 bytes (2 blocks of 512, extended LBA; PRACT")
    accepted(rw(OP_WRITE, 5, 2, data=bytes(1040)))                     # PRACT 0: 512+8 each
    # no protection information (DPS 0), or metadata larger than the PI: PRACT changes nothing
    assert refusal(rw(OP_READ, 7, 2, data_len=1024, cdw12=PRACT))[1].startswith(
        "metadata_len=0, but this Read moves 16 bytes")
    assert refusal(rw(OP_READ, 8, 2, data_len=1024, cdw12=PRACT))[1].startswith(
        "metadata_len=0, but this Read moves 32 bytes")


def test_protection_information_fields_pass_through():
    fields = dict(cdw12=0xF << 26 | 3, cdw13=0x77, cdw14=0x12345678, cdw15=0xBEEF << 16 | 0xCAFE)
    r = accepted(req(OP_WRITE, nsid=3, cdw10=5, data=bytes(2048), metadata=bytes(64), **fields))
    assert r.cmd == Command(OP_WRITE, nsid=3, cdw10=5, **fields)
    r = accepted(req(OP_READ, nsid=1, data_len=2048, **fields))
    assert r.cmd == Command(OP_READ, nsid=1, **fields)


def test_no_metadata_in_the_format_means_none_in_the_request():
    assert refusal(rw(OP_READ, 1, 2, data_len=1024, metadata_len=16)) == (errno.EINVAL, (
        "metadata_len=16, but this Read moves 0 bytes of metadata (the namespace's LBA format "
        "has no metadata)"))
    assert refusal(rw(OP_READ, 1, 8, data_len=512)) == (errno.EINVAL, (
        "data_len=512, but this Read moves 4096 bytes (8 blocks of 512)"))


def test_commands_that_move_no_blocks_take_no_metadata():
    err, message = refusal(req(OP_IDENTIFY, cdw10=1, data_len=4096, metadata_len=8), ADMIN_T)
    assert err == errno.EINVAL and "admin commands have no metadata buffer" in message
    err, message = refusal(req(OP_DSM, nsid=3, data=bytes(16), metadata=bytes(16)))
    assert err == errno.EINVAL and "Dataset Management moves no metadata" in message
    for op in (OP_FLUSH, OP_WRITE_ZEROES, OP_VERIFY):         # no data: no metadata either
        err, message = refusal(req(op, nsid=3, metadata_len=16))
        assert err == errno.EINVAL and "metadata_len is not 0" in message
    effects = [0] * 256
    effects[0xC2] = 1                                          # a vendor read the log lists
    err, message = refusal(req(0xC2, nsid=3, data_len=8, metadata_len=8),
                           P.Target("io", "all", 4096, NAMESPACES, {0: effects}))
    assert err == errno.EINVAL and "does not know what metadata opcode 0xc2 moves" in message


def test_mptr_stays_zero_the_daemon_supplies_the_buffer():
    err, message = refusal(rw(OP_READ, 3, 1, data_len=512, metadata_len=16, mptr=0x1000))
    assert err == errno.EINVAL and "MPTR" in message and "the daemon supplies the metadata buffer" \
        in message


def test_a_backend_without_separate_metadata_refuses_it():
    t = P.Target("io", "all", 512 * 1024, NAMESPACES, metadata_refusal="NVMe/TCP has no MPTR")
    err, message = refusal(rw(OP_READ, 3, 2, data_len=1024, metadata_len=32), t)
    assert (err, message) == (errno.EOPNOTSUPP, "this Read needs a separate metadata buffer "
                              "(2 blocks x 16): NVMe/TCP has no MPTR")
    assert refusal(rw(OP_READ, 3, 2, data_len=1024), t)[0] == errno.EOPNOTSUPP
    accepted(rw(OP_READ, 2, 2, data_len=1040), t)             # extended: it is data
    assert refusal(rw(OP_READ, 2, 2, data_len=1040, metadata_len=16), t)[0] == errno.EINVAL
    assert refusal(rw(OP_READ, 1, 2, data_len=1024, metadata_len=16), t)[0] == errno.EINVAL
    accepted(rw(OP_READ, 4, 2, data_len=1024, cdw12=PRACT), t)  # PI stripped: nothing moves
    accepted(rw(OP_READ, 1, 2, data_len=1024), t)


def test_metadata_len_is_bounded_like_data_len():
    t = P.Target("io", "all", 4096, {1: ID.NsFormat(512, 64)})
    err, message = refusal(rw(OP_READ, 1, 8, data_len=4096, metadata_len=8192), t)
    assert err == errno.E2BIG and message.startswith("metadata_len=8192 is above 4096 bytes")


# ------------------------------------------------------------------ answers

def test_binary_answer_is_cqe_data_metadata():
    r = parse(rw(OP_READ, 3, 2, data_len=1024, metadata_len=32, cid=7))
    data, md = os.urandom(1024), os.urandom(32)
    parts = P.response_parts(r, Completion(data=data, metadata=md))
    assert len(parts) == 3 and parts[1] is data and parts[2] is md
    out = P.encode_response(r, Completion(data=data, metadata=md))
    assert len(out) == CQE_SIZE + 1024 + 32 == P.answer_size(r)
    assert Completion.decode(out[:16]).cid == 7 and out[16:1040] == data and out[1040:] == md
    failed = P.encode_response(r, Completion(make_status(2, 0x81)))
    assert failed[16:] == bytes(1024 + 32)                      # zeros, whatever the status
    w = parse(rw(OP_WRITE, 3, 1, data=bytes(512), metadata=bytes(16)))
    assert P.encode_response(w, Completion()) == Completion().encode(phase=1)


def test_text_answer_shows_the_metadata_after_the_data():
    r = parse(rw(OP_READ, 3, 2, data_len=1024, metadata_len=32, cid=3, text=True))
    data, md = os.urandom(1024), bytes(range(32))
    text = P.encode_response(r, Completion(dw0=1, data=data, metadata=md)).decode()
    lines = text.split("\n")
    assert lines[0] == ("status=0x0000 sct=0x0 sc=0x00 dnr=0 more=0 crd=0 result=0x00000001 "
                        "dw1=0x00000000 cid=3 data_len=1024 metadata_len=32 name=SUCCESS")
    assert lines[1:65] == P.xxd(data).splitlines() and lines[65] == "mptr:"
    assert lines[66:68] == ["00000400: 0001 0203 0405 0607 0809 0a0b 0c0d 0e0f  ................",
                            "00000410: 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f  ................"]
    assert lines[68:] == ["", ""]
    assert not set("mptr:") & set("0123456789abcdefABCDEF")    # `xxd -r` reads past it
    plain = parse(rw(OP_READ, 1, 2, data_len=1024, text=True))
    assert "metadata" not in P.encode_response(plain, Completion(data=data)).decode()


_LONGEST = max(len(S.describe(s).name) for s in range(0x800))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([OP_READ, OP_WRITE, OP_COMPARE]), st.sampled_from([1, 2, 3, 4, 5, 6]),
       st.integers(1, 6), st.booleans(), st.integers(0, 0x7FFF), st.integers(0, 30000),
       st.integers(0, 3000), st.booleans())
def test_answer_size_is_exact_for_binary_and_a_bound_for_text(op, nsid, blocks, text, status,
                                                               returned, returned_md, pract):
    fmt = NAMESPACES[nsid]
    strip = pract and fmt.dps and fmt.ms == 8
    unit = fmt.block + fmt.ms if fmt.extended and not strip else fmt.block
    md = 0 if fmt.extended or strip else fmt.ms * blocks
    out = op & 3 == 1
    write = rw(op, nsid, blocks, cdw12=PRACT if pract else 0, text=text,
               data=bytes(unit * blocks) if out else b"", metadata=bytes(md) if out else b"",
               data_len=unit * blocks, metadata_len=md)
    r = accepted(write)
    cpl = Completion(status, data=os.urandom(returned), metadata=os.urandom(returned_md))
    answer = P.encode_response(r, cpl)
    assert answer == b"".join(P.response_parts(r, cpl))
    slack = _LONGEST - len(S.describe(status).name) if text else 0
    assert P.answer_size(r) == len(answer) + slack
