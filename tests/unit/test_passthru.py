"""passthru requests: both encodings, validation errnos, responses, and fuzzing."""

import errno
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefs.spec import passthru as P
from nvmefs.spec.logs import CSUPP, LBCC, NCC
from nvmefs.spec.queue import Command, Completion, make_status

ADMIN_T = P.Target("admin", "all", 512 * 1024)
IO_T = P.Target("io", "all", 512 * 1024, {1: 512, 2: 4096})


def binary(opcode, nsid=0, cdw10=0, cdw11=0, cdw12=0, data_len=0, data=b"", cid=0, flags=0,
           md_len=0, timeout_ms=0, reserved=0, mptr=0, cdw2=0, cdw3=0):
    return struct.pack("<BBHIIIQIIII6I", opcode, flags, cid, nsid, cdw2, cdw3, mptr, data_len,
                       md_len, timeout_ms, reserved, cdw10, cdw11, cdw12, 0, 0, 0) + data


def parse_all(buf: bytes) -> list:
    out, pos = [], 0
    while pos < len(buf):
        req, pos = P.parse(buf, pos)
        if req is not None:
            out.append(req)
    return out


def test_binary_layout_and_transfer_descriptor():
    raw = binary(0x06, cdw10=1, data_len=4096, cid=0xBEEF, timeout_ms=250, cdw2=2, cdw3=3)
    assert len(raw) == 64
    (req,) = parse_all(raw)
    assert req.cmd == Command(0x06, cdw10=1, cid=0xBEEF, cdw2=2, cdw3=3)
    assert (req.data_len, req.timeout_ms, req.data_in_len, req.text) == (4096, 250, 4096, False)


def test_binary_whole_byte_by_byte_and_with_trailing_bytes():
    write = binary(0x01, nsid=1, cdw12=0, data_len=512, data=bytes(range(256)) * 2)
    reqs = parse_all(write)
    assert len(reqs) == 1 and reqs[0].data_out == bytes(range(256)) * 2
    for k in range(1, len(write)):         # fed byte by byte, every proper prefix is truncated
        with pytest.raises(P.RequestError) as e:
            P.parse(write[:k], 0)
        assert e.value.truncated and e.value.errno == errno.EINVAL
    req, end = P.parse(write + b"\x02\x00", 0)      # trailing bytes start the next request
    assert end == len(write) and req == reqs[0]


def test_text_requests_and_blank_lines():
    text = (b"opcode=0x06 cdw10=1 data_len=4096 cid=7\n\n# a comment\n"
            b"opcode=2 nsid=0xffffffff cdw10=0x007f0002 data_len=512 timeout_ms=1000\n"
            b"opcode=0x09 cdw10=0x0e data=00112233445566778899aabbccddeeff\n"
            b"opcode=0x06 cdw10=1 data_len=4096")
    a, b, c, d = parse_all(text)
    assert a.cmd == Command(0x06, cdw10=1, cid=7) and a.text and a.data_len == 4096
    assert (b.cmd.nsid, b.cmd.cdw10, b.timeout_ms) == (0xFFFFFFFF, 0x7F0002, 1000)
    assert c.data_out == bytes.fromhex("00112233445566778899aabbccddeeff") and c.data_len == 16
    assert d.cmd == a.cmd.with_cid(0)       # the last line needs no newline
    # byte by byte: a line is a request once complete
    line = b"opcode=0x06 cdw10=1 data_len=4096\n"
    assert P.parse(line + b"trailing", 0)[1] == len(line)


def test_mixed_binary_and_text_in_one_write():
    write = binary(0x0A, cdw10=0x07) + b"opcode=0x0a cdw10=0x06\n" + binary(0x06, cdw10=1, data_len=4096)
    kinds = [r.text for r in parse_all(write)]
    assert kinds == [False, True, False]


