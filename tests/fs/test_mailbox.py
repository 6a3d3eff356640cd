"""Mailbox sessions under attack: cut writes, memory budgets, failing batches,
other users, namespace changes, many waiters (through Operations, no mount)."""

import errno
import os

import pytest
import trio
from pyfuse3 import FUSEError

from nvmefs.fs.passthru import MAX_PRIVATE
from nvmefs.fs.waits import MAX_WAITERS
from nvmefs.spec import passthru as P
from nvmefs.spec.commands import OP_FORMAT_NVM, OP_IDENTIFY, OP_READ, OP_WRITE
from nvmefs.spec.queue import Completion

from .conftest import Ctx, inode_of, mounted_ops, open_file, read_fh
from .test_passthru import target

RW, WO = os.O_RDWR, os.O_WRONLY
USER = Ctx(uid=1000, gid=1000)


def read_req(lba, cid, nlb=8, block=512, text=False):
    return P.encode_request(opcode=OP_READ, nsid=1, cdw10=lba, cdw12=nlb - 1,
                            data_len=block * nlb, cid=cid, text=text)


def write_req(lba, data, block=512, cid=0, text=False):
    return P.encode_request(opcode=OP_WRITE, nsid=1, cdw10=lba, cdw12=len(data) // block - 1,
                            data_len=len(data), data=data, cid=cid, text=text)


def identify_req(cid=0, text=False):
    return P.encode_request(opcode=OP_IDENTIFY, cdw10=1, data_len=4096, cid=cid, text=text)


async def write_cut(ops, fh, stream: bytes, cut: int) -> None:
    """Write `stream` the way cat does: `cut` bytes a write, the rest of a short write again."""
    pos = 0
    while pos < len(stream):
        pos += await ops.write(fh, 0, stream[pos:pos + cut])


def cids(answers: bytes, data_len: int) -> list[int]:
    step = 16 + data_len
    return [Completion.decode(answers[i:i + 16]).cid for i in range(0, len(answers), step)]


@pytest.mark.parametrize("cut", [1, 7, 4096, 131072])
async def test_a_text_batch_cut_anywhere_is_sent_as_written(cut):
    async with mounted_ops() as (ops, _):
        stream = b"".join(read_req(i, cid=3000 + i, nlb=1, text=True) for i in range(300))
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        await write_cut(ops, fh, stream, cut)
        out = (await read_fh(ops, fh)).decode()
        lines = [ln for ln in out.splitlines() if ln.startswith("status=")]
        assert [int(ln.split("cid=")[1].split()[0]) for ln in lines] == list(range(3000, 3300))
        assert all("name=SUCCESS" in ln for ln in lines)


@pytest.mark.parametrize("cut", [13, 4096, 65536])
async def test_a_binary_write_batch_cut_anywhere_puts_each_block_in_its_place(cut):
    async with mounted_ops(passthru="all") as (ops, _):
        blocks = {lba: bytes([lba % 251]) * 512 for lba in range(0, 2000, 7)}
        stream = b"".join(write_req(lba, data, cid=lba) for lba, data in blocks.items())
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        await write_cut(ops, fh, stream, cut)
        out = await read_fh(ops, fh)
        assert cids(out, 0) == list(blocks)
        await ops.release(fh)
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        await ops.write(fh, 0, b"".join(read_req(lba, cid=lba, nlb=1) for lba in blocks))
        out = await read_fh(ops, fh)
        got = [out[i + 16:i + 16 + 512] for i in range(0, len(out), 528)]
        assert got == list(blocks.values())


async def test_an_answer_that_does_not_fit_makes_a_short_write_then_enobufs():
    async with mounted_ops(session_budget=2 << 20) as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        big = [read_req(i * 1024, cid=i, nlb=1024) for i in range(4)]    # 512 KiB each
        stream = b"".join(big)
        taken = await ops.write(fh, 0, stream)
        assert taken == 3 * len(big[0])             # 3 x (512 KiB + 16) fit in 2 MiB
        await trio.sleep(0.1)
        before = ctrl.statistics().submitted
        with pytest.raises(FUSEError) as e:
            await ops.write(fh, 0, stream[taken:])
        assert e.value.errno == errno.ENOBUFS
        await trio.sleep(0.1)
        assert ctrl.statistics().submitted == before        # nothing more was sent
        assert cids(await read_fh(ops, fh), 512 * 1024) == [0, 1, 2]
        assert await ops.write(fh, 0, stream[taken:]) == len(big[0])
        assert cids(await read_fh(ops, fh), 512 * 1024) == [3]
        assert ops.tree.memory.used == 0 or ops.tree.memory.used == len(ops.tree.kept.get(
            (await inode_of(ops, "nvme0/passthru/io"), 0)))


