"""passthru/ mailboxes, feature writes and reset, through Operations (no mount)."""

import errno
import os

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyfuse3 import FUSEError

from nvmefs.spec import passthru as P
from nvmefs.spec.session import NEED_DATA, MailboxSession, RequestError
from nvmefs.spec.queue import Completion

from .conftest import Ctx, inode_of, mounted_ops, open_file, read_all, read_fh

RW = os.O_RDWR


def sqe(opcode, **fields):
    return P.encode_request(opcode, **fields)


def read_sqe(lba, cid, nlb=8):
    return sqe(0x02, nsid=1, cdw10=lba, cdw12=nlb - 1, data_len=512 * nlb, cid=cid)


def write_sqe(lba, data, cid=0):
    return sqe(0x01, nsid=1, cdw10=lba, cdw12=len(data) // 512 - 1, data_len=len(data), data=data,
               cid=cid)


async def target(ops, queue="admin") -> P.Target:
    """The mailbox's validation context (asking for it first keeps its own commands
    out of the counts below)."""
    return await ops.tree.get(await inode_of(ops, "nvme0/passthru")).targets.get(
        queue, "readonly", ops.tree.waiters)


async def transact(ops, path, write, flags=RW):
    fh = await open_file(ops, path, flags)
    try:
        assert await ops.write(fh, 0, write) == len(write)
        return await read_fh(ops, fh)
    finally:
        await ops.release(fh)


async def test_binary_identify_round_trip():
    async with mounted_ops() as (ops, (ctrl,)):
        out = await transact(ops, "nvme0/passthru/admin", sqe(0x06, cdw10=1, data_len=4096, cid=0xA5A5))
        cpl = Completion.decode(out[:16])
        assert cpl.ok and cpl.cid == 0xA5A5 and len(out) == 16 + 4096
        assert out[16:] == await read_all(ops, "nvme0/identify")


async def test_text_request_in_a_private_mailbox():
    async with mounted_ops() as (ops, (ctrl,)):
        parent = await inode_of(ops, "nvme0/passthru")
        info, attr = await ops.create(parent, b"admin.smart", 0o644,
                                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC, Ctx(uid=1000, gid=1000))
        assert (attr.st_uid, attr.st_gid, attr.st_mode & 0o777) == (1000, 1000, 0o600)
        req = b"opcode=0x02 nsid=0xffffffff cdw10=0x007f0002 data_len=512\n"
        assert await ops.write(info.fh, 0, req) == len(req)     # write-only: waits for the answer
        await ops.release(info.fh)
        fh = await open_file(ops, "nvme0/passthru/admin.smart", ctx=Ctx(uid=1000, gid=1000))
        text = (await read_fh(ops, fh)).decode()
        await ops.release(fh)
        assert await read_all(ops, "nvme0/passthru/admin.smart") == b""    # root's are its own
        first, *dump = text.rstrip("\n").split("\n")
        assert first.startswith("status=0x0000 sct=0x0 sc=0x00") and first.endswith("name=SUCCESS")
        smart = await read_all(ops, "nvme0/log/smart")
        assert P.xxd(smart).splitlines() == dump
        assert "admin.smart" in [n.name for n in await ops.tree.get(parent).entries()]
        await ops.unlink(parent, b"admin.smart", Ctx())
        with pytest.raises(FUSEError) as e:
            await inode_of(ops, "nvme0/passthru/admin.smart")
        assert e.value.errno == errno.ENOENT


async def test_mailbox_names_and_removal():
    async with mounted_ops() as (ops, _):
        parent = await inode_of(ops, "nvme0/passthru")
        for bad in (b"smart", b"admin.", b"ADMIN.x", b"io.a/b", b"admin.x y"):
            with pytest.raises(FUSEError) as e:
                await ops.create(parent, bad, 0o644, RW | os.O_CREAT, Ctx())
            assert e.value.errno == errno.EINVAL
        for shared in (b"admin", b"io"):
            with pytest.raises(FUSEError) as e:
                await ops.unlink(parent, shared, Ctx())
            assert e.value.errno == errno.EPERM
        with pytest.raises(FUSEError) as e:
            await ops.create(await inode_of(ops, "nvme0/log"), b"x", 0o644, RW | os.O_CREAT, Ctx())
        assert e.value.errno == errno.EACCES


