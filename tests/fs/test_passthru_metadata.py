"""passthru/ with namespaces formatted with metadata, through Operations (no mount):
binary and text sessions, extended and separate metadata, refusals with the length
expected, a Format NVM that changes what the next request is checked against."""

import errno
import os

import pytest
from pyfuse3 import FUSEError

from nvmefs.spec import passthru as P
from nvmefs.spec.commands import OP_FORMAT_NVM, OP_READ, OP_WRITE
from nvmefs.spec.queue import Completion

from .conftest import open_file, mounted_ops, read_all
from .test_passthru import transact

RW = os.O_RDWR
IO = "nvme0/passthru/io"


def rw(op, lba, nlb, **fields):
    return P.encode_request(op, nsid=1, cdw10=lba, cdw12=nlb - 1, **fields)


async def refused(ops, request: bytes) -> int:
    """The errno a write of `request` to passthru/io fails with."""
    fh = await open_file(ops, IO, RW)
    try:
        with pytest.raises(FUSEError) as e:
            await ops.write(fh, 0, request)
        return e.value.errno
    finally:
        await ops.release(fh)


@pytest.mark.parametrize("device", ["sim", "vfio:sim"])
async def test_extended_lbas_in_a_binary_session(device):
    async with mounted_ops(f"{device}:size=64M,ms=8,mset=1", passthru="all") as (ops, _):
        info = (await read_all(ops, "nvme0/ns/1/info")).decode()
        assert "ms: 8" in info and "mset: 1" in info and "dps: 0" in info
        blocks = os.urandom(2 * 520)
        out = await transact(ops, IO, rw(OP_WRITE, 50, 2, data=blocks, cid=1) +
                             rw(OP_READ, 50, 2, data_len=1040, cid=2))
        # one batch: the answers come in request order, the Read may run first
        assert len(out) == 16 + 16 + 1040 and Completion.decode(out[:16]).cid == 1
        out = await transact(ops, IO, rw(OP_READ, 50, 2, data_len=1040, cid=3))
        assert Completion.decode(out[:16]).ok and out[16:] == blocks
        assert await refused(ops, rw(OP_READ, 50, 2, data_len=1024)) == errno.EINVAL


@pytest.mark.parametrize("device", ["sim", "vfio:sim"])
async def test_separate_metadata_binary_and_text(device):
    async with mounted_ops(f"{device}:size=64M,ms=16", passthru="all") as (ops, _):
        data, md = os.urandom(1024), os.urandom(32)
        out = await transact(ops, IO, rw(OP_WRITE, 7, 2, data=data, metadata=md, cid=4))
        assert Completion.decode(out).ok and len(out) == 16
        out = await transact(ops, IO, rw(OP_READ, 7, 2, data_len=1024, metadata_len=32, cid=5))
        assert len(out) == 16 + 1024 + 32 and Completion.decode(out[:16]).cid == 5
        assert out[16:1040] == data and out[1040:] == md
        # text: metadata= in, an `mptr:` block out, offsets going on from the data's
        md2 = bytes(range(16))
        line = rw(OP_WRITE, 9, 1, data=bytes(512), metadata=md2, text=True)
        assert b"metadata=000102" in line
        await transact(ops, IO, line)
        text = (await transact(ops, IO, rw(OP_READ, 9, 1, data_len=512, metadata_len=16,
                                           cid=6, text=True))).decode()
        first, *rest = text.split("\n")
        assert "cid=6 data_len=512 metadata_len=16 name=SUCCESS" in first
        assert rest[32] == "mptr:" and rest[33].startswith("00000200: 0001 0203")
        assert rest[34:] == ["", ""]
        # the request that omits the metadata it must move is refused, naming it
        assert await refused(ops, rw(OP_READ, 7, 2, data_len=1024)) == errno.EINVAL


async def test_after_a_format_with_mset_the_data_includes_the_metadata():
    async with mounted_ops("sim:size=64M", passthru="all") as (ops, _):
        out = await transact(ops, IO, rw(OP_READ, 0, 2, data_len=1024))
        assert Completion.decode(out[:16]).ok
        fmt = P.encode_request(OP_FORMAT_NVM, nsid=1, cdw10=2 | 1 << 4, cid=9)  # 512+8, MSET 1
        out = await transact(ops, "nvme0/passthru/admin", fmt)
        assert Completion.decode(out).ok
        out = await transact(ops, IO, rw(OP_READ, 0, 2, data_len=1040, cid=2))
        assert Completion.decode(out[:16]).ok and len(out) == 16 + 1040
        assert await refused(ops, rw(OP_READ, 0, 2, data_len=1024)) == errno.EINVAL


async def test_a_backend_without_separate_metadata_refuses_it_with_the_reason():
    async with mounted_ops("sim:size=64M,ms=16", passthru="all") as (ops, (ctrl,)):
        ctrl.metadata_refusal = "no MPTR here"        # as NVMe/TCP says
        for write in (rw(OP_READ, 0, 2, data_len=1024, metadata_len=32),
                      rw(OP_READ, 0, 2, data_len=1024)):
            assert await refused(ops, write) == errno.EOPNOTSUPP
