"""The vfio driver on the register-level model of the simulated controller:
bring-up and shutdown by registers, PRPs at any offset and length, queues
spread and full, DMA memory that runs short, and recovery from every fault the
sim injects (abort, reset, CSTS.CFS, surprise removal)."""

import errno
import os
import random

import pytest
import trio

from nvmefs.backends import ControllerGone, Request, TransportError
from nvmefs.backends.ffi import ffi, lib
from nvmefs.backends.vfio.backend import parse_uri
from nvmefs.backends.vfio.dma import IOVA_BASE
from nvmefs.spec import commands as C
from nvmefs.spec import registers as R
from nvmefs.spec import status as S

from ..conftest import controller


def test_uri_options():
    assert parse_uri("vfio:0000:00:03.0?queues=2&depth=256&dma=8M") == (
        "0000:00:03.0", {"queues": 2, "depth": 256, "dma": 8 << 20, "poll": 0})
    assert parse_uri("vfio:sim:size=64M,namespaces=2?vectors=0")[0] == "sim:size=64M,namespaces=2"
    for bad in ("vfio:", "vfio:00:03.0", "vfio:sim?queues=0", "vfio:sim?depth=1",
                "vfio:sim?colour=red", "vfio:0000:00:03.0?vectors=2", "vfio:sim?dma=1K",
                "vfio:sim?queues=x", "vfio:sim?poll=2"):
        with pytest.raises(ValueError):
            parse_uri(bad)


def test_wire_sizes():
    assert ffi.sizeof("struct nvmefs_slot") == 24
    assert ffi.sizeof("struct nvmefs_data") == 32
    assert ffi.sizeof("struct nvmefs_batch") == 16


@pytest.mark.parametrize("offset,length,pages", [
    (0, 4096, 0), (0, 8192, 0), (512, 4096, 0), (0, 12288, 1), (4092, 8, 0), (4092, 4100, 0),
    (0, 4096 * 513, 1), (0, 4096 * 514, 2), (512, 4096 * 512, 1), (0, 4096 * (1 + 511 + 512), 2),
    (0, 4096 * (1 + 511 + 512) + 1, 3)])
def test_prp_list_pages(offset, length, pages):
    """One list page holds 512 entries; a page that chains gives its last to the link."""
    assert lib.nvmefs_prp_list_pages(offset, length, 4096) == pages


async def test_bring_up_and_shutdown_by_registers():
    async with controller("vfio:sim:size=64M?queues=3&depth=32") as c:
        t = c.transport
        cc, csts = t.read32(R.CC), t.read32(R.CSTS)
        assert R.CC_EN.get(cc) and R.CSTS_RDY.get(csts)
        assert (R.CC_IOSQES.get(cc), R.CC_IOCQES.get(cc), R.CC_MPS.get(cc)) == (6, 4, 0)
        assert sorted(t.sqs) == [0, 1, 2, 3] and all(t.sqs[q].entries == 32 for q in (1, 2, 3))
        regs = R.decode_registers(c.registers())
        assert regs["vs"]["value"] == 0x00010400 and regs["cc"]["en"] == 1
        assert regs["aqa"]["asqs"] == 63 and regs["asq"]["value"] == t.sqs[0].iova
        with trio.fail_after(1):                    # Asynchronous Event Requests outstanding
            while len(t._aers) < 4:
                await trio.sleep(0.01)
    # shut down (SHST reached complete), then disabled for the next driver
    assert c.counts["shutdowns"] == 1 and R.CC_SHN.get(t.read32(R.CC)) == R.SHN_NORMAL
    assert not R.CC_EN.get(t.read32(R.CC)) and not R.CSTS_RDY.get(t.read32(R.CSTS))
    assert c.statistics().resets == 0


