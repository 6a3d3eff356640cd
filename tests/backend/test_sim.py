"""The simulator: configuration, live counters, error log, faults, lifecycle commands."""

import os

import pytest
import trio
import trio.testing

from nvmefs.backends import ControllerFatal, ControllerGone, Request
from nvmefs.backends.sim.config import parse_size, parse_uri
from nvmefs.backends.sim.device import SimDevice
from nvmefs.spec import commands, identify, logs
from nvmefs.spec import status as S
from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.queue import Command

from ..conftest import controller


def test_uri_options_and_errors():
    cfg = parse_uri("sim:namespaces=3,size=256M,lba=4096,model=M,serial=S1,mdts=5")
    assert (cfg.namespaces, cfg.size, cfg.lba, cfg.model, cfg.serial, cfg.mdts) == \
        (3, 256 << 20, 4096, "M", "S1", 5)
    assert parse_uri("sim", index=3).serial == "NVMEFSSIM0003"
    assert parse_size("1G") == parse_size("1GiB") == 1 << 30 and parse_size("4096") == 4096
    for bad in ("sim:lba=1000", "sim:size=12Q", "sim:namespaces=0", "sim:colour=red",
                "sim:size", "sim:mdts=x", "sim:model=" + "m" * 41, "simulator", "sim:size=700"):
        with pytest.raises(ValueError):
            parse_uri(bad)


async def test_smart_counters_follow_io():
    async with controller("sim:size=64M") as c:
        before = logs.SMART.decode((await c.get_log(2, 512)).data)
        for i in range(3):
            await c.io(commands.rw(OP_WRITE, 1, i * 8, 8), data_out=bytes(4096))
        await c.io(commands.rw(OP_READ, 1, 0, 1000), data_in_len=512_000)
        after = logs.SMART.decode((await c.get_log(2, 512)).data)
        assert int(after["host_write_commands"]) - int(before["host_write_commands"]) == 3
        assert int(after["host_read_commands"]) - int(before["host_read_commands"]) == 1
        assert after["data_units_read"] == "1" and after["data_units_written"] == "1"  # rounded up
        c.set_temperature(350)
        hot = logs.SMART.decode((await c.get_log(2, 512)).data)
        assert hot["temperature"] == 350 and hot["critical_warning"] & logs.CW_TEMPERATURE


async def test_failed_commands_land_in_the_error_log():
    async with controller("sim:size=64M") as c:
        cpl = await c.io(commands.rw(OP_READ, 1, 1 << 40, 1), data_in_len=512)
        assert (cpl.sct, cpl.sc) == (0, 0x80)
        (first, *_) = logs.decode_error((await c.get_log(1, 64 * 64)).data, {})["errors"]
        assert first["error_count"] == 1 and first["opcode"] == OP_READ
        assert first["status_field"] == S.LBA_RANGE and first["lba"] == 1 << 40 and first["sqid"] == 1
        smart = logs.SMART.decode((await c.get_log(2, 512)).data)
        assert smart["num_err_log_entries"] == "1"


async def test_effects_log_lists_exactly_what_is_implemented():
    async with controller() as c:
        acs, iocs = logs.effects_tables((await c.get_log(5, 4096)).data)
        assert {op for op, e in enumerate(acs) if e & logs.CSUPP} == set(SimDevice.ADMIN_OPS)
        assert {op for op, e in enumerate(iocs) if e & logs.CSUPP} == set(SimDevice.IO_OPS)
        assert acs[0x80] & logs.LBCC and iocs[OP_WRITE] & logs.LBCC and not iocs[OP_READ] & logs.LBCC
        for op in range(256):
            if not acs[op] & logs.CSUPP and op != 0x08:
                assert (await c.admin(Command(op))).status == S.INVALID_OPCODE


