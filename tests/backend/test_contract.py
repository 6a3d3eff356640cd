"""What every backend must do, checked through the one Controller interface."""

import errno
import os

from nvmefs.backends import Request, TransportError
from nvmefs.spec import commands, logs
from nvmefs.spec import status as S
from nvmefs.spec.commands import OP_COMPARE, OP_READ, OP_WRITE, OP_WRITE_ZEROES
from nvmefs.spec.identify import block_size, decode_id_ns
from nvmefs.spec.queue import Command

from ..conftest import controller

LBA = 1000        # well inside any test namespace


async def test_identify_and_namespaces(uri):
    async with controller(uri) as c:
        assert c.id_ctrl["mn"].strip() and c.id_ctrl["sn"].strip()
        assert c.nsids and all(n >= 1 for n in c.nsids)
        cpl = await c.identify_ns(c.nsids[0])
        assert cpl.ok and len(cpl.data) == 4096
        assert int.from_bytes(cpl.data[:8], "little") > LBA + 64
        assert c.state == "live"


async def test_log_pages_and_offsets(uri):
    async with controller(uri) as c:
        smart = await c.get_log(logs.LOG_BY_NAME["smart"].lid, 512)
        assert smart.ok and len(smart.data) == 512
        assert 200 < logs.SMART.decode(smart.data)["temperature"] < 400
        whole = await c.get_log(0x03, 512)
        part = await c.get_log(0x03, 256, offset=256)
        assert whole.ok and part.ok and part.data == whole.data[256:]


async def test_a_failing_command_returns_its_status(uri):
    async with controller(uri) as c:
        cpl = await c.get_log(0xBF, 512)              # a LID no test controller has
        assert not cpl.ok and cpl.dnr
        assert cpl.status & 0x7FF in (S.INVALID_FIELD & 0x7FF, S.INVALID_LOG_PAGE & 0x7FF)
        # an inactive NSID: Invalid Namespace (QEMU says Invalid Field for one up to NN),
        # or the host has no path to it at all (Linux: no /dev/ng node)
        bad_ns = max(c.nsids) + 1
        try:
            cpl = await c.io(commands.rw(OP_READ, bad_ns, 0, 1), data_in_len=4096)
            assert not cpl.ok and cpl.sct == 0 and cpl.sc in (0x0B, 0x02)
        except TransportError as e:
            assert e.errno == errno.ENXIO
        cpl = await c.get_feature(0xFE)
        assert not cpl.ok


async def test_write_read_compare_zeroes(uri):
    async with controller(uri) as c:
        nsid = c.nsids[0]
        ns = decode_id_ns((await c.identify_ns(nsid)).data)
        bs = block_size(ns)
        data = os.urandom(8 * bs)
        assert (await c.io(commands.rw(OP_WRITE, nsid, LBA, 8), data_out=data)).ok
        cpl = await c.io(commands.rw(OP_READ, nsid, LBA, 8), data_in_len=8 * bs)
        assert cpl.ok and cpl.data == data
        oncs = c.id_ctrl["oncs"]
        if oncs & 0x1:
            assert (await c.io(commands.rw(OP_COMPARE, nsid, LBA, 8), data_out=data)).ok
            other = bytes(8 * bs)
            cpl = await c.io(commands.rw(OP_COMPARE, nsid, LBA, 8), data_out=other)
            assert (cpl.sct, cpl.sc) == (2, 0x85)
        if oncs & 0x8:
            assert (await c.io(commands.rw(OP_WRITE_ZEROES, nsid, LBA, 8))).ok
            cpl = await c.io(commands.rw(OP_READ, nsid, LBA, 8), data_in_len=8 * bs)
            assert cpl.data == bytes(8 * bs)
        cpl = await c.io(commands.rw(OP_READ, nsid, ns["nsze"] - 1, 2), data_in_len=2 * bs)
        assert (cpl.sct, cpl.sc) == (0, 0x80)          # LBA out of range
        assert (await c.io(Command(0x00, nsid=nsid))).ok    # flush


async def test_batch_keeps_request_order(uri):
    async with controller(uri) as c:
        nsid = c.nsids[0]
        writes = [Request("io", commands.rw(OP_WRITE, nsid, LBA + i, 1), data_out=bytes([i]) * 4096)
                  for i in range(32)]
        # a 4096-byte buffer holds one block of 512 or 4096 bytes
        assert all(cpl.ok for cpl in await c.submit_batch(writes))
        reads = [Request("io", commands.rw(OP_READ, nsid, LBA + i, 1).with_cid(i), data_in_len=4096)
                 for i in range(32)]
        cpls = await c.submit_batch(reads)
        assert [cpl.cid for cpl in cpls] == list(range(32))
        assert [cpl.data[0] for cpl in cpls] == list(range(32))
        stats = c.statistics()
        assert stats.submitted >= 64 and stats.in_flight == 0


async def test_a_batch_may_mix_queues_and_submit_is_a_batch_of_one(uri):
    async with controller(uri) as c:
        nsid = c.nsids[0]
        reqs = [Request("admin", commands.identify(1).with_cid(1), data_in_len=4096),
                Request("io", commands.rw(OP_READ, nsid, LBA, 1).with_cid(2), data_in_len=4096),
                Request("admin", commands.get_log_page(2, 512).with_cid(3), data_in_len=512)]
        before = c.statistics().submitted
        cpls = await c.submit_batch(reqs)
        assert [x.cid for x in cpls] == [1, 2, 3] and all(x.ok for x in cpls)
        assert cpls[0].data[24:64] == c.id_ctrl_raw[24:64]           # MN
        assert (await c.submit(reqs[1])).ok
        stats = c.statistics()
        assert stats.submitted - before == 4 and stats.in_flight == 0
