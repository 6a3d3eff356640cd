"""passthru requests: both encodings, validation errnos, policies, answers, fuzzing."""

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefs.spec import identify as ID
from nvmefs.spec import passthru as P
from nvmefs.spec import status as S
from nvmefs.spec.commands import (FID_AUTO_PST, FID_HOST_ID, FID_HOST_MEM_BUF, FID_TIMESTAMP,
                                  OP_FABRICS, OP_GET_FEATURES, OP_GET_LOG_PAGE, OP_IDENTIFY, OP_READ,
                                  OP_SET_FEATURES, OP_WRITE)
from nvmefs.spec.logs import CSUPP, LBCC, NCC
from nvmefs.spec.queue import CQE_SIZE, SQE_SIZE, Command, Completion, make_status
from nvmefs.spec.session import NEED_DATA, MailboxSession

ADMIN_T = P.Target("admin", "all", 512 * 1024)
IO_T = P.Target("io", "all", 512 * 1024, {1: ID.NsFormat(512), 2: ID.NsFormat(4096)})
req = P.encode_request


def parse(write: bytes, target: P.Target = ADMIN_T):
    """The first request (or error) of a write fed whole to a new session."""
    s = MailboxSession()
    s.receive_data(write)
    return s.next_request(target)


def refused(write: bytes, target: P.Target = ADMIN_T) -> int:
    out = parse(write, target)
    assert isinstance(out, P.RequestError), out
    return out.errno


def test_wire_sizes_are_pinned():
    assert SQE_SIZE == 64 and len(req(OP_IDENTIFY)) == 64
    assert len(req(OP_WRITE, data=bytes(512))) == 64 + 512
    assert CQE_SIZE == 16 and len(P.encode_response(parse(req(0x0A, cdw10=7)), Completion())) == 16


def test_binary_layout_and_transfer_descriptor():
    raw = req(OP_IDENTIFY, cdw10=1, data_len=4096, cid=0xBEEF, timeout_ms=250, cdw2=2, cdw3=3,
              nsid=0x11223344, cdw15=0xF)
    assert raw[0] == 0x06 and raw[1] == 0 and raw[2:4] == b"\xef\xbe"
    assert raw[4:8] == bytes.fromhex("44332211")
    descriptor = [int.from_bytes(raw[i:i + 4], "little") for i in range(24, 40, 4)]
    assert descriptor == [4096, 0, 250, 0] and raw[16:24] == bytes(8)
    assert [int.from_bytes(raw[i:i + 4], "little") for i in range(40, 64, 4)] == [1, 0, 0, 0, 0, 0xF]
    r = parse(raw)
    assert r.cmd == Command(0x06, nsid=0x11223344, cdw10=1, cdw15=0xF, cid=0xBEEF, cdw2=2, cdw3=3)
    assert (r.data_len, r.timeout_ms, r.data_in_len, r.data_out, r.text) == \
        (4096, 250, 4096, b"", False)


def test_text_requests():
    r = parse(b"opcode=2 nsid=0xffffffff cdw10=0x007f0002 data_len=512 timeout_ms=1000 cid=7\n")
    assert r.cmd == Command(0x02, nsid=0xFFFFFFFF, cdw10=0x7F0002, cid=7) and r.text
    assert (r.data_len, r.data_in_len, r.timeout_ms) == (512, 512, 1000)
    r = parse(b"  opcode=0x09 cdw10=0x0e data=0011223344556677  # a comment\r\n")
    assert r.data_out == bytes.fromhex("0011223344556677") and r.data_len == 8 and r.data_in_len == 0


