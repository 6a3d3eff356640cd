"""The mailbox stream: fed whole, byte by byte, in any cuts, with trailing bytes;
errors at their request; rewind and discard; bounds on what is held."""

import errno
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefs.spec import identify as ID
from nvmefs.spec import passthru as P
from nvmefs.spec.commands import (FID_TIMESTAMP, OP_CREATE_IO_SQ, OP_GET_FEATURES, OP_GET_LOG_PAGE,
                                  OP_IDENTIFY, OP_READ, OP_SET_FEATURES, OP_WRITE)
from nvmefs.spec.session import MAX_LINE, NEED_DATA, MailboxSession, RequestError

ADMIN_T = P.Target("admin", "all", 1 << 20)
IO_T = P.Target("io", "all", 1 << 20, {1: ID.NsFormat(512)})
req = P.encode_request

TEXT = [req(OP_IDENTIFY, cdw10=1, data_len=4096, cid=1, text=True),
        b"\n# a comment, then a blank line\n\n",
        req(OP_GET_LOG_PAGE, nsid=0xFFFFFFFF, cdw10=0x7F0002, data_len=512, cid=2, text=True),
        req(OP_SET_FEATURES, cdw10=FID_TIMESTAMP, data=bytes(range(8)), cid=3, text=True)]
BINARY = [req(OP_IDENTIFY, cdw10=1, data_len=4096, cid=4),
          req(OP_SET_FEATURES, cdw10=FID_TIMESTAMP, data=bytes(range(8)), cid=5),
          req(OP_GET_FEATURES, cdw10=0x07, cid=6),            # its opcode, 0Ah, is also a newline
          req(OP_GET_LOG_PAGE, nsid=0xFFFFFFFF, cdw10=0x7F0002, data_len=512, cid=7)]
MIXED = [BINARY[2], TEXT[0], BINARY[1], TEXT[1], BINARY[0], TEXT[3], BINARY[2]]


def feed(pieces, target=ADMIN_T, session=None):
    """Give the pieces one receive_data each, taking every request after each:
    (requests, the error that stopped it or None, the session)."""
    s = session or MailboxSession()
    out = []
    for piece in pieces:
        s.receive_data(piece)
        while True:
            got = s.next_request(target)
            if got is NEED_DATA:
                break
            if isinstance(got, RequestError):
                return out, got, s
            out.append(got)
    return out, None, s


def cuts(stream: bytes, sizes) -> list[bytes]:
    pieces, pos = [], 0
    for n in sizes:
        pieces.append(stream[pos:pos + n])
        pos += n
    return pieces + [stream[pos:]]


def key(error):
    return error and (error.errno, error.start, str(error))


@pytest.mark.parametrize("batch", [TEXT, BINARY, MIXED], ids=["text", "binary", "mixed"])
def test_whole_byte_by_byte_and_in_random_cuts(batch):
    stream = b"".join(batch)
    whole, err, s = feed([stream])
    assert err is None and s.consumed == s.received == len(stream) and s.buffered == 0
    assert whole == [r for piece in batch for r in feed([piece])[0]]      # as if written alone
    assert feed([bytes([b]) for b in stream])[0] == whole
    rng = random.Random(7)
    for _ in range(50):
        assert feed(cuts(stream, [rng.randint(0, 200) for _ in range(20)]))[0] == whole


def test_requests_come_out_as_written():
    out, err, _ = feed([b"".join(MIXED)])
    assert err is None
    assert [(r.cmd.opcode, r.cmd.cid, r.text) for r in out] == [(0x0A, 6, False), (0x06, 1, True),
                                                               (0x09, 5, False), (0x06, 4, False),
                                                               (0x09, 3, True), (0x0A, 6, False)]
    assert out[2].data_out == bytes(range(8)) == out[4].data_out


def test_trailing_bytes_wait_for_the_rest():
    for first, rest in ((TEXT[0], b"opcode=0x06 cd"), (BINARY[0], BINARY[1][:70]), (BINARY[1], b"o")):
        out, err, s = feed([first + rest])
        assert len(out) == 1 and err is None
        assert (s.consumed, s.buffered, s.last_start) == (len(first), len(rest), 0)