async def test_log_page_offsets_and_limits():
    async with controller() as c:
        assert (await c.get_log(2, 512, offset=2)).status == S.INVALID_FIELD
        assert (await c.get_log(2, 512, offset=4096)).status == S.INVALID_FIELD
        big = await c.admin(commands.get_log_page(7, 1 << 20), data_in_len=1 << 20)
        assert big.status == S.INVALID_FIELD        # above MDTS
        assert (await c.get_log(7, 512, lsp=logs.LSP_TELEMETRY_CREATE)).ok    # capture
        whole = await c.get_log(7, 1 << 20)
        assert whole.ok and len(whole.data) == 1 << 20    # split at MDTS by the host side
        gen = logs.TELEMETRY.decode(whole.data)["hostdgn"]
        assert whole.data[512 * 2047:].startswith(f"nvmefs-sim telemetry gen={gen} block=2047".encode())
        again = await c.get_log(7, 512, offset=512 * 100)
        assert again.data == whole.data[512 * 100:512 * 101]     # LSP 0 keeps the capture


async def test_delay_fault():
    async with controller() as c:
        c.faults.inject("delay", opcode=0x06, delay=0.3)
        start = trio.current_time()
        assert (await c.admin(commands.identify(1), data_in_len=4096)).ok
        assert trio.current_time() - start >= 0.3


async def test_timeout_is_answered_host_aborted_and_the_next_command_works():
    async with controller() as c:
        c.faults.inject("timeout", queue="io")
        start = trio.current_time()
        with trio.fail_after(2.5):
            cpl = await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512, timeout=1.0)
        assert cpl.status == S.HOST_ABORTED and (cpl.sct, cpl.sc) == (3, 0x71)
        assert trio.current_time() - start < 2.0
        assert (await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)).ok
        assert c.statistics().timeouts == 1 and c.statistics().extra["hung"] == 0


async def test_status_fault_completes_with_that_status_and_logs_it():
    async with controller() as c:
        media = S.make_status(S.MEDIA, 0x81, dnr=True)
        c.faults.inject("status", opcode=OP_READ, status=media, count=2)
        for _ in range(2):
            assert (await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)).status == media
        assert (await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)).ok
        assert c.device.error_count == 2


async def test_fatal_status_until_reset():
    async with controller() as c:
        c.faults.inject("fatal")
        with pytest.raises(ControllerFatal):
            await c.get_log(2, 512)
        with pytest.raises(ControllerFatal):
            await c.get_log(2, 512)
        await c.reset()
        assert c.state == "live" and (await c.get_log(2, 512)).ok
        assert c.statistics().resets == 1


async def test_surprise_removal():
    async with controller() as c:
        c.faults.inject("remove", queue="io")
        with pytest.raises(ControllerGone):
            await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)
        with pytest.raises(ControllerGone):
            await c.get_log(2, 512)
        with pytest.raises(ControllerGone):
            await c.reset()
        assert c.state == "failed"


async def test_features_save_and_reset():
    async with controller() as c:
        assert (await c.get_feature(0x06)).dw0 == 1
        assert (await c.admin(commands.set_features(0x06, 0))).ok
        assert (await c.get_feature(0x06)).dw0 == 0
        await c.reset()
        assert (await c.get_feature(0x06)).dw0 == 1            # back to the saved value
        assert (await c.admin(commands.set_features(0x06, 0, save=True))).ok
        await c.reset()
        assert (await c.get_feature(0x06)).dw0 == 0
        assert (await c.get_feature(0x06, sel=1)).dw0 == 1      # default
        assert (await c.get_feature(0x06, sel=3)).dw0 & 0b101 == 0b101   # saveable, changeable
        stamp = (1_700_000_000_000).to_bytes(6, "little") + bytes(2)
        assert (await c.admin(commands.set_features(0x0E, 0), data_out=stamp)).ok
        got = int.from_bytes((await c.get_feature(0x0E, data_len=8)).data[:6], "little")
        assert 1_700_000_000_000 <= got < 1_700_000_010_000