@pytest.mark.parametrize("write,err", [
    (req(OP_IDENTIFY, cdw10=1, data_len=4096, reserved=1), errno.EINVAL),
    (req(OP_IDENTIFY, cdw10=1, data_len=4096, mptr=0x1000), errno.EINVAL),
    (req(OP_IDENTIFY, cdw10=1, data_len=4096, flags=0x01), errno.EINVAL),    # fused
    (req(OP_IDENTIFY, cdw10=1, data_len=4096, flags=0x40), errno.EINVAL),    # PSDT
    (req(OP_IDENTIFY, cdw10=1, data_len=4096, flags=0x04), errno.EINVAL),    # reserved flags
    (req(OP_IDENTIFY, cdw10=1, data_len=4096, metadata_len=8), errno.EINVAL),   # admin: none
    (req(OP_IDENTIFY, cdw10=1, data_len=4094), errno.EINVAL),                # not a multiple of 4
    (req(0x10, data_len=4096), errno.EINVAL),                                # no-data opcode with data
    (req(0x03, data_len=4), errno.EINVAL),                                   # bidirectional
    (b"opcode=0x06 cdw10=1 data_len=4096 cdw10=2\n", errno.EINVAL),         # duplicate key
    (b"opcode=0x06 colour=blue\n", errno.EINVAL),
    (b"opcode=0x106\n", errno.EINVAL),
    (b"nsid=1\n", errno.EINVAL),
    (b"opcode=0x09 data=abc\n", errno.EINVAL),
    (b"opcode=0x09 cdw10=0xe data_len=8\n", errno.EINVAL),                  # data_len, no data=
    (b"opcode=0x09 cdw10=0xe data_len=4 data=0000000000000000\n", errno.EINVAL),
    (b"opcode=0x06 data=00000000\n", errno.EINVAL),                         # data= on a read
    (b"opcode=0x06 cdw10=\xff\n", errno.EINVAL),
])
def test_malformed_requests(write, err):
    assert refused(write) == err


@pytest.mark.parametrize("target,write,err", [
    (ADMIN_T, req(OP_GET_LOG_PAGE, cdw10=0x7F0002, data_len=1024 * 1024), errno.E2BIG),
    (P.Target("admin", "all"), req(OP_GET_LOG_PAGE, cdw10=0xFFFF0002, cdw11=0xFF,
                                   data_len=P.MAX_DATA_LEN + 4), errno.E2BIG),   # no MDTS: the cap
    (ADMIN_T, req(OP_IDENTIFY, cdw10=1, data_len=4096, timeout_ms=P.MAX_TIMEOUT_MS + 1), errno.ERANGE),
    (ADMIN_T, req(OP_IDENTIFY, cdw10=1, data_len=512), errno.EINVAL),          # Identify is 4096
    (ADMIN_T, req(OP_GET_LOG_PAGE, cdw10=0x7F0002, data_len=4096), errno.EINVAL),  # NUMD says 512
    (ADMIN_T, req(0x2E), errno.EOPNOTSUPP),                                   # unknown opcode
    (ADMIN_T, req(0xC1), errno.EOPNOTSUPP),                                   # vendor, not in a log
    (IO_T, req(OP_READ, nsid=3, data_len=512), errno.ENXIO),
    (IO_T, req(0x00, nsid=0xFFFFFFFF), errno.ENXIO),                          # no broadcast flush
    (IO_T, req(OP_READ, nsid=1, cdw12=7, data_len=512), errno.EINVAL),        # 8 blocks need 4096
    (IO_T, req(OP_READ, nsid=2, cdw12=0, data_len=512), errno.EINVAL),        # 4 KiB blocks
    (IO_T, req(OP_WRITE, nsid=2, cdw12=1, data=bytes(4096)), errno.EINVAL),   # 2 blocks, 1 sent
    (IO_T, req(0x08, nsid=1, cdw12=3), None),                                 # Write Zeroes: no data
    (IO_T, req(OP_READ, nsid=2, cdw12=1, data_len=8192), None),
])
def test_validation_against_the_target(target, write, err):
    out = parse(write, target)
    assert (out.errno if isinstance(out, P.RequestError) else None) == err, out


@pytest.mark.parametrize("fid,cdw11,get,put", [
    (FID_TIMESTAMP, 0, 8, 8), (FID_AUTO_PST, 0, 256, 256), (FID_HOST_MEM_BUF, 0, 4096, 0),
    (FID_HOST_ID, 0, 8, 8), (FID_HOST_ID, 1, 16, 16), (0x06, 0, 0, 0), (0x16, 0, 512, 512),
])
def test_feature_data_sizes(fid, cdw11, get, put):
    for op, size in ((OP_GET_FEATURES, get), (OP_SET_FEATURES, put)):
        def ask(n):
            data = bytes(n) if op == OP_SET_FEATURES else b""
            return parse(req(op, cdw10=fid, cdw11=cdw11, data=data, data_len=n))
        assert not isinstance(ask(size), P.RequestError)
        for wrong in {size + 4, size - 4} - {-4}:
            assert ask(wrong).errno == errno.EINVAL, (op, wrong)
    vendor = parse(req(OP_GET_FEATURES, cdw10=0xC0, data_len=64))      # a size nvmefs does not know
    assert vendor.data_len == 64