def test_a_request_is_whole_only_at_its_newline_or_with_all_its_data():
    line = req(OP_IDENTIFY, cdw10=1, data_len=4096, text=True)
    assert feed([line[:-1]])[0] == []
    assert len(feed([line[:-1], b"\n"])[0]) == 1
    write = req(OP_WRITE, nsid=1, data=bytes(range(256)) * 2)
    for k in range(len(write)):
        assert feed([write[:k]], IO_T)[0] == []
    (got,), _, _ = feed([write[:100], write[100:]], IO_T)
    assert got.data_out == bytes(range(256)) * 2


def test_a_lone_byte_that_may_be_text_or_an_opcode_waits():
    get_features = req(OP_GET_FEATURES, cdw10=0x07)
    assert get_features[0:1] == b"\n"
    _, _, s = feed([b"\n"])                     # admin: 0Ah is Get Features
    assert s.consumed == 0 and s.buffered == 1
    out, _, s = feed([get_features[1:]], session=s)
    assert [r.cmd.opcode for r in out] == [0x0A]
    _, _, s = feed([b"\n"], IO_T)                # I/O: no opcode 0Ah, a blank line at once
    assert s.consumed == 1 and s.buffered == 0
    out, _, _ = feed([b"o", b"pcode=0x00 nsid=1\n"], IO_T)   # 'o' is no opcode: text
    assert [r.cmd.opcode for r in out] == [0x00]


def test_the_error_is_at_the_bad_request():
    good, bad = BINARY[0], req(OP_CREATE_IO_SQ)
    stream = good + TEXT[1] + good + bad + good
    out, err, s = feed([stream])
    assert len(out) == 2 and err.errno == errno.EPERM
    assert err.start == s.last_start == s.consumed == len(good + TEXT[1] + good)
    text = TEXT[0] + b"opcode=0x06 colour=blue\n" + TEXT[0]
    out, err, _ = feed([text])
    assert len(out) == 1 and err.errno == errno.EINVAL and err.start == len(TEXT[0])


def test_an_error_stays_until_rewind_or_discard():
    stream = BINARY[0] + req(OP_CREATE_IO_SQ) + BINARY[0]
    _, err, s = feed([stream])
    assert s.next_request(ADMIN_T) is err
    s.receive_data(BINARY[0])
    assert s.next_request(ADMIN_T) is err
    s.rewind(err.start)                          # the fs: a short write up to the bad request
    assert (s.received, s.consumed, s.buffered) == (err.start, err.start, 0)
    out, err2, _ = feed([BINARY[2]], session=s)
    assert err2 is None and [r.cmd.cid for r in out] == [6]
    _, err, s = feed([stream])
    s.discard()                                  # the fs: the write failed with the errno
    n = len(stream)
    assert (s.received, s.consumed, s.buffered, s.last_start) == (n, n, 0, n)
    out, err2, _ = feed([BINARY[2]], session=s)
    assert err2 is None and len(out) == 1 and s.consumed == len(stream) + 64


def test_a_bad_header_fails_before_its_data_arrives():
    t = P.Target("io", "all", 128 * 1024, {1: ID.NsFormat(512)})
    for bad, err in ((req(OP_WRITE, nsid=1, cdw12=0xFFFF, data_len=65536 * 512), errno.E2BIG),
                     (req(OP_WRITE, nsid=1, cdw12=7, data_len=512), errno.EINVAL),
                     (req(OP_WRITE, nsid=5, data_len=512), errno.ENXIO)):
        out, e, s = feed([bad[:64]], t)
        assert e.errno == err and e.start == 0 and s.buffered == 64


