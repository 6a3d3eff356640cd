"""I/O Command Sets in the tree (no mount): identify-<set> files, log/effects.json per
command set, ns/N/zones read in report-sized pieces, and passthru validated against
the namespace's command set."""

import errno
import json
import os

import pytest
from pyfuse3 import FUSEError

from nvmefs.spec import commands as C
from nvmefs.spec import passthru as P
from nvmefs.spec import zones as Z
from nvmefs.spec.queue import Completion

from .conftest import Ctx, inode_of, listing, mounted_ops, open_file, read_all

URI = "sim:size=64M,namespaces=2,zoned=8M,zoned_ns=2,command_log=100000"
ZB = (8 << 20) // 512


def zones_of(text: bytes) -> list[dict]:
    assert text.endswith(b"\n")
    return [json.loads(line) for line in text.decode().splitlines()]


async def transact(ops, path: str, write: bytes) -> bytes:
    fh = await open_file(ops, path, os.O_RDWR)
    try:
        assert await ops.write(fh, 0, write) == len(write)
        out = b""
        while chunk := await ops.read(fh, len(out), 1 << 20):
            out += chunk
        return out
    finally:
        await ops.release(fh)


async def test_the_tree_shows_each_command_set_in_use():
    async with mounted_ops(URI) as (ops, (ctrl,)):
        names = await listing(ops, "nvme0")
        assert names[:10] == ["info", "identify", "identify.json", "identify.txt",
                              "identify-nvm", "identify-nvm.json", "identify-nvm.txt",
                              "identify-zns", "identify-zns.json", "identify-zns.txt"]
        assert await listing(ops, "nvme0/ns/1") == [
            "identify", "identify.json", "identify.txt", "identify-nvm", "identify-nvm.json",
            "identify-nvm.txt", "info"]
        assert await listing(ops, "nvme0/ns/2") == [
            "identify", "identify.json", "identify.txt", "identify-nvm", "identify-nvm.json",
            "identify-nvm.txt", "identify-zns", "identify-zns.json", "identify-zns.txt",
            "zones", "info"]
        assert json.loads(await read_all(ops, "nvme0/identify-zns.json")) == {"zasl": 0}
        assert list(json.loads(await read_all(ops, "nvme0/identify-nvm.json")))[:6] == \
            ["vsl", "wzsl", "wusl", "dmrl", "dmrsl", "dmsl"]
        zns = json.loads(await read_all(ops, "nvme0/ns/2/identify-zns.json"))
        assert len(zns["lbafe"]) == 8 and zns["lbafe"][0] == {"zsze": ZB, "zdes": 0}
        assert "lbafe  0 : zsze:0x4000 zdes:0" in (await read_all(ops, "nvme0/ns/2/identify-zns.txt")).decode()
        assert len(await read_all(ops, "nvme0/ns/2/identify-zns")) == 4096
        assert len(json.loads(await read_all(ops, "nvme0/ns/1/identify-nvm.json"))["elbafs"]) == 8
        assert "csi: 2\n" in (await read_all(ops, "nvme0/ns/2/info")).decode()
        # listing sent nothing: the command sets were read with Identify at start
        before = len(ctrl.command_log)
        for path in ("nvme0", "nvme0/ns/1", "nvme0/ns/2"):
            for name in await listing(ops, path):
                await ops.getattr(await inode_of(ops, f"{path}/{name}"), Ctx())
        assert len(ctrl.command_log) == before
    async with mounted_ops("sim:size=64M") as (ops, _):
        assert "identify-zns" not in await listing(ops, "nvme0")
        assert "zones" not in await listing(ops, "nvme0/ns/1")


async def test_effects_json_lists_every_command_set_in_use():
    async with mounted_ops(URI) as (ops, (ctrl,)):
        pages = json.loads(await read_all(ops, "nvme0/log/effects.json"))
        assert [p["command_set_identifier"] for p in pages] == [0, 2]
        assert pages[0]["admin_cmd_set"] == pages[1]["admin_cmd_set"]
        assert "IOCS_122 (Zone Management Receive)" in pages[1]["io_cmd_set"]
        assert "IOCS_122 (Zone Management Receive)" not in pages[0]["io_cmd_set"]
        assert "IOCS_9 (Dataset Management)" in pages[0]["io_cmd_set"]
        text = (await read_all(ops, "nvme0/log/effects.txt")).decode()
        assert "1.command_set_identifier" in text
        # the raw page is CSI 0's, as before
        raw = await read_all(ops, "nvme0/log/effects")
        assert raw == (await ctrl.get_log(C.LID_EFFECTS, 4096)).data
        assert raw == await read_all(ops, "nvme0/log/by-id/0x05")
        log = [cmd for q, cmd in ctrl.command_log if cmd.opcode == C.OP_GET_LOG_PAGE
               and C.LID.get(cmd) == C.LID_EFFECTS]
        assert {C.LOG_CSI.get(cmd) for cmd in log} == {0, 2}
    async with mounted_ops("sim:size=64M") as (ops, _):
        assert len(json.loads(await read_all(ops, "nvme0/log/effects.json"))) == 1