async def test_firmware_download_and_commit():
    async with controller() as c:
        image = b"2.0-test" + bytes(4088)
        for off in range(0, len(image), 1024):
            cmd = Command(0x11, cdw10=1024 // 4 - 1, cdw11=off // 4)
            assert (await c.admin(cmd, data_out=image[off:off + 1024])).ok
        assert (await c.admin(Command(0x10, cdw10=2 | 3 << 3))).ok      # slot 2, activate now
        await c.refresh()
        assert c.id_ctrl["fr"] == "2.0-test"
        fw = logs.decode_fw_slot((await c.get_log(3, 512)).data, {"name": "nvme0"})["nvme0"]
        assert fw["Active Firmware Slot (afi)"] & 0x7 == 2 and "Firmware Rev Slot 2" in fw
        assert (await c.admin(Command(0x10, cdw10=5 | 2 << 3))).status == S.FIRMWARE_SLOT


async def test_format_changes_the_lba_format_and_reports_the_namespace():
    async with controller("sim:size=64M") as c:
        await c.io(commands.rw(OP_WRITE, 1, 0, 1), data_out=b"x" * 512)
        assert (await c.admin(Command(0x80, nsid=1, cdw10=1))).ok
        await c.refresh()
        ns = identify.decode_id_ns((await c.identify_ns(1)).data)
        assert identify.block_size(ns) == 4096 and ns["nsze"] == (64 << 20) // 4096
        assert (await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=4096)).data == bytes(4096)
        changed = await c.get_log(4, 4096, rae=False)
        assert int.from_bytes(changed.data[:4], "little") == 1
        assert (await c.get_log(4, 4096)).data == bytes(4096)      # read without RAE cleared it
        assert (await c.admin(Command(0x80, nsid=1, cdw10=7))).status == S.INVALID_FORMAT


def test_self_test_runs_to_completion():
    async def main():
        async with controller() as c:
            assert (await c.admin(Command(0x14, nsid=0xFFFFFFFF, cdw10=1))).ok
            assert (await c.admin(Command(0x14, cdw10=1))).status == S.SELF_TEST_IN_PROGRESS
            running = logs.decode_self_test((await c.get_log(6, 564)).data, {})
            assert running["Current Device Self-Test Operation"] == 1
            await trio.sleep(60)
            done = logs.decode_self_test((await c.get_log(6, 564)).data, {})
            assert done["Current Device Self-Test Operation"] == 0
            assert done["List of Valid Reports"][0]["Self test result"] == 0
            assert done["List of Valid Reports"][0]["Self test code"] == 1
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_sparse_file_backing(tmp_path):
    uri = f"sim:size=1G,path={tmp_path}"
    async with controller(uri) as c:
        await c.io(commands.rw(OP_WRITE, 1, 2_000_000, 1), data_out=b"persist!" * 64)
    img = tmp_path / "nvmefs-sim0-ns1.img"
    assert img.stat().st_size == 1 << 30 and img.stat().st_blocks * 512 < 1 << 20
    async with controller(uri) as c:
        cpl = await c.io(commands.rw(OP_READ, 1, 2_000_000, 1), data_in_len=512)
        assert cpl.data == b"persist!" * 64


async def test_batch_with_a_fault_in_the_middle():
    async with controller() as c:
        c.faults.inject("delay", queue="io", delay=0.2)
        reqs = [Request("io", commands.rw(OP_READ, 1, i, 1).with_cid(i), data_in_len=512)
                for i in range(8)]
        cpls = await c.submit_batch(reqs)
        assert [x.cid for x in cpls] == list(range(8)) and all(x.ok for x in cpls)


def test_storage_chunks_across_boundaries():
    from nvmefs.backends.sim.storage import CHUNK, MemoryStore
    store = MemoryStore(4 * CHUNK)
    data = os.urandom(CHUNK + 100)
    store.write(CHUNK - 50, data)
    assert store.read(CHUNK - 50, len(data)) == data
    store.zero(CHUNK, CHUNK)
    assert store.read(CHUNK, CHUNK) == bytes(CHUNK) and store.read(CHUNK - 50, 50) == data[:50]
    assert store.allocated() == 2 * CHUNK