async def test_batch_of_64_reads_in_order():
    async with mounted_ops(passthru="all") as (ops, (ctrl,)):
        blocks = [os.urandom(4096) for _ in range(64)]
        writes = b"".join(write_sqe(8 * i, b) for i, b in enumerate(blocks))
        out = await transact(ops, "nvme0/passthru/io", writes)
        assert len(out) == 64 * 16
        assert all(Completion.decode(out[i:i + 16]).ok for i in range(0, len(out), 16))
        out = await transact(ops, "nvme0/passthru/io", b"".join(read_sqe(8 * i, i) for i in range(64)))
        assert len(out) == 64 * (16 + 4096)
        for i in range(64):
            rec = out[i * 4112:(i + 1) * 4112]
            assert Completion.decode(rec[:16]).cid == i and rec[16:] == blocks[i]


@pytest.mark.parametrize("bad,err", [
    (sqe(0x06, cdw10=1, data_len=4095), errno.EINVAL),
    (sqe(0x02, cdw10=0x7F0002, nsid=0xFFFFFFFF, data_len=1 << 20), errno.E2BIG),
    (sqe(0x2E), errno.EOPNOTSUPP),
    (sqe(0x06, cdw10=1, data_len=4096, timeout_ms=10**8), errno.ERANGE),
    (sqe(0x01), errno.EPERM),
    (sqe(0x09, cdw10=6), errno.EACCES),
    (b"opcode=0x06 cdw10=1 data_len=4096 bogus=1\n", errno.EINVAL),
])
async def test_a_bad_request_fails_its_write_and_never_reaches_the_controller(bad, err):
    async with mounted_ops() as (ops, (ctrl,)):
        good = sqe(0x06, cdw10=1, data_len=4096, cid=1)
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        await target(ops)
        before = len(ctrl.command_log)
        stream = good + good + bad + good
        taken = await ops.write(fh, 0, stream)   # short: up to the bad request
        assert taken == 2 * len(good)
        with pytest.raises(FUSEError) as e:
            await ops.write(fh, 0, stream[taken:])
        assert e.value.errno == err
        out = await read_fh(ops, fh)              # the two before it were answered
        assert len(out) == 2 * (16 + 4096)
        assert len(ctrl.command_log) - before == 2
        await ops.release(fh)


async def test_io_nsid_must_be_active():
    async with mounted_ops(passthru="all") as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        with pytest.raises(FUSEError) as e:
            await ops.write(fh, 0, sqe(0x02, nsid=2, data_len=512))
        assert e.value.errno == errno.ENXIO
        await ops.release(fh)


async def test_a_request_cut_across_writes_is_sent_once_whole():
    async with mounted_ops(passthru="all") as (ops, (ctrl,)):
        good = sqe(0x06, cdw10=1, data_len=4096, cid=1)
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        await target(ops)
        before = len(ctrl.command_log)
        for piece in (good[:10], good[10:63]):
            assert await ops.write(fh, 0, piece) == len(piece)
        assert len(ctrl.command_log) == before        # nothing partial was sent
        assert await ops.write(fh, 0, good[63:] + good[:5]) == 1 + 5
        assert len(await ops.read(fh, 0, 1 << 20)) == 16 + 4096
        assert len(ctrl.command_log) == before + 1
        await ops.release(fh)
        io = await open_file(ops, "nvme0/passthru/io", RW)
        write = write_sqe(0, b"z" * 512)
        assert await ops.write(io, 0, write[:64 + 100]) == 164       # the header, part of the data
        assert await ops.write(io, 0, write[164:]) == len(write) - 164
        assert Completion.decode(await read_fh(ops, io)).ok
        assert len(ctrl.command_log) == before + 2
        await ops.release(io)


