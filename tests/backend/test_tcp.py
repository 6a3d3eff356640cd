"""The NVMe/TCP host against an in-process target serving sim controllers: URIs,
the host's identity, digests, Keep Alive, a lost connection answered and
reconnected, a changed subsystem refused, a timed-out command ending in a new
association."""

import os

import pytest
import trio
import trio.testing
from crc32c import crc32c

from nvmefs.backends import ControllerGone, Request
from nvmefs.backends.tcp import host, parse_uri
from nvmefs.backends.tcp.queue import Batch, TcpQueue
from nvmefs.spec import commands as C
from nvmefs.spec import status as S
from nvmefs.spec import tcp as T

from ..conftest import controller
from .tcp_target import SimTarget


def test_uri_options():
    assert parse_uri("tcp://10.0.0.2/nqn.x:y?queues=2&depth=64&digest=header,data&kato=0") == (
        "10.0.0.2", 4420, "nqn.x:y", {"queues": 2, "depth": 64, "kato": 0},
        T.DGST_HEADER | T.DGST_DATA)
    assert parse_uri("tcp://[::1]:8009/nqn.2014-08.org.nvmexpress.discovery")[:2] == ("::1", 8009)
    for bad in ("tcp://h", "udp://h/n", "tcp:///n", "tcp://h/n?queues=0", "tcp://h/n?depth=x",
                "tcp://h/n?digest=crc", "tcp://h/n?colour=red", "tcp://h:port/n"):
        with pytest.raises(ValueError):
            parse_uri(bad)


def test_host_identity_from_etc_else_generated_once(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.setattr(host, "ETC", etc)
    monkeypatch.setenv("NVMEFS_STATE_DIR", str(tmp_path / "state"))
    nqn, hostid = host.identity()
    assert nqn == host.UUID_NQN + hostid and host.identity() == (nqn, hostid)   # kept
    (etc / "hostnqn").write_text("nqn.2014-08.org.nvmexpress:uuid:"
                                 "12345678-1234-1234-1234-123456789abc\n")
    assert host.identity() == ("nqn.2014-08.org.nvmexpress:uuid:12345678-1234-1234-1234-"
                               "123456789abc", "12345678-1234-1234-1234-123456789abc")
    (etc / "hostid").write_text("87654321-4321-4321-4321-cba987654321\n")
    assert host.identity()[1] == "87654321-4321-4321-4321-cba987654321"


@pytest.fixture
def target():
    t = SimTarget().start()
    yield t
    t.stop()


async def test_digests_and_data_both_ways(target):
    async with controller(target.uri + "?digest=header,data&queues=2") as c:
        data = bytes(range(256)) * 256                       # 64 KiB: R2T and H2CData
        assert (await c.io(C.rw(C.OP_WRITE, 1, 8, 128), data_out=data)).ok
        small = b"\x5a" * 512                                # in the capsule
        assert (await c.io(C.rw(C.OP_WRITE, 1, 0, 1), data_out=small)).ok
        out = await c.submit_batch([Request("io", C.rw(C.OP_READ, 1, 8, 128),
                                            data_in_len=len(data)),
                                    Request("io", C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)])
        assert [x.data for x in out] == [data, small]
        assert "digest: header,data" in "\n".join(f"{k}: {v}" for k, v in c.info().items())


async def test_keep_alive_goes_out_at_half_kato(target):
    async with controller(target.uri + "?kato=200") as c:
        await trio.sleep(0.5)
        assert c.statistics().extra["keep_alives"] >= 2


async def test_a_lost_connection_is_answered_and_reconnected(target):
    """The port goes away while a batch is out (as removing an nvmet port does): the
    batch is answered, and once the port is back the host reconnects."""
    async with controller(target.uri + "?queues=2") as c:
        target.associations[c.cntlid].sim.faults.inject("delay", queue="io", delay=0.5,
                                                          count=64)
        reads = [Request("io", C.rw(C.OP_READ, 1, i, 8), data_in_len=4096) for i in range(64)]
        answers = []

        async def run_batch():
            answers.extend(await c.submit_batch(reads))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_batch)
            await trio.sleep(0.1)
            await trio.to_thread.run_sync(target.drop)
        assert len(answers) == 64 and all(a.status == S.HOST_ABORTED for a in answers)
        await trio.to_thread.run_sync(target.restore)
        with trio.fail_after(10):
            while c.counts["reconnects"] < 1:
                await trio.sleep(0.05)
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 8), data_in_len=4096)).ok
        assert c.state == "live" and c.counts["connections_lost"] >= 1


