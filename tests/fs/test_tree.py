"""The tree served by Operations: layout, views, snapshots, errors."""

import errno
import json
import os

import pytest
from pyfuse3 import FUSEError

from nvmefs.spec import commands, identify, logs
from nvmefs.spec.commands import OP_READ

from .conftest import Ctx, inode_of, listing, mounted_ops, open_file, read_all


async def test_one_directory_per_controller():
    async with mounted_ops("sim:size=64M", "sim:size=64M,namespaces=2") as (ops, ctrls):
        assert await listing(ops, "") == ["nvme0", "nvme1", "metrics"]
        assert await listing(ops, "nvme0") == ["info", "identify", "identify.json", "identify.txt",
                                               "identify-nvm", "identify-nvm.json",
                                               "identify-nvm.txt",
                                               "log", "features", "ns", "passthru", "cdq",
                                               "events", "reset", "faults"]
        assert await listing(ops, "nvme1/ns") == ["1", "2"]
        sn0 = json.loads(await read_all(ops, "nvme0/identify.json"))["sn"]
        sn1 = json.loads(await read_all(ops, "nvme1/identify.json"))["sn"]
        assert sn0 != sn1


async def test_log_listing_shows_only_supported_pages():
    async with mounted_ops() as (ops, (ctrl,)):
        names = await listing(ops, "nvme0/log")
        for page in ("error", "smart", "fw-slot", "effects", "self-test", "telemetry-host",
                     "changed-ns", "supported-logs"):
            assert {page, f"{page}.json", f"{page}.txt"} <= set(names)
        for absent in ("endurance", "ana", "sanitize", "persistent-event"):
            assert absent not in names
        assert names[-1] == "by-id"
        assert await listing(ops, "nvme0/log/by-id") == [f"0x{i:02x}" for i in range(9)]


async def test_identify_views_and_sizes():
    async with mounted_ops() as (ops, (ctrl,)):
        raw = await read_all(ops, "nvme0/identify")
        assert raw == ctrl.id_ctrl_raw and len(raw) == 4096
        attr = await ops.getattr(await inode_of(ops, "nvme0/identify"), Ctx())
        assert attr.st_size == 4096 and attr.st_mode == 0o100444
        assert json.loads(await read_all(ops, "nvme0/identify.json")) == identify.decode_id_ctrl(raw)
        text = (await read_all(ops, "nvme0/identify.txt")).decode()
        assert "mn        : nvmefs simulated controller" in text
        info = dict(line.split(": ", 1) for line in (await read_all(ops, "nvme0/info")).decode().splitlines())
        assert info["backend"] == "sim" and info["state"] == "live" and info["mdts"] == "524288"
        ns_info = (await read_all(ops, "nvme0/ns/1/info")).decode()
        assert "block_size: 512" in ns_info and f"bytes: {64 << 20}" in ns_info


async def test_a_snapshot_does_not_change_under_an_open_file():
    async with mounted_ops() as (ops, (ctrl,)):
        fh = await open_file(ops, "nvme0/log/smart.json")
        head = await ops.read(fh, 0, 100)
        for _ in range(5):
            await ctrl.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)
        whole = head + await ops.read(fh, 100, 1 << 20)
        await ops.release(fh)
        assert json.loads(whole)["host_read_commands"] == "0"
        assert json.loads(await read_all(ops, "nvme0/log/smart.json"))["host_read_commands"] == "5"
        attr = await ops.getattr(await inode_of(ops, "nvme0/log/smart"), Ctx())
        assert attr.st_size == 512


async def test_large_log_reads_at_the_offset_asked():
    async with mounted_ops() as (ops, (ctrl,)):
        inode = await inode_of(ops, "nvme0/log/telemetry-host")
        sent_before = len(ctrl.command_log)
        fh = await open_file(ops, "nvme0/log/telemetry-host")
        assert (await ops.getattr(inode, Ctx())).st_size == 1 << 20
        gen = logs.TELEMETRY.decode(await ops.read(fh, 0, 512))["hostdgn"]
        block = await ops.read(fh, 1000 * 512 + 3, 40)
        text = f"nvmefs-sim telemetry gen={gen} block=1000\n".encode()
        assert len(block) == 40 and block.startswith(text[3:])
        assert await ops.read(fh, 1 << 20, 10) == b""
        assert len(await ops.read(fh, (1 << 20) - 5, 100)) == 5
        await ops.release(fh)
        fetched = [logs.LOG_PAGES[7].lid == c.cdw10 & 0xFF and commands.log_page_fields(c)[2]
                   for _, c in list(ctrl.command_log)[sent_before:]]
        assert max(fetched) <= 4096          # never the whole megabyte
        assert json.loads(await read_all(ops, "nvme0/log/telemetry-host.json"))["dalb3"] == 2047


async def test_a_new_capture_makes_the_older_open_stale():
    async with mounted_ops() as (ops, (ctrl,)):
        first = await open_file(ops, "nvme0/log/telemetry-host")
        assert len(await ops.read(first, 1000 * 512, 64)) == 64
        second = await open_file(ops, "nvme0/log/telemetry-host")
        with pytest.raises(FUSEError) as e:
            await ops.read(first, 1000 * 512, 64)
        assert e.value.errno == errno.ESTALE
        assert await ops.read(first, 0, 16) != b""        # its own header stays readable
        gen = logs.TELEMETRY.decode(await ops.read(second, 0, 512))["hostdgn"]
        text = f"nvmefs-sim telemetry gen={gen} block=1000\n".encode()
        assert (await ops.read(second, 1000 * 512, 64)).startswith(text)
        for fh in (first, second):
            await ops.release(fh)


