"""LBA formats with metadata through the Controller interface: the sim and the vfio
driver on its register model (data buffer and MPTR buffer), extended LBAs over
NVMe/TCP and separate metadata refused there; Identify, Format NVM with MSET,
and what Write Zeroes, Dataset Management, Copy and Compare do to metadata."""

import os

import pytest

from nvmefs.backends import Unsupported
from nvmefs.spec import commands as C
from nvmefs.spec import identify as ID
from nvmefs.spec import status as S

from ..conftest import controller
from .tcp_target import SimTarget

DEVICES = ["sim", "vfio:sim"]
COMPARE_FAILED = (2, 0x85)


async def formatted(c, nsid: int = 1) -> ID.NsFormat:
    return ID.ns_format(ID.decode_id_ns((await c.identify_ns(nsid)).data))


def interleave(data: bytes, md: bytes, block: int, ms: int) -> bytes:
    return b"".join(data[i * block:(i + 1) * block] + md[i * ms:(i + 1) * ms]
                    for i in range(len(data) // block))


@pytest.mark.parametrize("device", DEVICES)
async def test_extended_lbas_carry_metadata_in_the_data(device):
    async with controller(f"{device}:size=8M,ms=8,mset=1") as c:
        ns = ID.decode_id_ns((await c.identify_ns(1)).data)
        assert await formatted(c) == ID.NsFormat(512, 8, True)
        assert ns["flbas"] & ID.FLBAS_EXTENDED and ns["mc"] == 0x3
        assert ns["nsze"] == (8 << 20) // 520                 # the metadata takes its room
        assert [(f["ds"], f["ms"]) for f in ns["lbafs"]][:5] == [(9, 0), (12, 0), (9, 8), (9, 16),
                                                                 (9, 64)]
        blocks = os.urandom(4 * 520)
        assert (await c.io(C.rw(C.OP_WRITE, 1, 10, 4), data_out=blocks)).ok
        cpl = await c.io(C.rw(C.OP_READ, 1, 10, 4), data_in_len=4 * 520)
        assert cpl.ok and cpl.data == blocks and cpl.metadata == b""
        cpl = await c.io(C.rw(C.OP_READ, 1, 11, 2), data_in_len=2 * 520)
        assert cpl.data == blocks[520:3 * 520]
        assert (await c.io(C.rw(C.OP_COMPARE, 1, 10, 4), data_out=blocks)).ok
        other = bytearray(blocks)
        other[515] ^= 1                                        # one byte of metadata differs
        cpl = await c.io(C.rw(C.OP_COMPARE, 1, 10, 4), data_out=bytes(other))
        assert (cpl.sct, cpl.sc) == COMPARE_FAILED
        if device == "sim":     # (over PCIe the controller reads on past a short buffer)
            cpl = await c.io(C.rw(C.OP_WRITE, 1, 10, 4), data_out=blocks[:4 * 512])
            assert (cpl.sct, cpl.sc) == (0, 0x04)              # short data: transfer error


@pytest.mark.parametrize("device", DEVICES)
async def test_separate_metadata_has_its_own_buffer(device):
    async with controller(f"{device}:size=8M,ms=16") as c:
        assert await formatted(c) == ID.NsFormat(512, 16, False)
        data, md = os.urandom(8 * 512), os.urandom(8 * 16)
        assert (await c.io(C.rw(C.OP_WRITE, 1, 100, 8), data_out=data, metadata_out=md)).ok
        cpl = await c.io(C.rw(C.OP_READ, 1, 100, 8), data_in_len=8 * 512, metadata_in_len=8 * 16)
        assert cpl.ok and cpl.data == data and cpl.metadata == md
        cpl = await c.io(C.rw(C.OP_READ, 1, 103, 2), data_in_len=1024, metadata_in_len=32)
        assert cpl.data == data[3 * 512:5 * 512] and cpl.metadata == md[48:80]
        assert (await c.io(C.rw(C.OP_COMPARE, 1, 100, 8), data_out=data, metadata_out=md)).ok
        cpl = await c.io(C.rw(C.OP_COMPARE, 1, 100, 8), data_out=data, metadata_out=bytes(128))
        assert (cpl.sct, cpl.sc) == COMPARE_FAILED
        # the controller needs the metadata buffer: without it the transfer fails
        cpl = await c.io(C.rw(C.OP_READ, 1, 100, 8), data_in_len=8 * 512)
        assert (cpl.sct, cpl.sc) == (0, 0x04) and cpl.data == bytes(8 * 512)
        # Copy takes the metadata along; Write Zeroes and Deallocate clear it
        copy = bytes(8) + (100).to_bytes(8, "little") + (7).to_bytes(2, "little") + bytes(14)
        assert (await c.io(C.command(C.OP_COPY, 1, (C.SDLBA, 500)), data_out=copy)).ok
        cpl = await c.io(C.rw(C.OP_READ, 1, 500, 8), data_in_len=8 * 512, metadata_in_len=128)
        assert cpl.data == data and cpl.metadata == md
        assert (await c.io(C.rw(C.OP_WRITE_ZEROES, 1, 100, 2))).ok
        dsm = (0).to_bytes(4, "little") + (2).to_bytes(4, "little") + (104).to_bytes(8, "little")
        assert (await c.io(C.command(C.OP_DSM, 1, cdw11=0x4), data_out=dsm)).ok
        cpl = await c.io(C.rw(C.OP_READ, 1, 100, 8), data_in_len=8 * 512, metadata_in_len=128)
        assert cpl.metadata == bytes(32) + md[32:64] + bytes(32) + md[96:]
        assert cpl.data[:1024] == bytes(1024) and cpl.data[1024:2048] == data[1024:2048]


@pytest.mark.parametrize("device", DEVICES)
async def test_format_nvm_picks_metadata_size_and_mset(device):
    async with controller(f"{device}:size=8M") as c:
        assert await formatted(c) == ID.NsFormat(512)
        fmt = C.command(C.OP_FORMAT_NVM, 1, cdw10=5 | 1 << 4)    # LBAF 5: 4096+8, MSET 1
        assert (await c.admin(fmt, timeout=30)).ok
        await c.refresh()
        assert await formatted(c) == ID.NsFormat(4096, 8, True)
        ns = ID.decode_id_ns((await c.identify_ns(1)).data)
        assert ns["nsze"] == (8 << 20) // 4104 and ns["flbas"] == 0x15
        blocks = os.urandom(2 * 4104)
        assert (await c.io(C.rw(C.OP_WRITE, 1, 0, 2), data_out=blocks)).ok
        assert (await c.io(C.rw(C.OP_READ, 1, 0, 2), data_in_len=2 * 4104)).data == blocks
        assert (await c.admin(C.command(C.OP_FORMAT_NVM, 1, cdw10=3), timeout=30)).ok  # 512+16
        await c.refresh()
        assert await formatted(c) == ID.NsFormat(512, 16, False)
        cpl = await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512, metadata_in_len=16)
        assert cpl.ok and cpl.data == bytes(512) and cpl.metadata == bytes(16)   # erased
        cpl = await c.admin(C.command(C.OP_FORMAT_NVM, 1, cdw10=2 | 1 << 5))      # PI type 1
        assert cpl.status & 0x7FF == S.INVALID_FORMAT & 0x7FF
        cpl = await c.admin(C.command(C.OP_FORMAT_NVM, 1, cdw10=8))              # no LBAF 8
        assert cpl.status & 0x7FF == S.INVALID_FORMAT & 0x7FF


async def test_separate_metadata_survives_a_remount_of_a_file_backed_sim(tmp_path):
    uri = f"sim:size=4M,ms=64,path={tmp_path}"
    data, md = os.urandom(3 * 512), os.urandom(3 * 64)
    async with controller(uri) as c:
        assert (await c.io(C.rw(C.OP_WRITE, 1, 7, 3), data_out=data, metadata_out=md)).ok
    async with controller(uri) as c:
        cpl = await c.io(C.rw(C.OP_READ, 1, 7, 3), data_in_len=3 * 512, metadata_in_len=3 * 64)
        assert cpl.data == data and cpl.metadata == md


def test_sim_options():
    from nvmefs.backends.sim.config import parse_uri
    cfg = parse_uri("sim:lba=4096,ms=64,mset=1")
    assert (cfg.lba, cfg.ms, cfg.mset) == (4096, 64, 1)
    for bad in ("sim:ms=7", "sim:ms=32", "sim:mset=2", "sim:mset=x"):
        with pytest.raises(ValueError):
            parse_uri(bad)


@pytest.fixture
def tcp_extended():
    t = SimTarget(sim="sim:size=8M,ms=8,mset=1").start()
    yield t
    t.stop()


async def test_tcp_carries_extended_lbas_and_refuses_separate_metadata(tcp_extended):
    async with controller(tcp_extended.uri) as c:
        assert c.metadata_refusal and "MPTR" in c.metadata_refusal
        assert await formatted(c) == ID.NsFormat(512, 8, True)
        blocks = os.urandom(3 * 520)
        assert (await c.io(C.rw(C.OP_WRITE, 1, 5, 3), data_out=blocks)).ok
        assert (await c.io(C.rw(C.OP_READ, 1, 5, 3), data_in_len=3 * 520)).data == blocks
        with pytest.raises(Unsupported) as e:
            await c.io(C.rw(C.OP_READ, 1, 5, 3), data_in_len=3 * 512, metadata_in_len=24)
        assert "no separate metadata buffer" in str(e.value)
        assert (await c.io(C.rw(C.OP_READ, 1, 5, 1), data_in_len=520)).ok     # still serving


async def test_vfio_places_metadata_in_dma_memory_and_zeroes_what_comes_back():
    async with controller("vfio:sim:size=8M,ms=16?queues=2") as c:
        md = os.urandom(32)
        reqs = [C.rw(C.OP_WRITE, 1, 2 * i, 2) for i in range(40)]
        from nvmefs.backends import Request
        out = await c.submit_batch([Request("io", cmd, os.urandom(1024), 0, None,
                                            md[::-1] if i % 2 else md)
                                    for i, cmd in enumerate(reqs)])
        assert all(cpl.ok for cpl in out)
        out = await c.submit_batch([Request("io", C.rw(C.OP_READ, 1, 2 * i, 2), b"", 1024, None,
                                            b"", 32) for i in range(40)])
        assert [cpl.metadata for cpl in out] == [md[::-1] if i % 2 else md for i in range(40)]
        # a namespace without metadata: the buffer the controller never writes reads zeros
    async with controller("vfio:sim:size=8M") as c:
        assert (await c.io(C.rw(C.OP_WRITE, 1, 0, 1), data_out=bytes(512),
                           metadata_out=os.urandom(64))).ok
        cpl = await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=512, metadata_in_len=64)
        assert cpl.metadata == bytes(64)