def test_queue_management_is_eperm_in_every_policy_before_anything_else():
    for policy in P.POLICIES:
        t = P.Target("admin", policy, 4096)
        for op in (0x00, 0x01, 0x04, 0x05, 0x08, 0x0C, 0x18, 0x45, 0x7C, OP_FABRICS):
            assert refused(req(op), t) == errno.EPERM, (policy, op)
        # even a request malformed otherwise (data on a no-data opcode, odd length)
        assert refused(req(0x08, data_len=3, flags=1), t) == errno.EPERM
    for policy in P.POLICIES:
        t = P.Target("io", policy, 4096, {1: ID.NsFormat(512)})
        assert refused(req(0x18, nsid=9), t) == refused(req(OP_FABRICS), t) == errno.EPERM


def test_policies():
    assert P.POLICIES == ("off", "info", "readonly", "all")
    assert P.weaker("all", "info") == P.weaker("info", "readonly") == "info"
    assert P.weaker("off", "all") == "off" and P.weaker("readonly", "readonly") == "readonly"
    info_ok = [("admin", 0x02), ("admin", 0x06), ("admin", 0x0A)]
    readonly_ok = info_ok + [("admin", 0x1A), ("admin", 0x86), ("io", 0x02), ("io", 0x05), ("io", 0x0C),
                             ("io", 0x0E)]
    all_ok = readonly_ok + [("admin", 0x09), ("admin", 0x80), ("admin", 0x84), ("admin", 0x10),
                            ("admin", 0x0D), ("admin", 0xC0), ("io", 0x01), ("io", 0x09), ("io", 0x90)]
    for policy, ok in (("off", []), ("info", info_ok), ("readonly", readonly_ok), ("all", all_ok)):
        for queue, op in all_ok:
            assert P.admits(policy, queue, op) == ((queue, op) in ok), (policy, queue, op)
        assert not P.admits(policy, "admin", 0x01)           # queue management: never
    # the effects log can make a read intrusive
    assert not P.admits("readonly", "admin", 0x02, CSUPP | LBCC)
    assert not P.admits("info", "admin", 0x06, CSUPP | NCC)
    assert P.admits("all", "admin", 0x06, CSUPP | NCC)
    # the I/O opcodes are those of a command set: Zone Management Receive is ZNS's (CSI 2)
    assert P.admits("readonly", "io", 0x7A, csi=2) and not P.admits("readonly", "io", 0x7A)
    assert not P.admits("readonly", "io", 0x79, csi=2) and P.admits("all", "io", 0x79, csi=2)
    assert P.admits("readonly", "io", 0x02, csi=1) and not P.admits("readonly", "io", 0x01, csi=1)


def test_refused_by_policy_is_eacces_with_the_policy_it_needs():
    t = P.Target("io", "info", 4096, {1: ID.NsFormat(512)})
    out = parse(req(OP_READ, nsid=1, data_len=512), t)
    assert out.errno == errno.EACCES and "--passthru=readonly" in str(out)
    out = parse(req(OP_IDENTIFY, cdw10=1, data_len=4096), P.Target("admin", "off"))
    assert out.errno == errno.EACCES and "--passthru=info" in str(out)
    assert parse(req(0x09, cdw10=6, cdw11=1), P.Target("admin", "readonly")).errno == errno.EACCES


def test_effects_log_decides_support():
    effects = [0] * 256
    effects[0x06] = CSUPP
    t = P.Target("admin", "all", 0, effects=effects)
    assert parse(req(OP_IDENTIFY, cdw10=1, data_len=4096), t).cmd.opcode == 0x06
    assert refused(req(0x0A, cdw10=6), t) == errno.EOPNOTSUPP    # known, but the controller lacks it
    effects[0xC1] = CSUPP                                         # a vendor opcode the log lists
    assert parse(req(0xC1, data_len=8, data=bytes(8)), t).data_out == bytes(8)