async def test_transfers_at_every_offset_and_length_through_prp_lists():
    """A batch's pieces follow each other dword aligned, so they start anywhere in a
    page: one page, two, a list, and chained lists (a 4 MiB transfer)."""
    rng = random.Random(2026120402)
    async with controller("vfio:sim:size=64M,mdts=0?dma=32M") as c:
        writes, expect, lba = [], [], 0
        for blocks in [1, 3, 8, 9, 17, 255, 1024, 8192, 1, 7]:
            data = rng.randbytes(blocks * 512)
            writes.append(Request("io", C.rw(C.OP_WRITE, 1, lba, blocks), data_out=data))
            expect.append((lba, data))
            lba += blocks
        assert all(x.ok for x in await c.submit_batch(writes))
        reads = [Request("io", C.rw(C.OP_READ, 1, at, len(d) // 512), data_in_len=len(d))
                 for at, d in reversed(expect)]
        out = await c.submit_batch(reads)
        assert [x.data for x in out] == [d for _, d in reversed(expect)]
        assert c.statistics().extra["stray_completions"] == 0


async def test_batches_spread_over_queues_and_wait_for_room():
    async with controller("vfio:sim:size=64M?queues=4&depth=4") as c:
        t = c.transport
        reqs = [Request("io", C.rw(C.OP_READ, 1, i, 1).with_cid(i), data_in_len=512)
                for i in range(100)]                  # 3 ids per queue: most wait for room
        out = await c.submit_batch(reqs)
        assert [x.cid for x in out] == list(range(100)) and all(x.ok for x in out)
        assert sorted({x.sqid for x in out}) == [1, 2, 3, 4]
        assert t.fetched >= 100


@pytest.mark.parametrize("options", ["vectors=0", "poll=1", "poll=1&depth=4&queues=2"])
async def test_polling_without_interrupts(options):
    """No MSI-X (every queue reaped every millisecond), or poll=1 (I/O queues without
    interrupts, each batch polled by its submitter, a cancelled one's by the poller)."""
    async with controller(f"vfio:sim:size=64M,io_latency=2?{options}") as c:
        assert all(q.vector is None for q in c.io_q)
        out = await c.submit_batch([Request("io", C.rw(C.OP_READ, 1, i, 8), data_in_len=4096)
                                    for i in range(64)])
        assert all(x.ok for x in out)
        base = c.pool.in_use
        with trio.move_on_after(0.001):
            await c.io(C.rw(C.OP_READ, 1, 0, 8), data_in_len=4096)
        with trio.fail_after(1):
            while c.pool.in_use > base:
                await trio.sleep(0.005)
        assert (await c.admin(C.identify(1), data_in_len=4096)).ok


async def test_a_batch_larger_than_half_the_dma_memory_goes_in_pieces():
    async with controller("vfio:sim:size=64M?dma=1M") as c:
        data = os.urandom(128 * 1024)
        writes = [Request("io", C.rw(C.OP_WRITE, 1, 256 * i, 256), data_out=data)
                  for i in range(16)]                   # 2 MiB against 1 MiB of DMA memory
        assert all(x.ok for x in await c.submit_batch(writes))
        cpl = await c.io(C.rw(C.OP_READ, 1, 256 * 15, 256), data_in_len=len(data))
        assert cpl.data == data
        assert c.pool.peak <= c.pool.size


async def test_a_timed_out_command_is_aborted_and_the_rest_complete():
    async with controller("vfio:sim:size=64M") as c:
        c.faults.inject("timeout", queue="io", opcode=C.OP_READ, count=1)
        reqs = [Request("io", C.rw(C.OP_READ, 1, i, 1), data_in_len=512, timeout=0.2)
                for i in range(4)]
        out = await c.submit_batch(reqs)
        assert [x.status for x in out].count(S.HOST_ABORTED) == 1
        assert sum(x.ok for x in out) == 3
        stats = c.statistics()
        assert stats.extra["aborts_confirmed"] == 1 and stats.resets == 0
        assert stats.timeouts == 1 and stats.in_flight == 0
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)).ok


async def test_commands_the_deadline_kept_off_a_full_queue_are_answered_host_aborted():
    async with controller("vfio:sim:size=64M?queues=1&depth=2") as c:     # one command id
        base = c.pool.in_use
        c.faults.inject("timeout", queue="io", opcode=C.OP_READ, count=1)
        out = await c.submit_batch([Request("io", C.rw(C.OP_READ, 1, i, 1), data_in_len=512,
                                            timeout=0.2) for i in range(3)])
        assert [x.status for x in out] == [S.HOST_ABORTED] * 3
        assert c.statistics().errors == 3 and c.pool.in_use == base     # all given back
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)).ok