async def test_the_mount_wide_budget_bounds_all_sessions_together():
    async with mounted_ops(max_buffer=3 << 20) as (ops, _):
        handles = [await open_file(ops, "nvme0/passthru/io", RW) for _ in range(8)]
        accepted = 0
        for fh in handles:
            try:
                accepted += await ops.write(fh, 0, read_req(0, cid=1, nlb=1024)) > 0
            except FUSEError as e:
                assert e.errno == errno.ENOBUFS
        assert 0 < accepted < 8
        assert ops.tree.memory.peak <= 3 << 20


async def test_a_batch_that_raises_is_answered_eio_and_the_mount_serves_on():
    async with mounted_ops() as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        await ops.write(fh, 0, identify_req(cid=0))
        assert cids(await read_fh(ops, fh), 4096) == [0]
        real = ctrl.submit_batch

        async def broken(reqs):
            raise MemoryError("no memory for this batch")
        ctrl.submit_batch = broken
        await ops.write(fh, 0, identify_req(cid=1))
        with pytest.raises(FUSEError) as e:
            await ops.read(fh, 0, 4096)
        assert e.value.errno == errno.EIO
        ctrl.submit_batch = real
        await ops.write(fh, 0, identify_req(cid=2))
        assert cids(await read_fh(ops, fh), 4096) == [2]
        assert ops.tree.memory.used == 0        # all read; a read-write session keeps nothing


async def test_answers_come_back_in_request_order_across_batches():
    async with mounted_ops("sim:size=64M,io_latency=5") as (ops, _):
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        for i in range(20):
            await ops.write(fh, 0, read_req(i, cid=i, nlb=1 + (19 - i) * 8))
        out = await read_fh(ops, fh)
        pos, seen = 0, []
        while pos < len(out):
            cpl = Completion.decode(out[pos:pos + 16])
            seen.append(cpl.cid)
            pos += 16 + 512 * (1 + (19 - cpl.cid) * 8)
        assert seen == list(range(20))


async def test_other_users_get_the_others_policy_and_only_their_own_answers():
    async with mounted_ops(passthru="all", others="info") as (ops, _):
        fh = await open_file(ops, "nvme0/passthru/io", RW, USER)
        with pytest.raises(FUSEError) as e:
            await ops.write(fh, 0, read_req(0, cid=1))
        assert e.value.errno == errno.EACCES
        await ops.release(fh)
        # root's answers are kept for root; the other user reads nothing of them
        fh = await open_file(ops, "nvme0/passthru/admin", WO)
        await ops.write(fh, 0, identify_req(cid=7))
        await ops.release(fh)
        fh = await open_file(ops, "nvme0/passthru/admin", os.O_RDONLY, USER)
        assert await read_fh(ops, fh) == b""
        await ops.release(fh)
        fh = await open_file(ops, "nvme0/passthru/admin", os.O_RDONLY)
        assert cids(await read_fh(ops, fh), 4096) == [7]
        await ops.release(fh)
        # info admits Identify for the other user
        fh = await open_file(ops, "nvme0/passthru/admin", RW, USER)
        await ops.write(fh, 0, identify_req(cid=8))
        assert cids(await read_fh(ops, fh), 4096) == [8]


async def test_others_off_cannot_open_a_mailbox_for_writing():
    async with mounted_ops(others="off") as (ops, _):
        with pytest.raises(FUSEError) as e:
            await open_file(ops, "nvme0/passthru/admin", RW, USER)
        assert e.value.errno == errno.EACCES


async def test_private_mailboxes_per_user_are_bounded():
    async with mounted_ops() as (ops, _):
        parent = await inode_of(ops, "nvme0/passthru")
        for i in range(MAX_PRIVATE):
            await ops.create(parent, f"admin.m{i}".encode(), 0o600, RW, USER)
        with pytest.raises(FUSEError) as e:
            await ops.create(parent, b"admin.one-more", 0o600, RW, USER)
        assert e.value.errno == errno.ENOSPC
        await ops.create(parent, b"admin.root", 0o600, RW, Ctx())     # others are not bound by it


async def test_a_write_only_open_returns_once_answered_and_the_next_reader_sees_it():
    async with mounted_ops("sim:size=64M,io_latency=50") as (ops, _):
        fh = await open_file(ops, "nvme0/passthru/io", WO)
        with trio.fail_after(5):
            await ops.write(fh, 0, read_req(5, cid=42))
        await ops.release(fh)
        fh = await open_file(ops, "nvme0/passthru/io", os.O_RDONLY)
        assert cids(await read_fh(ops, fh), 4096) == [42]