@pytest.mark.parametrize("write,err", [
    (binary(0x06, cdw10=1, data_len=4096)[:63], errno.EINVAL),           # truncated entry
    (binary(0x01, nsid=1, data_len=512, data=bytes(100)), errno.EINVAL),  # truncated data
    (binary(0x06, cdw10=1, data_len=4096, reserved=1), errno.EINVAL),
    (binary(0x06, cdw10=1, data_len=4096, mptr=0x1000), errno.EINVAL),
    (binary(0x06, cdw10=1, data_len=4096, flags=0x01), errno.EINVAL),    # fused
    (binary(0x06, cdw10=1, data_len=4096, flags=0x40), errno.EINVAL),    # PSDT
    (binary(0x06, cdw10=1, data_len=4096, flags=0x04), errno.EINVAL),    # reserved flags
    (binary(0x06, cdw10=1, data_len=4096, md_len=8), errno.EOPNOTSUPP),
    (binary(0x06, cdw10=1, data_len=4094), errno.EINVAL),                # not a multiple of 4
    (binary(0x04, cdw10=1, data_len=4096), errno.EINVAL),                # no-data opcode with data
    (binary(0x03, data_len=4), errno.EINVAL),                            # bidirectional
    (b"opcode=0x06 cdw10=1 data_len=4096 cdw10=2\n", errno.EINVAL),     # duplicate key
    (b"opcode=0x06 colour=blue\n", errno.EINVAL),
    (b"opcode=0x106\n", errno.EINVAL),
    (b"nsid=1\n", errno.EINVAL),
    (b"opcode=0x09 data=abc\n", errno.EINVAL),
    (b"opcode=0x09 data_len=4\n", errno.EINVAL),
    (b"opcode=0x06 data=00000000\n", errno.EINVAL),
    (b"opcode=0x06 cdw10=\xff\n", errno.EINVAL),
])
def test_malformed_requests(write, err):
    with pytest.raises(P.RequestError) as e:
        for req in parse_all(write):
            P.validate(req, ADMIN_T)
    assert e.value.errno == err


@pytest.mark.parametrize("target,write,err", [
    (ADMIN_T, binary(0x02, cdw10=0x7F0002, data_len=1024 * 1024), errno.E2BIG),
    (ADMIN_T, binary(0x06, cdw10=1, data_len=4096, timeout_ms=P.MAX_TIMEOUT_MS + 1), errno.ERANGE),
    (ADMIN_T, binary(0x06, cdw10=1, data_len=512), errno.EINVAL),       # Identify is 4096
    (ADMIN_T, binary(0x02, cdw10=0x7F0002, data_len=4096), errno.EINVAL),  # NUMD says 512
    (ADMIN_T, binary(0x2E), errno.EOPNOTSUPP),                          # unknown opcode
    (ADMIN_T, binary(0x01), errno.EPERM),                               # create I/O SQ
    (ADMIN_T, binary(0x05), errno.EPERM),
    (ADMIN_T, binary(0x00), errno.EPERM),
    (ADMIN_T, binary(0x04), errno.EPERM),
    (ADMIN_T, binary(0x08), errno.EPERM),                               # abort
    (ADMIN_T, binary(0x0C), errno.EPERM),                               # AER
    (ADMIN_T, binary(0x7C), errno.EPERM),                               # doorbell buffer config
    (ADMIN_T, binary(0x45), errno.EPERM),                               # CDQ: its memory is ours
    (IO_T, binary(0x02, nsid=3, data_len=512), errno.ENXIO),
    (IO_T, binary(0x00, nsid=0xFFFFFFFF), errno.ENXIO),                 # no broadcast flush
    (IO_T, binary(0x02, nsid=1, cdw12=7, data_len=512), errno.EINVAL),  # 8 blocks need 4096
    (IO_T, binary(0x02, nsid=2, cdw12=0, data_len=512), errno.EINVAL),  # 4 KiB blocks
    (IO_T, binary(0x08, nsid=1, data_len=0, cdw12=3) + b"", None),
])
def test_validation_against_the_target(target, write, err):
    (req,) = parse_all(write)
    if err is None:
        P.validate(req, target)
        return
    with pytest.raises(P.RequestError) as e:
        P.validate(req, target)
    assert e.value.errno == err


def test_effects_log_decides_support():
    effects = [0] * 256
    effects[0x06] = CSUPP
    t = P.Target("admin", "all", 0, effects=effects)
    P.validate(parse_all(binary(0x06, cdw10=1, data_len=4096))[0], t)
    with pytest.raises(P.RequestError) as e:          # known, but the controller lacks it
        P.validate(parse_all(binary(0x0A, cdw10=6))[0], t)
    assert e.value.errno == errno.EOPNOTSUPP
    effects[0xC1] = CSUPP                             # a vendor opcode the log lists
    P.validate(parse_all(binary(0xC1, data_len=0))[0], t)


