"""The linux backend on QEMU's NVMe controller: ioctl and uring paths, statuses, batches."""

import errno
import json
import subprocess

import pytest

from nvmefs.backends import Request, TransportError
from nvmefs.backends import sysfs
from nvmefs.spec import commands
from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.queue import Command

from ..conftest import controller
from .conftest import DEVICE


def test_discovery_matches_nvme_cli():
    (c, *_) = sysfs.controllers()
    listed = json.loads(subprocess.run(["nvme", "list", "-o", "json"], capture_output=True,
                                       check=True).stdout)["Devices"]
    assert c.name == "nvme0" and c.transport == "pcie" and c.state == "live"
    assert c.serial == listed[0]["SerialNumber"].strip() and c.model.startswith("QEMU")
    assert c.generic == ["ng0n1"] and c.max_transfer_kernel() > 0


@pytest.mark.parametrize("admin", ["uring", "ioctl"])
async def test_admin_paths_agree(admin):
    async with controller(f"{DEVICE}?admin={admin}") as c:
        ident = await c.admin(commands.identify(1), data_in_len=4096)
        assert ident.ok and ident.data == c.id_ctrl_raw
        assert c.id_ctrl["sn"].strip() == sysfs.controller("nvme0").serial
        bad = await c.get_log(0xBF, 512)                   # a LID QEMU does not have
        assert bad.status == 0x4002 and bad.dnr            # its own answer: DNR | Invalid Field


async def test_a_batch_is_one_submission():
    async with controller(DEVICE) as c:
        data = bytes(range(256)) * 2
        writes = [Request("io", commands.rw(OP_WRITE, 1, 5000 + i, 1), data_out=data) for i in range(32)]
        before = c.statistics().extra["ring_submit_calls"]
        assert all(x.ok for x in await c.submit_batch(writes))
        assert c.statistics().extra["ring_submit_calls"] == before + 1
        reads = [Request("io", commands.rw(OP_READ, 1, 5000 + i, 1).with_cid(i), data_in_len=512)
                 for i in range(32)]
        cpls = await c.submit_batch(reads)
        assert [x.cid for x in cpls] == list(range(32)) and all(x.data == data for x in cpls)


async def test_kernel_refusals_are_transport_errors():
    async with controller(DEVICE) as c:
        with pytest.raises(TransportError) as e:            # no such namespace: no /dev/ng node
            await c.io(commands.rw(OP_READ, 7, 0, 1), data_in_len=512)
        assert e.value.errno == errno.ENXIO
        with pytest.raises(TransportError) as e:            # the kernel rejects non-zero flags
            await c.admin(Command(0x06, cdw10=1, flags=0x40), data_in_len=4096)
        assert e.value.errno == errno.EINVAL


async def test_reset_and_identify_again():
    async with controller(DEVICE) as c:
        await c.reset()
        assert c.state == "live" and c.statistics().resets == 1
        assert (await c.get_log(2, 512)).ok