POLICY_CASES = [("admin", sqe(0x80, nsid=1)), ("admin", sqe(0x84, cdw10=1)),
                ("admin", sqe(0x10, cdw10=1 << 3 | 2)), ("admin", sqe(0x0D, cdw10=1)),
                ("admin", sqe(0x09, cdw10=0x06, cdw11=0)), ("io", write_sqe(0, bytes(512)))]


async def test_default_policy_refuses_side_effects():
    async with mounted_ops() as (ops, (ctrl,)):
        for queue, write in POLICY_CASES:
            fh = await open_file(ops, f"nvme0/passthru/{queue}", RW)
            with pytest.raises(FUSEError) as e:
                await ops.write(fh, 0, write)
            assert e.value.errno == errno.EACCES, write[0]
            await ops.release(fh)
        out = await transact(ops, "nvme0/passthru/io", read_sqe(0, 7, nlb=1))
        assert Completion.decode(out[:16]).ok


async def test_policy_all_and_off():
    async with mounted_ops(passthru="all") as (ops, (ctrl,)):
        out = await transact(ops, "nvme0/passthru/io", write_sqe(0, b"x" * 512))
        assert Completion.decode(out).ok
        for op in (0x01, 0x00, 0x05, 0x04):        # queue management: EPERM whatever the policy
            fh = await open_file(ops, "nvme0/passthru/admin", RW)
            with pytest.raises(FUSEError) as e:
                await ops.write(fh, 0, sqe(op))
            assert e.value.errno == errno.EPERM
            await ops.release(fh)
    async with mounted_ops(passthru="off") as (ops, (ctrl,)):
        with pytest.raises(FUSEError) as e:
            await open_file(ops, "nvme0/passthru/admin", RW)
        assert e.value.errno == errno.EACCES


async def test_timeout_is_answered_host_aborted_and_the_next_command_works():
    async with mounted_ops() as (ops, (ctrl,)):
        await target(ops)
        ctrl.faults.inject("timeout", opcode=0x06)
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        start = trio.current_time()
        await ops.write(fh, 0, sqe(0x06, cdw10=1, data_len=4096, cid=5, timeout_ms=1000))
        out = await read_fh(ops, fh)
        assert trio.current_time() - start < 1.0 + 1.0
        cpl = Completion.decode(out[:16])
        assert (cpl.sct, cpl.sc, cpl.cid) == (3, 0x71, 5)
        await ops.write(fh, 0, sqe(0x06, cdw10=1, data_len=4096, cid=6))
        assert Completion.decode((await read_fh(ops, fh))[:16]).ok
        await ops.release(fh)


async def test_reads_block_until_answered_and_eof_when_nothing_is_pending():
    async with mounted_ops() as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        assert await ops.read(fh, 0, 100) == b""        # nothing pending: EOF
        await target(ops)
        ctrl.faults.inject("delay", opcode=0x06, delay=0.5)
        await ops.write(fh, 0, sqe(0x06, cdw10=1, data_len=4096))
        assert await ops.poll(0, fh, None, Ctx()) == 0x4          # POLLOUT only
        start = trio.current_time()
        first = await ops.read(fh, 0, 16)
        assert trio.current_time() - start >= 0.4 and len(first) == 16
        assert await ops.poll(0, fh, None, Ctx()) == 0x5
        assert len(await read_fh(ops, fh)) == 4096
        await ops.release(fh)


async def test_transport_failure_reaches_the_reader():
    async with mounted_ops() as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        await target(ops)
        ctrl.faults.inject("remove")
        await ops.write(fh, 0, sqe(0x06, cdw10=1, data_len=4096))
        with pytest.raises(FUSEError) as e:
            await ops.read(fh, 0, 16)
        assert e.value.errno == errno.ENODEV
        assert await ops.read(fh, 0, 16) == b""
        await ops.release(fh)


