"""The NVMe/TCP codec and the Fabrics commands: wire sizes and offsets, every PDU
both ways, with and without digests and data alignment, fed whole, byte by byte
and with trailing bytes; what breaks the protocol."""

import struct

import pytest
from crc32c import crc32c

from nvmefs.spec import fabrics as F
from nvmefs.spec import tcp as T
from nvmefs.spec.queue import Command, Completion


def test_wire_sizes():
    assert T.COMMON.size == 8 and 8 + T.IC.size == 128
    assert 8 + T.DATA.size == 24 and 8 + T.TERM.size == 24
    assert F.CONNECT_DATA.size == 1024
    assert T.HLEN[T.CAPSULE_CMD] == 8 + 64 and T.HLEN[T.CAPSULE_RESP] == 8 + 16


def test_fabrics_commands_put_their_fields_where_the_spec_does():
    sqe = F.connect(qid=3, entries=128, kato_ms=5000).encode()
    assert sqe[0] == 0x7F and sqe[4] == F.FCTYPE_CONNECT
    assert struct.unpack_from("<HHHBxI", sqe, 40) == (0, 3, 127, 0, 5000)
    get = F.property_get(0x00, 8).encode()
    assert get[4] == F.FCTYPE_PROPERTY_GET and get[40] == 1 and struct.unpack_from("<I", get, 44)[0] == 0
    put = F.property_set(0x14, 0x460001).encode()
    assert (put[4], put[40]) == (F.FCTYPE_PROPERTY_SET, 0)
    assert struct.unpack_from("<IQ", put, 44) == (0x14, 0x460001)
    assert F.disconnect().encode()[4] == F.FCTYPE_DISCONNECT
    data = F.ConnectData("6f0e5d83-8f0c-4e3a-9d61-2a4b5c6d7e8f", "nqn.2026-12.io.nvmefs:sub",
                         "nqn.2014-08.org.nvmexpress:uuid:6f0e5d83-8f0c-4e3a-9d61-2a4b5c6d7e8f")
    raw = data.encode()
    assert len(raw) == 1024 and struct.unpack_from("<H", raw, 16)[0] == 0xFFFF
    assert raw[256:256 + 25] == b"nqn.2026-12.io.nvmefs:sub" and raw[512:515] == b"nqn"
    assert F.ConnectData.decode(raw) == data
    with pytest.raises(ValueError):
        F.ConnectData(data.hostid, "", data.hostnqn).encode()


def test_sgl_descriptors():
    sqe = T.transport_sgl(Command(0x02, nsid=1), 4096).encode()
    assert sqe[1] & 0xC0 == 0x40                                   # PSDT 01b
    assert struct.unpack_from("<QI3xB", sqe, 24) == (0, 4096, 0x5A)
    sqe = T.in_capsule_sgl(Command(0x01, nsid=1), 512).encode()
    assert struct.unpack_from("<QI3xB", sqe, 24) == (0, 512, 0x01)


def pair(digests: int = 0, cpda: int = 0, hpda: int = 0):
    """A host and a controller connection after the IC exchange."""
    host, ctrl = T.Connection("host", crc32c), T.Connection("controller", crc32c)
    req = T.ICReq(hpda=hpda, dgst=digests)
    ctrl.receive_data(host.send(req))
    assert ctrl.next_pdu() == req
    ctrl.negotiated(req)
    resp = T.ICResp(cpda=cpda, dgst=digests, maxh2cdata=65536)
    host.receive_data(ctrl.send(resp))
    assert host.next_pdu() == resp
    host.negotiated(resp)
    ctrl.negotiated(resp)
    return host, ctrl