async def test_after_a_format_the_next_request_is_checked_against_the_new_block_size():
    async with mounted_ops("sim:size=64M,lba=512", passthru="all") as (ops, _):
        lbaf_4k = 1                 # the sim's LBA formats: 0 is 512 bytes, 1 is 4096
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        fmt = P.encode_request(opcode=OP_FORMAT_NVM, nsid=1, cdw10=lbaf_4k, cid=9)
        await ops.write(fh, 0, fmt)
        assert cids(await read_fh(ops, fh), 0) == [9]
        io = await open_file(ops, "nvme0/passthru/io", RW)
        await ops.write(io, 0, read_req(0, cid=1, nlb=1, block=4096))
        assert cids(await read_fh(ops, io), 4096) == [1]
        with pytest.raises(FUSEError) as e:
            await ops.write(io, 0, read_req(0, cid=2, nlb=1, block=512))
        assert e.value.errno == errno.EINVAL


async def test_too_many_waiters_get_eagain_and_the_rest_still_answer():
    async with mounted_ops("sim:size=64M,io_latency=2000") as (ops, _):
        fhs = [await open_file(ops, "nvme0/passthru/io", RW) for _ in range(MAX_WAITERS + 1)]
        for fh in fhs:
            await ops.write(fh, 0, read_req(0, cid=1, nlb=1))
        results = []

        async def reader(fh):
            try:
                results.append(len(await ops.read(fh, 0, 4096)))
            except FUSEError as e:
                results.append(-e.errno)
        async with trio.open_nursery() as n:
            for fh in fhs:
                n.start_soon(reader, fh)
        assert results.count(-errno.EAGAIN) >= 1
        assert results.count(528) == MAX_WAITERS


async def test_a_bad_request_begun_in_an_earlier_write_stops_the_session():
    async with mounted_ops() as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/passthru/admin", RW)
        await ops.write(fh, 0, identify_req(cid=1))
        assert cids(await read_fh(ops, fh), 4096) == [1]
        before = len(ctrl.command_log)
        first = b"bogus=1 opcode=0x06 "
        assert await ops.write(fh, 0, first) == len(first)      # a text line, not whole yet
        for rest in (b"cdw10=1 data_len=4096 cid=2\n", b"opcode=0x06 cdw10=1 data_len=4096 cid=3\n"):
            # what a writer sends next (the line's tail, then more) never runs
            with pytest.raises(FUSEError) as e:
                await ops.write(fh, 0, rest)
            assert e.value.errno == errno.EINVAL
        assert len(ctrl.command_log) == before
        await ops.release(fh)
        fh = await open_file(ops, "nvme0/passthru/admin", RW)     # a new open starts afresh
        await ops.write(fh, 0, identify_req(cid=4))
        assert cids(await read_fh(ops, fh), 4096) == [4]


async def test_kept_answers_are_whole_answers_within_the_cap():
    answer = 16 + 4096
    async with mounted_ops(session_budget=3 * answer + 100) as (ops, _):
        fh = await open_file(ops, "nvme0/passthru/admin", WO)
        for cid in range(5):
            await ops.write(fh, 0, identify_req(cid=cid))
        await ops.release(fh)
        fh = await open_file(ops, "nvme0/passthru/admin", os.O_RDONLY)
        assert cids(await read_fh(ops, fh), 4096) == [2, 3, 4]        # the latest whole ones


async def test_kept_answers_give_way_to_new_requests():
    async with mounted_ops(max_buffer=2 << 20) as (ops, _):
        parent = await inode_of(ops, "nvme0/passthru")
        for name in (b"io.a", b"io.b", b"io.c"):
            info, _ = await ops.create(parent, name, 0o600, WO, Ctx())
            await ops.write(info.fh, 0, read_req(0, cid=1, nlb=1024))   # 512 KiB kept each
            await ops.release(info.fh)
        assert ops.tree.memory.used >= 3 * 512 * 1024
        fh = await open_file(ops, "nvme0/passthru/io", RW)
        two = read_req(0, cid=8, nlb=1024) + read_req(0, cid=9, nlb=1024)
        assert await ops.write(fh, 0, two) == len(two)          # 1 MiB: room is made
        assert cids(await read_fh(ops, fh), 512 * 1024) == [8, 9]
        fh = await open_file(ops, "nvme0/passthru/io.a", os.O_RDONLY)
        assert await read_fh(ops, fh) == b""        # the least recently kept gave way


async def test_a_write_only_batch_lost_to_the_transport_fails_its_write_and_the_next_reader():
    """`echo REQUEST > passthru/io.t; head passthru/io.t`: the errno reaches both."""
    async with mounted_ops() as (ops, (ctrl,)):
        await target(ops, "io")         # read before the controller goes
        ctrl.faults.inject("remove")
        parent = await inode_of(ops, "nvme0/passthru")
        info, _ = await ops.create(parent, b"io.t", 0o600, WO, Ctx())
        with pytest.raises(FUSEError) as e:
            await ops.write(info.fh, 0, read_req(0, cid=1, text=True))
        assert e.value.errno == errno.ENODEV
        await ops.release(info.fh)
        fh = await open_file(ops, "nvme0/passthru/io.t", os.O_RDONLY)
        with pytest.raises(FUSEError) as e:
            await read_fh(ops, fh)
        assert e.value.errno == errno.ENODEV