async def test_feature_writes_and_reset_follow_the_policy():
    async with mounted_ops() as (ops, (ctrl,)):
        for path in ("nvme0/features/volatile-write-cache", "nvme0/reset"):
            with pytest.raises(FUSEError) as e:
                await open_file(ops, path, os.O_WRONLY)
            assert e.value.errno == errno.EACCES
        attr = await ops.getattr(await inode_of(ops, "nvme0/features/volatile-write-cache"), Ctx())
        assert attr.st_mode & 0o777 == 0o444
    async with mounted_ops(passthru="all") as (ops, (ctrl,)):
        vwc = "nvme0/features/volatile-write-cache"
        assert (await ops.getattr(await inode_of(ops, vwc), Ctx())).st_mode & 0o777 == 0o644
        fh = await open_file(ops, vwc, os.O_WRONLY)
        assert await ops.write(fh, 0, b"0\n") == 2
        for bad in (b"zero\n", b"1 forever\n", b"0x100000000\n"):
            with pytest.raises(FUSEError) as e:
                await ops.write(fh, 0, bad)
            assert e.value.errno == errno.EINVAL
        await ops.release(fh)
        assert await read_all(ops, vwc) == b"\0\0\0\0"
        fh = await open_file(ops, "nvme0/reset", os.O_WRONLY)
        with pytest.raises(FUSEError):
            await ops.write(fh, 0, b"2\n")
        assert await ops.write(fh, 0, b"1\n") == 2
        await ops.release(fh)
        assert ctrl.statistics().resets == 1
        assert await read_all(ops, vwc) == b"\1\0\0\0"       # reset restored the saved value
        with pytest.raises(FUSEError) as e:
            await open_file(ops, "nvme0/features/timestamp", os.O_WRONLY)
        assert e.value.errno == errno.EOPNOTSUPP


def _mutated_writes():
    valid = st.sampled_from([sqe(0x06, cdw10=1, data_len=4096, cid=3),
                             sqe(0x02, nsid=0xFFFFFFFF, cdw10=0x7F0002, data_len=512),
                             sqe(0x0A, cdw10=0x07), b"opcode=0x06 cdw10=1 data_len=4096\n",
                             b"opcode=0x0a cdw10=0x04\n"])
    writes = st.lists(valid, min_size=1, max_size=4).map(b"".join)
    flip = st.tuples(writes, st.integers(0, 10_000), st.integers(0, 255)).map(
        lambda t: t[0][:t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1:])
    return st.one_of(st.binary(min_size=1, max_size=200), writes, flip)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_mutated_writes())
def test_fuzz_only_valid_requests_reach_the_controller(write):
    async def main():
        async with mounted_ops() as (ops, (ctrl,)):
            session, valid, err = MailboxSession(), [], None
            session.receive_data(write)
            t = await target(ops)
            while (event := session.next_request(t)) is not NEED_DATA:
                if isinstance(event, RequestError):
                    err = event
                    break
                valid.append(event)
            before = len(ctrl.command_log)
            fh = await open_file(ops, "nvme0/passthru/admin", RW)
            try:
                taken = await ops.write(fh, 0, write)
                assert taken == (len(write) if err is None else err.start) and taken > 0
            except FUSEError as e:
                assert err is not None and err.start == 0 and e.errno == err.errno
            answers = await read_fh(ops, fh)
            await ops.release(fh)
            sent = [cmd for _, cmd in list(ctrl.command_log)[before:]]
            assert [c.opcode for c in sent] == [r.cmd.opcode for r in valid]
            assert [(c.cdw10, c.nsid) for c in sent] == [(r.cmd.cdw10, r.cmd.nsid) for r in valid]
            assert len(answers) >= 16 * len(valid)
    trio.run(main)