async def test_zones_are_json_lines_of_the_live_zones():
    async with mounted_ops(URI, passthru="all") as (ops, (ctrl,)):
        zones = zones_of(await read_all(ops, "nvme0/ns/2/zones"))
        assert [z["slba"] for z in zones] == [i * ZB for i in range(8)]
        assert zones[0] == {"slba": 0, "wp": 0, "cap": ZB, "state": "EMPTY",
                            "type": "SEQWRITE_REQ", "attrs": 0, "attrs_info": 0}
        io = "nvme0/passthru/io"
        # a write at the write pointer, one that is not, an append, a finish
        out = await transact(ops, io, P.encode_request(0x01, nsid=2, cdw12=1, data=bytes(1024))
                             + P.encode_request(0x7D, nsid=2, cdw10=ZB, cdw12=3,
                                                data=bytes(2048), cid=7))
        first, append = Completion.decode(out[:16]), Completion.decode(out[16:32])
        assert first.ok and append.ok and (append.cid, append.dw0, append.dw1) == (7, ZB, 0)
        out = await transact(ops, io, b"opcode=0x01 nsid=2 cdw10=9 data=" + b"00" * 512 + b"\n")
        assert b"name=ZNS_INVALID_WRITE" in out.splitlines()[0]
        out = await transact(ops, io, P.encode_request(0x79, nsid=2, cdw10=2 * ZB, cdw13=2))
        assert Completion.decode(out).ok
        zones = zones_of(await read_all(ops, "nvme0/ns/2/zones"))
        assert [(z["state"], z["wp"]) for z in zones[:4]] == [
            ("IMP_OPENED", 2), ("IMP_OPENED", ZB + 4), ("FULL", Z.WP_INVALID), ("EMPTY", 3 * ZB)]
        # reset all
        out = await transact(ops, io, P.encode_request(0x79, nsid=2, cdw13=0x104))
        assert Completion.decode(out).ok
        assert {z["state"] for z in zones_of(await read_all(ops, "nvme0/ns/2/zones"))} == {"EMPTY"}
        with pytest.raises(FUSEError) as e:
            await open_file(ops, "nvme0/ns/2/zones", os.O_WRONLY)
        assert e.value.errno == errno.EACCES


async def test_zones_are_read_a_report_at_a_time_within_mdts():
    # 4 KiB zones of 512-byte blocks: 8192 zones; MDTS 8 KiB: 127 descriptors a report
    uri = "sim:size=32M,zoned=4K,mdts=1,command_log=100000"
    async with mounted_ops(uri) as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/ns/1/zones")
        try:
            first = await ops.read(fh, 0, 500)
            reports = [cmd for _, cmd in ctrl.command_log if cmd.opcode == C.OP_ZONE_MGMT_RECV]
            assert len(reports) == 1 and C.zone_recv_len(reports[0]) <= Z.report_length(6)
            assert first.count(b"\n") >= 1 and len(first) <= 500
            text, size, pos = bytes(first), 4096, len(first)
            while chunk := await ops.read(fh, pos, size):
                text += chunk
                pos += len(chunk)
                size = 128 * 1024 if size == 4096 else 4096     # reads of both sizes
        finally:
            await ops.release(fh)
        zones = zones_of(text)
        assert [z["slba"] for z in zones] == [8 * i for i in range(8192)]
        reports = [cmd for _, cmd in ctrl.command_log if cmd.opcode == C.OP_ZONE_MGMT_RECV]
        assert all(C.zone_recv_len(cmd) <= 8192 for cmd in reports)
        assert [C.SLBA.get(cmd) for cmd in reports] == sorted({C.SLBA.get(cmd) for cmd in reports})
        assert len(reports) < 200           # each asks for what its read holds, up to MDTS


async def test_passthru_checks_an_io_command_against_its_namespaces_command_set():
    async with mounted_ops(URI) as (ops, (ctrl,)):      # --passthru readonly
        io = "nvme0/passthru/io"
        report = dict(cdw12=63, cdw13=1 << 16, data_len=256)
        out = await transact(ops, io, P.encode_request(0x7A, nsid=2, **report))
        cpl = Completion.decode(out[:16])
        assert cpl.ok and Z.decode_report(out[16:])[0] == 3
        for write, err in ((P.encode_request(0x79, nsid=2, cdw13=4), errno.EACCES),
                           (P.encode_request(0x7A, nsid=1, **report), errno.EOPNOTSUPP),
                           (P.encode_request(0x7D, nsid=2, cdw12=0, data=bytes(512)),
                            errno.EACCES)):
            fh = await open_file(ops, io, os.O_RDWR)
            try:
                with pytest.raises(FUSEError) as e:
                    await ops.write(fh, 0, write)
                assert e.value.errno == err
            finally:
                await ops.release(fh)
        target = await ops.tree.get(await inode_of(ops, "nvme0/passthru")).targets.get(
            "io", "readonly", ops.tree.waiters)
        assert target.namespaces[2].csi == 2 and set(target.effects) == {0, 2}