SAMPLES = {
    "controller": [T.CapsuleCmd(Command(0x06, cdw10=1, cid=7).encode()),
                   T.CapsuleCmd(Command(0x01, nsid=1, cid=8).encode(), bytes(range(256)) * 2),
                   T.H2CData(9, 3, 4096, b"\xab" * 1000, last=True),
                   T.TermReq(T.H2C_TERM_REQ, T.FES_SEQUENCE, 0, bytes(24))],
    "host": [T.CapsuleResp(Completion(0, 1, 0, 5, 0, 7).encode()),
             T.C2HData(8, 0, b"\xcd" * 4096, last=True, success=True),
             T.C2HData(8, 4096, b"", last=False),
             T.R2TPdu(9, 3, 0, 8192),
             T.TermReq(T.C2H_TERM_REQ, T.FES_HEADER_DIGEST, 0, bytes(72))],
}


@pytest.mark.parametrize("digests", [0, T.DGST_HEADER, T.DGST_DATA, T.DGST_HEADER | T.DGST_DATA])
@pytest.mark.parametrize("pda", [0, 7])
@pytest.mark.parametrize("feed", ["whole", "bytes", "trailing"])
def test_every_pdu_round_trips(digests, pda, feed):
    host, ctrl = pair(digests, cpda=pda, hpda=pda)
    for sender, receiver, role in ((host, ctrl, "controller"), (ctrl, host, "host")):
        pdus = SAMPLES[role]
        wire = b"".join(sender.send(p) for p in pdus)
        if pda and any(getattr(p, "data", b"") for p in pdus if not isinstance(p, T.TermReq)):
            first = sender.send(next(p for p in pdus if getattr(p, "data", b"")
                                     and not isinstance(p, T.TermReq)))
            assert first[3] % ((pda + 1) * 4) == 0                # PDO aligned as asked
        got = []
        if feed == "bytes":
            for i in range(len(wire)):
                receiver.receive_data(wire[i:i + 1])
                while (pdu := receiver.next_pdu()) is not T.NEED_DATA:
                    got.append(pdu)
        else:
            receiver.receive_data(wire + (sender.send(pdus[0])[:5] if feed == "trailing" else b""))
            while (pdu := receiver.next_pdu()) is not T.NEED_DATA:
                got.append(pdu)
        assert got == pdus


def test_data_digest_mismatch_is_reported_on_the_pdu():
    host, ctrl = pair(T.DGST_DATA)
    wire = bytearray(ctrl.send(T.C2HData(1, 0, b"x" * 64)))
    wire[-5] ^= 1                                               # a data byte, not the digest
    host.receive_data(bytes(wire))
    assert host.next_pdu().digest_ok is False


@pytest.mark.parametrize("mangle,fes", [
    (lambda w: bytes([T.CAPSULE_CMD]) + w[1:], T.FES_INVALID_HEADER),   # not for a host
    (lambda w: w[:2] + bytes([23]) + w[3:], T.FES_INVALID_HEADER),      # HLEN
    (lambda w: w[:4] + struct.pack("<I", 4) + w[8:], T.FES_INVALID_HEADER),   # PLEN < HLEN
    (lambda w: w[:24] + bytes([w[24] ^ 1]) + w[25:], T.FES_HEADER_DIGEST),
])
def test_broken_pdus_raise_what_a_termination_request_says(mangle, fes):
    host, ctrl = pair(T.DGST_HEADER)
    host.receive_data(mangle(ctrl.send(T.CapsuleResp(bytes(16)))))
    with pytest.raises(T.ProtocolError) as e:
        host.next_pdu()
    assert e.value.fes == fes


def test_the_ic_exchange_comes_first_and_once():
    host = T.Connection("host", crc32c)
    host.receive_data(T.Connection("controller").send(T.CapsuleResp(bytes(16))))
    with pytest.raises(T.ProtocolError) as e:
        host.next_pdu()
    assert e.value.fes == T.FES_SEQUENCE
    host, ctrl = pair()
    host.receive_data(ctrl.send(T.ICResp()))
    with pytest.raises(T.ProtocolError):
        host.next_pdu()
    with pytest.raises(ValueError):
        T.Connection("host").negotiated(T.ICResp(dgst=T.DGST_HEADER))      # no crc32c given