async def test_a_caller_cancelled_mid_submit_leaves_the_queue_whole(target):
    """An interrupted read: its capsules went out whole or not at all, their answers
    free their command ids, and the queue goes on."""
    async with controller(target.uri + "?queues=1") as c:
        q = c.io_q[0]
        free = len(q.free)
        data = os.urandom(1 << 20)                         # R2T writes: the send takes a while
        for _ in range(5):
            with trio.move_on_after(0.001):
                await c.submit_batch([Request("io", C.rw(C.OP_WRITE, 1, 256 * i, 256),
                                              data_out=data[:256 * 512]) for i in range(8)])
        with trio.fail_after(10):
            while len(q.free) < free:
                await trio.sleep(0.01)
        assert q.lost is None and not q.cmds
        cpl = await c.io(C.rw(C.OP_READ, 1, 0, 256), data_in_len=256 * 512)
        assert cpl.ok and cpl.data == data[:256 * 512]


async def test_a_target_whose_subsystem_changed_is_refused(target):
    async with controller(target.uri + "?queues=1") as c:
        await trio.to_thread.run_sync(target.drop)
        target.sim_uri = "sim:size=64M,serial=SOMEONEELSE"
        await trio.to_thread.run_sync(target.restore)
        with trio.fail_after(10):
            while c.state != "failed":
                await trio.sleep(0.05)
        with pytest.raises(ControllerGone):
            await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)


async def test_a_timed_out_command_ends_in_a_new_association(target):
    async with controller(target.uri + "?queues=1") as c:
        target.associations[c.cntlid].sim.faults.inject("timeout", queue="io", count=1)
        cpl = await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512, timeout=0.3)
        assert cpl.status == S.HOST_ABORTED
        assert c.statistics().timeouts == 1 and c.statistics().resets == 1
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)).ok


async def test_a_data_digest_error_fails_the_command_and_a_bad_pdu_ends_the_queue():
    """One queue over an in-memory stream, the controller side played by hand."""
    host_side, ctrl_side = trio.testing.memory_stream_pair()
    host, ctrl = T.Connection("host", crc32c), T.Connection("controller", crc32c)
    resp = T.ICResp(dgst=T.DGST_DATA, maxh2cdata=65536)
    host.negotiated(resp)
    ctrl.negotiated(T.ICReq(dgst=T.DGST_DATA))
    ctrl.negotiated(resp)
    q = TcpQueue(1, 8, host_side, host, 8192, 65536, "test queue")
    lost = []
    q.on_lost = lost.append
    async with trio.open_nursery() as nursery:
        await nursery.start(q.run)
        batch = Batch(2)
        reads = [Request("io", C.rw(C.OP_READ, 1, i, 1), data_in_len=512) for i in range(2)]
        assert await q.submit(reads, batch) == 2
        await ctrl_side.receive_some(1 << 16)               # the two capsules
        good = ctrl.send(T.C2HData(q.outstanding(batch)[1], 0, b"\x11" * 512, success=True))
        bad = bytearray(ctrl.send(T.C2HData(q.outstanding(batch)[0], 0, b"\x22" * 512,
                                            success=True)))
        bad[-5] ^= 0xFF                                     # a data byte: the digest fails
        await ctrl_side.send_all(good + bytes(bad))
        with trio.fail_after(2):
            await batch.done.wait()
        assert sorted(a.status for a in batch.answers) == [0, S.DATA_XFER_ERROR]
        await ctrl_side.send_all(ctrl.send(T.CapsuleCmd(bytes(64))))   # not for a host
        with trio.fail_after(2):
            while not lost:
                await trio.sleep(0.01)
        assert q.lost is not None and lost == [q]
        nursery.cancel_scope.cancel()