def test_a_text_line_has_a_bound():
    head = b"opcode=0x06 cdw10=1 data_len=4096"
    near = head + b" " * (MAX_LINE - len(head) - 1) + b"\n"
    assert len(near) == MAX_LINE and len(feed([near])[0]) == 1
    out, err, s = feed([TEXT[0], b"#" * (MAX_LINE - 1)])
    assert len(out) == 1 and err is None                  # not yet: the newline may come
    out, err, s = feed([b"#"], session=s)
    assert err.errno == errno.E2BIG and err.start == len(TEXT[0])
    out, err, s = feed([b"x" * 1000] * 70)                 # fed in pieces: at the bound, not later
    assert err.errno == errno.E2BIG and err.start == 0 and s.received == -(-MAX_LINE // 1000) * 1000


def test_offsets_and_rewind_give_back_the_last_request():
    a, b = BINARY[0], BINARY[1]
    out, _, s = feed([a + b + b"opcode"])
    assert (s.received, s.consumed, s.buffered, s.last_start) == (len(a + b) + 6, len(a + b), 6, len(a))
    s.rewind(len(a))                                       # b is returned no more
    assert (s.received, s.consumed, s.buffered) == (len(a), len(a), 0)
    out, _, s = feed([b], session=s)
    assert [r.cmd.cid for r in out] == [5]
    with pytest.raises(ValueError):
        s.rewind(len(a) - 1)                               # before the last returned request
    with pytest.raises(ValueError):
        s.rewind(s.received + 1)


def test_rewind_into_the_last_request_keeps_its_earlier_bytes():
    """A request begun in an earlier write and ended in this one, that the fs cannot
    admit: only this write's bytes are given back (the fs cuts at max(last_start, start))."""
    big = BINARY[1]
    s = MailboxSession()
    s.receive_data(BINARY[0] + big[:30])                   # write 1: taken whole
    assert s.next_request(ADMIN_T).cmd.cid == 4 and s.next_request(ADMIN_T) is NEED_DATA
    start2 = s.received
    s.receive_data(big[30:] + BINARY[2])                   # write 2 completes big
    assert s.next_request(ADMIN_T).cmd.cid == 5 and s.last_start == len(BINARY[0]) < start2
    s.rewind(max(s.last_start, start2))                    # nothing of write 2 taken
    assert (s.received, s.consumed, s.buffered) == (start2, len(BINARY[0]), 30)
    out, _, _ = feed([big[30:] + BINARY[2]], session=s)    # write 2 again
    assert [r.cmd.cid for r in out] == [5, 6] and out[0].data_out == bytes(range(8))


def test_rewind_and_skipped_lines():
    read = req(OP_READ, nsid=1, data_len=512, text=True)
    out, _, s = feed([read + b"\n\n"], IO_T)
    assert s.consumed == len(read) + 2 and s.last_start == 0
    s.rewind(len(read) + 1)                                # forgets one blank line only
    assert (s.consumed, s.received) == (len(read) + 1,) * 2


def _stream():
    good = st.sampled_from(TEXT + BINARY + [req(OP_READ, nsid=1, data_len=512, text=True),
                                            req(OP_WRITE, nsid=1, data=bytes(512))])
    bad = st.sampled_from([req(OP_CREATE_IO_SQ), b"opcode=0x06 colour=blue\n", req(0x2E),
                           req(OP_IDENTIFY, data_len=4094), b"\x00" * 70])
    return st.lists(st.one_of(good, good, good, bad), min_size=1, max_size=8).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_stream(), st.lists(st.integers(0, 700), max_size=12), st.sampled_from([ADMIN_T, IO_T]))
def test_any_cut_gives_the_same_requests_and_the_same_first_error(stream, sizes, target):
    whole, err, s = feed([stream], target)
    cut, cut_err, cut_s = feed(cuts(stream, sizes), target)
    assert cut == whole and key(cut_err) == key(err)
    assert (cut_s.consumed, cut_s.last_start) == (s.consumed, s.last_start)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(1, 48), st.integers(0, 0xFFFF),
       st.integers(0, P.MAX_TIMEOUT_MS), st.integers(0, 0xFFFFFFFF), st.booleans(), st.booleans())
def test_encode_request_round_trips(cid, cdw13, nlb, slba, timeout_ms, cdw2, write, text):
    data = random.Random(cid).randbytes(512 * nlb) if write else b""
    raw = req(OP_WRITE if write else OP_READ, nsid=1, cdw10=slba, cdw12=nlb - 1, cdw13=cdw13, cdw2=cdw2,
              data_len=512 * nlb, data=data, cid=cid, timeout_ms=timeout_ms, text=text)
    (r,), err, s = feed([raw], IO_T)
    assert err is None and s.consumed == len(raw) and r.text == text
    assert (r.cmd.cid, r.cmd.cdw10, r.cmd.cdw12, r.cmd.cdw13, r.cmd.cdw2, r.timeout_ms, r.data_out) == \
        (cid, slba, nlb - 1, cdw13, cdw2, timeout_ms, data)
    assert r.data_len == 512 * nlb and r.data_in_len == (0 if write else 512 * nlb)