async def test_listing_and_stat_send_no_command():
    async with mounted_ops() as (ops, (ctrl,)):
        await listing(ops, "nvme0/log")          # Supported Log Pages, once per generation
        before = len(ctrl.command_log)
        for path in ("nvme0/log", "nvme0/features", "nvme0", "nvme0/ns/1"):
            for name in await listing(ops, path):
                await ops.getattr(await inode_of(ops, f"{path}/{name}"), Ctx())
        assert len(ctrl.command_log) == before


async def test_by_id_names_and_unsupported_ids():
    async with mounted_ops() as (ops, (ctrl,)):
        assert await read_all(ops, "nvme0/log/by-id/0x02") != b""
        assert len(await read_all(ops, "nvme0/log/by-id/0x02")) == 512
        with pytest.raises(FUSEError) as e:
            await read_all(ops, "nvme0/log/by-id/0xc0")
        assert e.value.errno == errno.EOPNOTSUPP
        with pytest.raises(FUSEError) as e:
            await read_all(ops, "nvme0/features/by-id/0x03")
        assert e.value.errno == errno.EOPNOTSUPP
        for bad in ("nvme0/log/by-id/0x2", "nvme0/log/by-id/2", "nvme0/log/nope", "nvme9"):
            with pytest.raises(FUSEError) as e:
                await inode_of(ops, bad)
            assert e.value.errno == errno.ENOENT


async def test_features():
    async with mounted_ops() as (ops, (ctrl,)):
        assert await read_all(ops, "nvme0/features/volatile-write-cache") == b"\x01\0\0\0"
        assert json.loads(await read_all(ops, "nvme0/features/volatile-write-cache.json"))["wce"] == 1
        assert len(await read_all(ops, "nvme0/features/apst")) == 4 + 256
        assert "keep-alive" not in await listing(ops, "nvme0/features")
        assert await read_all(ops, "nvme0/features/by-id/0x06") == b"\x01\0\0\0"


async def test_read_only_files_refuse_writers():
    async with mounted_ops() as (ops, (ctrl,)):
        for flags in (os.O_WRONLY, os.O_RDWR):
            with pytest.raises(FUSEError) as e:
                await open_file(ops, "nvme0/log/smart", flags)
            assert e.value.errno == errno.EACCES
        with pytest.raises(FUSEError) as e:
            await ops.open(await inode_of(ops, "nvme0/log"), os.O_RDONLY, Ctx())
        assert e.value.errno == errno.EISDIR


async def test_transport_failures_become_errnos_and_the_daemon_survives():
    async with mounted_ops("sim", "sim") as (ops, (c0, c1)):
        c0.faults.inject("fatal")
        with pytest.raises(FUSEError) as e:
            await read_all(ops, "nvme0/log/smart")
        assert e.value.errno == errno.EIO
        c1.faults.inject("remove")
        with pytest.raises(FUSEError) as e:
            await read_all(ops, "nvme1/log/smart")
        assert e.value.errno == errno.ENODEV
        await c0.reset()
        assert len(await read_all(ops, "nvme0/log/smart")) == 512


async def test_unexpected_errors_are_eio(monkeypatch):
    async with mounted_ops() as (ops, (ctrl,)):
        async def broken(*args, **kwargs):
            raise RuntimeError("bug")
        monkeypatch.setattr(ctrl, "get_log", broken)
        with pytest.raises(FUSEError) as e:
            await read_all(ops, "nvme0/log/smart.json")
        assert e.value.errno == errno.EIO
        with pytest.raises(FUSEError) as e:
            await ops.read(987654, 0, 10)
        assert e.value.errno == errno.EBADF


async def test_statfs_and_inode_stability():
    async with mounted_ops() as (ops, (ctrl,)):
        first = await inode_of(ops, "nvme0/log/smart.json")
        await listing(ops, "nvme0/log")
        assert await inode_of(ops, "nvme0/log/smart.json") == first
        assert (await ops.statfs(Ctx())).f_namemax == 255


async def test_a_view_renders_again_only_when_its_bytes_changed(monkeypatch):
    from nvmefs.spec import render
    real, calls = render.render, []

    def counting(kind, raw, fmt, ctx):
        calls.append(kind)
        return real(kind, raw, fmt, ctx)
    monkeypatch.setattr(render, "render", counting)
    async with mounted_ops() as (ops, (ctrl,)):
        first = await read_all(ops, "nvme0/identify.json")
        assert await read_all(ops, "nvme0/identify.json") == first and calls == ["id-ctrl"]
        smart = json.loads(await read_all(ops, "nvme0/log/smart.json"))
        await read_all(ops, "nvme0/log/smart.json")
        assert calls.count("smart") == 1
        await ctrl.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)
        again = json.loads(await read_all(ops, "nvme0/log/smart.json"))
        assert calls.count("smart") == 2
        assert int(again["host_read_commands"]) == int(smart["host_read_commands"]) + 1