def test_split_write_stops_at_the_first_bad_request():
    good = binary(0x06, cdw10=1, data_len=4096)
    reqs, pos, err = P.split_write(good + good + binary(0x01) + good, ADMIN_T)
    assert len(reqs) == 2 and pos == 128 and err.errno == errno.EPERM
    reqs, pos, err = P.split_write(good + good[:30], ADMIN_T)
    assert len(reqs) == 1 and pos == 64 and err.truncated
    reqs, pos, err = P.split_write(good + b"\n\n", ADMIN_T)
    assert len(reqs) == 1 and pos == 66 and err is None


def test_policy():
    for op in (0x02, 0x06, 0x0A):
        P.check_policy("readonly", "admin", op)
    P.check_policy("readonly", "io", 0x02)
    for queue, op in (("admin", 0x09), ("admin", 0x80), ("admin", 0x84), ("admin", 0x10),
                      ("admin", 0x11), ("admin", 0x0D), ("admin", 0x15), ("admin", 0xC0),
                      ("io", 0x01), ("io", 0x08), ("io", 0x09), ("io", 0x90)):
        with pytest.raises(P.RequestError) as e:
            P.check_policy("readonly", queue, op)
        assert e.value.errno == errno.EACCES
        P.check_policy("all", queue, op)
    with pytest.raises(P.RequestError):               # the effects log can make a read intrusive
        P.check_policy("readonly", "admin", 0x02, CSUPP | LBCC)
    with pytest.raises(P.RequestError):
        P.check_policy("readonly", "admin", 0x06, CSUPP | NCC)
    with pytest.raises(P.RequestError) as e:
        P.check_policy("off", "admin", 0x06)
    assert e.value.errno == errno.EACCES


def test_binary_response_framing():
    (req,) = parse_all(binary(0x06, cdw10=1, data_len=4096, cid=0x1234))
    cpl = Completion(make_status(1, 0x09, dnr=True), dw0=5, dw1=6, sqhd=7, sqid=0, cid=99,
                     data=b"abc")
    out = P.encode_response(req, cpl)
    assert len(out) == 16 + 4096 and out[16:19] == b"abc" and out[19:] == bytes(4093)
    back = Completion.decode(out[:16])
    assert (back.cid, back.sct, back.sc, back.dnr, back.dw0, back.dw1, back.sqhd) == \
        (0x1234, 1, 0x09, True, 5, 6, 7)
    assert out[14] & 1 == 1                        # phase tag
    (write,) = parse_all(binary(0x01, nsid=1, data_len=512, data=bytes(512)))
    assert len(P.encode_response(write, Completion())) == 16   # nothing comes back for a write


def test_text_response():
    (req,) = parse_all(b"opcode=0x06 cdw10=1 data_len=4096 cid=3\n")
    data = os.urandom(4096)
    out = P.encode_response(req, Completion(0, dw0=0x10, data=data)).decode()
    lines = out.split("\n")
    first, dump = lines[0], lines[1:-2]
    assert first == ("status=0x0000 sct=0x0 sc=0x00 dnr=0 more=0 crd=0 result=0x00000010 "
                     "dw1=0x00000000 cid=3 data_len=4096 name=SUCCESS")
    assert lines[-2:] == ["", ""] and len(dump) == 256 and P.xxd(data).splitlines() == dump
    failed = P.encode_response(req, Completion(make_status(0, 2, dnr=True))).decode()
    assert "status=0x4002 sct=0x0 sc=0x02 dnr=1" in failed and "name=INVALID_FIELD" in failed


def _valid_write() -> st.SearchStrategy[bytes]:
    reqs = st.sampled_from([
        binary(0x06, cdw10=1, data_len=4096), binary(0x02, cdw10=0x7F0002, nsid=0xFFFFFFFF, data_len=512),
        binary(0x0A, cdw10=0x06), b"opcode=0x06 cdw10=1 data_len=4096\n",
        b"opcode=0x0a cdw10=7 cid=9\n",
    ])
    return st.lists(reqs, min_size=1, max_size=5).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _valid_write(),
                 st.tuples(_valid_write(), st.integers(0, 400), st.binary(min_size=1, max_size=4))
                 .map(lambda t: t[0][:t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + len(t[2]):])))
def test_fuzz_parser_only_raises_request_errors(write):
    pos = 0
    try:
        while pos < len(write):
            req, nxt = P.parse(write, pos)
            assert nxt > pos
            if req is not None:
                P.validate(req, ADMIN_T)
                assert len(req.cmd.encode()) == 64 and req.data_len % 4 == 0
            pos = nxt
    except P.RequestError as e:
        assert e.errno in (errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP, errno.ENXIO, errno.ERANGE,
                           errno.EPERM, errno.EACCES)