def test_binary_response_framing():
    r = parse(req(OP_IDENTIFY, cdw10=1, data_len=4096, cid=0x1234))
    cpl = Completion(make_status(1, 0x09, dnr=True), dw0=5, dw1=6, sqhd=7, sqid=0, cid=99, data=b"abc")
    out = P.encode_response(r, cpl)
    assert len(out) == 16 + 4096 and out[16:19] == b"abc" and out[19:] == bytes(4093)
    back = Completion.decode(out[:16])
    assert (back.cid, back.sct, back.sc, back.dnr, back.dw0, back.dw1, back.sqhd) == \
        (0x1234, 1, 0x09, True, 5, 6, 7)
    assert out[14] & 1 == 1                        # phase tag
    data = os.urandom(4096)
    parts = P.response_parts(r, Completion(data=data))
    assert len(parts) == 2 and parts[1] is data    # data that fits is not copied
    w = parse(req(OP_WRITE, nsid=1, data=bytes(512)), IO_T)
    assert P.response_parts(w, Completion()) == [Completion().encode(phase=1)]  # nothing comes back


def test_text_response():
    r = parse(b"opcode=0x06 cdw10=1 data_len=4096 cid=3\n")
    data = os.urandom(4096)
    out = P.encode_response(r, Completion(0, dw0=0x10, data=data)).decode()
    lines = out.split("\n")
    first, dump = lines[0], lines[1:-2]
    assert first == ("status=0x0000 sct=0x0 sc=0x00 dnr=0 more=0 crd=0 result=0x00000010 "
                     "dw1=0x00000000 cid=3 data_len=4096 name=SUCCESS")
    assert lines[-2:] == ["", ""] and len(dump) == 256 and P.xxd(data).splitlines() == dump
    failed = P.encode_response(r, Completion(make_status(0, 2, dnr=True))).decode()
    assert "status=0x4002 sct=0x0 sc=0x02 dnr=1" in failed and "name=INVALID_FIELD" in failed


_LONGEST = max(len(S.describe(s).name) for s in range(0x800))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([0x00, 0x01, 0x02, 0x05, 0x06, 0x0A, 0x09]), st.integers(0, 5000),
       st.integers(0, 0xFFFF), st.booleans(), st.integers(0, 0x7FFF), st.integers(0, 6000),
       st.integers(0, 0xFFFFFFFF))
def test_answer_size_is_the_answer_length(opcode, data_len, cid, text, status, returned, dw0):
    data_len -= data_len % 4
    data = bytes(data_len) if opcode & 3 == 1 else b""
    r = parse(req(opcode, data_len=data_len, data=data, cid=cid, text=text), P.Target("admin", "all"))
    if isinstance(r, P.RequestError):          # made a request validation refuses: still an answer
        r = P.PassthruRequest(Command(opcode, cid=cid), data_len, 0, data, text,
                              data_len if opcode & 3 == 2 else 0)
    cpl = Completion(status, dw0=dw0, data=os.urandom(returned))
    answer = P.encode_response(r, cpl)
    assert answer == b"".join(P.response_parts(r, cpl))
    slack = _LONGEST - len(S.describe(status).name) if text else 0   # text: the name at its longest
    assert P.answer_size(r) == len(answer) + slack


def _valid_write() -> st.SearchStrategy[bytes]:
    reqs = st.sampled_from([
        req(OP_IDENTIFY, cdw10=1, data_len=4096), req(OP_GET_LOG_PAGE, cdw10=0x7F0002, nsid=0xFFFFFFFF,
                                                     data_len=512),
        req(0x0A, cdw10=0x06), req(OP_SET_FEATURES, cdw10=FID_TIMESTAMP, data=bytes(range(8))),
        b"opcode=0x06 cdw10=1 data_len=4096\n", b"opcode=0x0a cdw10=7 cid=9\n", b"\n# note\n",
    ])
    return st.lists(reqs, min_size=1, max_size=5).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _valid_write(),
                 st.tuples(_valid_write(), st.integers(0, 400), st.binary(min_size=1, max_size=4))
                 .map(lambda t: t[0][:t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + len(t[2]):])))
def test_fuzz_only_valid_requests_or_request_errors(write):
    s = MailboxSession()
    s.receive_data(write)
    while True:
        out = s.next_request(ADMIN_T)
        if out is NEED_DATA:
            break
        if isinstance(out, P.RequestError):
            assert out.errno in (errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP, errno.ENXIO, errno.ERANGE,
                                 errno.EPERM, errno.EACCES)
            assert out.start == s.consumed == s.last_start
            break
        P.validate(out, ADMIN_T)
        assert len(out.cmd.encode()) == 64 and out.data_len % 4 == 0
        assert len(out.data_out) == out.data_out_len