async def test_a_dropped_completion_resets_the_controller():
    async with controller("vfio:sim:size=64M") as c:
        base = c.pool.in_use
        c.faults.inject("drop", queue="io", opcode=C.OP_WRITE, count=1)
        cpl = await c.io(C.rw(C.OP_WRITE, 1, 0, 1), data_out=b"\x5a" * 512, timeout=0.2)
        assert cpl.status == S.HOST_ABORTED
        stats = c.statistics()
        assert stats.extra["aborts"] == 1 and stats.extra["aborts_confirmed"] == 0
        assert stats.resets == 1 and c.state == "live"
        cpl = await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)
        assert cpl.ok and cpl.data == b"\x5a" * 512          # it was carried, only its answer lost
        assert len(c.transport._aers) == 4                   # re-armed after the reset
        assert c.pool.in_use == base                         # new queues, the batch given back


async def test_controller_fatal_status_is_seen_and_reset():
    async with controller("vfio:sim:size=64M") as c:
        c.faults.inject("fatal", queue="io", count=1)
        cpl = await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512, timeout=0.2)
        assert cpl.status == S.HOST_ABORTED
        stats = c.statistics()
        assert stats.extra["cfs"] == 1 and stats.resets == 1
        assert not R.CSTS_CFS.get(c.transport.read32(R.CSTS))
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)).ok


async def test_surprise_removal_fails_commands_and_leaves_no_hang():
    async with controller("vfio:sim:size=64M") as c:
        c.faults.inject("remove", queue="io", count=1)
        with pytest.raises(ControllerGone):
            await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512, timeout=0.2)
        with trio.fail_after(1):
            with pytest.raises(ControllerGone):
                await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)
            with pytest.raises(ControllerGone):
                await c.admin(C.identify(1), data_in_len=4096)
        assert c.statistics().in_flight == 0


async def test_a_cancelled_caller_leaves_memory_to_the_reaper():
    """A caller cancelled mid-wait (an interrupted read) gets nothing; the commands
    finish and their DMA memory comes back."""
    async with controller("vfio:sim:size=64M,io_latency=50") as c:
        base = c.pool.in_use
        with trio.move_on_after(0.01):
            await c.submit_batch([Request("io", C.rw(C.OP_READ, 1, i, 8), data_in_len=4096)
                                  for i in range(32)])
        assert c.pool.in_use > base
        with trio.fail_after(2):
            while c.pool.in_use > base:
                await trio.sleep(0.01)
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)).ok


async def test_a_misaligned_prp_is_refused_by_the_controller():
    async with controller("vfio:sim:size=64M") as c:
        cmd = C.identify(1)._replace(prp1=IOVA_BASE + 2)
        cpl = await c.admin(cmd)
        assert (cpl.sct, cpl.sc) == (0, 0x13)            # PRP Offset Invalid
        cpl = await c.admin(C.identify(1)._replace(prp1=0x1000))       # never mapped
        assert (cpl.sct, cpl.sc) == (0, 0x04)            # Data Transfer Error


async def test_a_command_larger_than_the_dma_memory_is_refused():
    async with controller("vfio:sim:size=64M,mdts=0?dma=1M") as c:
        with pytest.raises(TransportError) as e:
            await c.io(C.rw(C.OP_READ, 1, 0, 4096), data_in_len=4096 * 512)
        assert e.value.errno == errno.ENOMEM
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512)).ok


async def test_a_queue_given_back_is_never_reaped_again():
    """A poller holding a queue across a checkpoint while aclose (or a reset) gave its
    memory back must not read it (it did: a segfault when a close and a poll raced)."""
    async with controller("vfio:sim:size=64M?vectors=0") as c:
        q = c.admin_q
    assert q.gone
    c._reap(q)              # unmapped memory: nothing is read
