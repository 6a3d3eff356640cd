"""The simulator: configuration, live counters, error log, faults, lifecycle commands,
command validation (nothing a command carries raises), the batch path, media."""

import errno
import json
import os
import tempfile
import time

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from nvmefs.backends import ControllerFatal, ControllerGone, Request
from nvmefs.backends.base import Controller
from nvmefs.backends.sim import SimController
from nvmefs.backends.sim import storage as storage_mod
from nvmefs.backends.sim.config import parse_size, parse_uri
from nvmefs.backends.sim.device import SimDevice
from nvmefs.backends.sim.faults import MAX_DELAY, MAX_RULES, Fault, FaultError, Faults, parse_fault
from nvmefs.spec import commands, identify, logs
from nvmefs.spec import status as S
from nvmefs.spec.commands import OP_DSM, OP_READ, OP_WRITE, OP_WRITE_ZEROES
from nvmefs.spec.opcodes import ADMIN, IO
from nvmefs.spec.queue import Command, Completion, make_status

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
        # Asynchronous Event Requests are held by the queue layer, not the command set
        assert {op for op, e in enumerate(acs) if e & logs.CSUPP} == \
            set(SimDevice.ADMIN_OPS) | {commands.OP_ASYNC_EVENT}
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
        # the Namespace Attribute Changed event: nvmefs, the host, read the list with RAE
        # clear (which empties it), as a driver does, and recorded it with the event
        with trio.fail_after(1):
            while not c.events.count:
                await trio.sleep(0.01)
        event = json.loads(c.events.since(0)[0][-1])
        assert (event["type_name"], event["info_name"]) == ("notice", "ns-attr-changed")
        assert event["log"]["nvme0"] == {"[   1]": "0x1"}
        assert (await c.get_log(4, 4096)).data == bytes(4096)
        assert (await c.admin(Command(0x80, nsid=1, cdw10=8))).status == S.INVALID_FORMAT


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


def test_uri_options_added_for_tests_and_faults():
    cfg = parse_uri("sim:command_log=5,mdts=0,fault=timeout:io:*:1,fault=status:io:2:3:READ_ERROR")
    assert (cfg.command_log, cfg.mdts) == (5, 0)
    assert cfg.fault == ("timeout:io:*:1", "status:io:2:3:READ_ERROR")
    assert parse_uri("sim").command_log == 0 and parse_uri("sim").fault == ()
    for bad in ("sim:command_log=-1", "sim:command_log=x", "sim:fault=timeout:io:*",
                "sim:fault=delay:io:*:1:601", "sim:fault=status:io:*:1:0"):
        with pytest.raises(ValueError):
            parse_uri(bad)


# ---------------------------------------------------------------- features are validated

FEATURE_NOT_PER_NS = make_status(S.CMD_SPECIFIC, 0x0F, dnr=True)


def _apst(itps: int, itpt: int, extra: int = 0) -> bytes:
    return (itps << 3 | itpt << 8 | extra).to_bytes(8, "little") + bytes(248)


FEATURE_CASES = [
    (commands.get_features(0x06, sel=4), b"", S.INVALID_FIELD),           # SEL reserved
    (commands.get_features(0x0D), b"", S.INVALID_FIELD),                  # no host memory buffer
    (commands.get_features(0x04, cdw11=3 << 20), b"", S.INVALID_FIELD),   # THSEL reserved
    (commands.get_features(0x04, cdw11=1 << 16), b"", S.INVALID_FIELD),   # no sensor 1
    (commands.get_features(0x05, nsid=9), b"", S.INVALID_NS),
    (commands.set_features(0x02, 3), b"", S.INVALID_FIELD),               # PS 3 > NPSS
    (commands.set_features(0x02, 3 << 5), b"", S.INVALID_FIELD),          # WH 3 reserved
    (commands.set_features(0x04, 350 | 2 << 20), b"", S.INVALID_FIELD),   # THSEL reserved
    (commands.set_features(0x05, 1 << 16, nsid=1), b"", S.INVALID_FIELD),  # DULBE unsupported
    (commands.set_features(0x05, 0, nsid=9), b"", S.INVALID_NS),
    (commands.set_features(0x06, 0x2), b"", S.INVALID_FIELD),             # reserved bit
    (commands.set_features(0x06, 0, nsid=1), b"", FEATURE_NOT_PER_NS),
    (commands.set_features(0x07, 0xFFFF), b"", S.INVALID_FIELD),          # 65536 queues
    (commands.set_features(0x0E, 0, save=True), bytes(8), S.FEATURE_NOT_SAVEABLE),
    (commands.set_features(0x0E, 1), bytes(8), S.INVALID_FIELD),          # CDW11 reserved
    (commands.set_features(0x0E, 0), bytes(4), S.DATA_XFER_ERROR),
    (commands.set_features(0x0C, 1), _apst(1, 100), S.INVALID_FIELD),     # PS1 is operational
    (commands.set_features(0x0C, 1), _apst(2, 100, 1 << 40), S.INVALID_FIELD),
    (commands.set_features(0xFE, 0), b"", S.INVALID_FIELD),
]


async def test_get_and_set_features_validate_what_they_carry():
    async with controller() as c:
        fids = (0x02, 0x04, 0x05, 0x06, 0x07, 0x0C)
        before = [(await c.get_feature(fid, nsid=1 if fid == 0x05 else 0, data_len=256)).data
                  for fid in fids]
        for cmd, data, want in FEATURE_CASES:
            cpl = await c.admin(cmd, data_out=data, data_in_len=0 if data else 8)
            assert cpl.status == want, (cmd, hex(cpl.status))
        after = [(await c.get_feature(fid, nsid=1 if fid == 0x05 else 0, data_len=256)).data
                 for fid in fids]
        assert after == before and c.device.error_count == len(FEATURE_CASES)
        assert (await c.admin(commands.set_features(0x0C, 1), data_out=_apst(2, 100))).ok
        apst = await c.get_feature(0x0C, data_len=256)
        assert apst.dw0 == 1 and apst.data == _apst(2, 100)
        assert (await c.admin(commands.set_features(0x04, 300 | 1 << 20))).ok
        assert (await c.get_feature(0x04, cdw11=1 << 20)).dw0 & 0xFFFF == 300
        assert (await c.get_feature(0x0E, sel=3)).dw0 == 0b100        # changeable, not saveable
        assert (await c.get_feature(0x05, nsid=0xFFFFFFFF)).ok


def test_the_largest_timestamp_wraps_instead_of_raising():
    async def main():
        async with controller() as c:
            stamp = (0xFFFFFFFFFFFF).to_bytes(6, "little") + b"\xff\xff"
            assert (await c.admin(commands.set_features(0x0E, 0), data_out=stamp)).ok
            got = await c.get_feature(0x0E, data_len=8)
            assert got.ok and got.data == stamp[:6] + b"\x02\x00"     # origin 1: Set Features
            await trio.sleep(0.5)
            got = await c.get_feature(0x0E, data_len=8)
            assert int.from_bytes(got.data[:6], "little") == 499       # counted on, wrapped
            assert (await c.get_feature(0x0E, sel=2, data_len=8)).data[:6] == bytes(6)  # default
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_firmware_revision_and_format_fields_are_checked():
    async with controller("sim:size=64M") as c:
        image = b"\xff\xfe\x80bad!!" + bytes(1016)
        assert (await c.admin(Command(0x11, cdw10=1024 // 4 - 1), data_out=image)).ok
        assert (await c.admin(Command(0x10, cdw10=2 | 3 << 3))).status == S.FIRMWARE_IMAGE
        assert (await c.admin(Command(0x10, cdw10=2 | 6 << 3))).status == S.INVALID_FIELD
        assert (await c.admin(Command(0x80, nsid=1, cdw10=1 << 5))).status == S.INVALID_FORMAT  # PI
        assert (await c.admin(Command(0x80, nsid=1, cdw10=2 << 9))).status == S.INVALID_FIELD  # SES
        assert (await c.admin(Command(0x80, nsid=1, cdw10=1 << 12))).status == S.INVALID_FORMAT
        assert (await c.admin(Command(0x14, nsid=7, cdw10=1))).status == S.INVALID_NS
        await c.refresh()
        assert c.id_ctrl["fr"].strip() == "1.0"


# ---------------------------------------------------------------- nothing a command carries raises

U32 = st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(0, 16),
                st.sampled_from([0xFFFFFFFE, 0xFFFFFFFF]))
OPCODES = st.one_of(st.integers(0, 0xFF), st.sampled_from(sorted({*SimDevice.ADMIN_OPS,
                                                                  *SimDevice.IO_OPS})))
MAX_DATA = 64 * 1024         # within MDTS (7: 512 KiB)


@st.composite
def requests(draw):
    """Any 64-byte command, on either queue, with any data within bounds."""
    sqe = bytes([draw(OPCODES), draw(st.integers(0, 0xFF))]) \
        + draw(st.integers(0, 0xFFFF)).to_bytes(2, "little") \
        + b"".join(draw(U32).to_bytes(4, "little") for _ in range(15))
    data_out = draw(st.one_of(st.binary(max_size=600), st.integers(0, MAX_DATA).map(bytes)))
    queue = draw(st.sampled_from([ADMIN, IO]))
    # an Asynchronous Event Request is answered only when an event comes: not bounded
    assume(not (queue == ADMIN and sqe[0] == commands.OP_ASYNC_EVENT))
    return Request(queue, Command.decode(sqe), data_out, draw(st.integers(0, MAX_DATA)))


def _every_command_completes(uri: str, reqs: list[Request]) -> None:
    async def main():
        async with controller(uri) as c:
            cpls = await c.submit_batch(reqs)
            assert len(cpls) == len(reqs)
            for req, cpl in zip(reqs, cpls):
                assert isinstance(cpl, Completion) and cpl.cid == req.cmd.cid
                assert len(cpl.data) == req.data_in_len and cpl.sqid == (req.queue == IO)
            assert (await c.get_log(2, 512)).ok          # and the controller still works
            assert c.statistics().in_flight == 0
    trio.run(main)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


@settings(max_examples=300, **SETTINGS)
@given(st.lists(requests(), min_size=1, max_size=12))
@example([Request(ADMIN, commands.set_features(0x0E, 0), b"\xff" * 8),
          Request(ADMIN, commands.get_features(0x0E), data_in_len=8)])
@example([Request(ADMIN, Command(0x11, cdw10=1), b"\xff" * 8),
          Request(ADMIN, Command(0x10, cdw10=3 << 3)),
          Request(ADMIN, commands.get_log_page(3, 512), data_in_len=512)])
def test_random_commands_always_complete(reqs):
    _every_command_completes("sim:size=1M,namespaces=2", reqs)


@settings(max_examples=40, **SETTINGS)
@given(st.lists(requests(), min_size=1, max_size=6))
def test_random_commands_on_file_backed_namespaces_always_complete(reqs):
    with tempfile.TemporaryDirectory() as d:
        _every_command_completes(f"sim:size=1M,lba=4096,mdts=0,path={d}", reqs)


# ---------------------------------------------------------------- the batch path

class StepCounter(trio.abc.Instrument):
    def __init__(self, task):
        self.task, self.steps, self.spawned = task, 0, 0

    def before_task_step(self, task):
        self.steps += task is self.task

    def task_spawned(self, task):
        self.spawned += 1


async def test_a_batch_is_one_checkpoint_and_no_task_per_command():
    async with controller("sim:size=64M") as c:
        reqs = [Request(IO, commands.rw(OP_READ, 1, i, 1).with_cid(i), data_in_len=512)
                for i in range(200)]
        counter = StepCounter(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            cpls = await c.submit_batch(reqs)
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert [x.cid for x in cpls] == list(range(200)) and all(x.ok for x in cpls)
        assert counter.spawned == 0 and counter.steps == 1
        stats = c.statistics()
        assert stats.in_flight == 0 and stats.completed == stats.submitted


async def test_a_cancelled_batch_carries_nothing():
    async with controller("sim:size=64M,command_log=10") as c:
        before = len(c.command_log)
        with trio.CancelScope() as scope:
            scope.cancel()
            await c.submit_batch([Request(IO, commands.rw(OP_READ, 1, 0, 1), data_in_len=512)])
        assert scope.cancelled_caught and len(c.command_log) == before


def test_each_command_of_a_batch_has_its_own_deadline():
    async def main():
        async with controller("sim:size=64M") as c:
            c.faults.inject("timeout", queue="io", opcode=OP_READ, count=2)
            read = commands.rw(OP_READ, 1, 0, 1)
            reqs = [Request(IO, commands.rw(OP_WRITE, 1, 0, 1).with_cid(0), bytes(512)),
                    Request(IO, read.with_cid(1), data_in_len=512, timeout=2.0),
                    Request(IO, read.with_cid(2), data_in_len=512, timeout=0.5),
                    Request(IO, read.with_cid(3), data_in_len=512)]
            start = trio.current_time()
            cpls = await c.submit_batch(reqs)
            assert [x.cid for x in cpls] == [0, 1, 2, 3]
            assert [x.status for x in cpls] == [0, S.HOST_ABORTED, S.HOST_ABORTED, 0]
            # the third's 0.5 s counted from when it was carried, after the second's 2 s
            assert trio.current_time() - start == pytest.approx(2.5)
            stats = c.statistics()
            assert (stats.timeouts, stats.in_flight, stats.extra["hung"]) == (2, 0, 0)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_latency_counts_from_arrival_so_a_batch_takes_one_latency():
    async def main():
        async with controller("sim:size=64M,io_latency=100") as c:
            reqs = [Request(IO, commands.rw(OP_READ, 1, i, 1), data_in_len=512) for i in range(10)]
            start = trio.current_time()
            assert all(x.ok for x in await c.submit_batch(reqs))
            assert trio.current_time() - start == pytest.approx(0.1)
            start = trio.current_time()
            for req in reqs[:3]:
                assert (await c.submit(req)).ok
            assert trio.current_time() - start == pytest.approx(0.3)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_transport_failure_ends_the_batch_and_is_counted():
    async with controller("sim:size=64M,command_log=100") as c:
        c.faults.inject("remove", queue="io", opcode=OP_WRITE)
        reqs = [Request(IO, commands.rw(OP_READ, 1, 0, 1), data_in_len=512),
                Request(IO, commands.rw(OP_WRITE, 1, 0, 1), bytes(512)),
                Request(IO, commands.rw(OP_READ, 1, 0, 1), data_in_len=512)]
        before = len(c.command_log)
        with pytest.raises(ControllerGone):
            await c.submit_batch(reqs)
        stats = c.statistics()
        assert len(c.command_log) - before == 1
        assert (stats.in_flight, stats.transport_errors) == (0, 1)


async def test_start_takes_the_nursery_its_background_tasks_run_in():
    class Ticking(SimController):
        ticking = False

        async def _start(self, nursery):
            await super()._start(nursery)
            await nursery.start(self._tick)

        async def _tick(self, task_status=trio.TASK_STATUS_IGNORED):
            self.ticking = True
            task_status.started()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        ctrl = Ticking("sim:size=64M")
        assert (await ctrl.start(nursery)) is ctrl
        assert ctrl.ticking and ctrl.state == "live" and ctrl.nsids == [1]
        await ctrl.aclose()
        nursery.cancel_scope.cancel()
    assert "nursery" in Controller.start.__code__.co_varnames


# ---------------------------------------------------------------- media

def _range(slba: int, nlb: int) -> bytes:
    return bytes(4) + nlb.to_bytes(4, "little") + slba.to_bytes(8, "little")


async def test_zeroing_punches_holes_in_the_backing_file(tmp_path):
    async with controller(f"sim:size=64M,path={tmp_path}") as c:
        store = c.device.namespaces[1].store
        data = os.urandom(128 * 1024)
        for i in range(32):                          # 4 MiB of data
            assert (await c.io(commands.rw(OP_WRITE, 1, i * 256, 256), data_out=data)).ok
        full = store.allocated()
        assert full >= 4 << 20
        assert (await c.io(commands.rw(OP_WRITE_ZEROES, 1, 0, 2048))).ok       # 1 MiB
        assert store.allocated() <= full - (1 << 20)
        dsm = Command(OP_DSM, nsid=1, cdw10=0, cdw11=1 << 2)                     # deallocate
        assert (await c.io(dsm, data_out=_range(2048, 2048))).ok
        assert store.allocated() <= full - (2 << 20)
        cpl = await c.io(commands.rw(OP_READ, 1, 1024, 1024), data_in_len=512 * 1024)
        assert cpl.data == bytes(512 * 1024)
        cpl = await c.io(commands.rw(OP_READ, 1, 4096, 256), data_in_len=128 * 1024)
        assert cpl.data == data
        assert (await c.admin(Command(0x80, nsid=1))).ok                         # format
        assert store.allocated() < 64 * 1024
    assert (tmp_path / "nvmefs-sim0-ns1.img").stat().st_size == 64 << 20


async def test_file_io_never_blocks_the_event_loop(tmp_path, monkeypatch):
    zero, write = storage_mod.FileStore.zero, storage_mod.FileStore.write

    def slow(method):
        def run(self, *args):
            time.sleep(0.3)             # a slow disk
            return method(self, *args)
        return run
    monkeypatch.setattr(storage_mod.FileStore, "zero", slow(zero))
    monkeypatch.setattr(storage_mod.FileStore, "write", slow(write))
    async with controller(f"sim:size=64M,path={tmp_path}") as c:
        gaps = []

        async def ticker():
            last = time.monotonic()
            while True:
                await trio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            start = time.monotonic()
            assert (await c.io(commands.rw(OP_WRITE_ZEROES, 1, 0, 65536))).ok
            assert (await c.io(commands.rw(OP_WRITE, 1, 0, 1), data_out=b"x" * 512)).ok
            assert (await c.admin(Command(0x80, nsid=1))).ok
            assert time.monotonic() - start >= 0.9
            nursery.cancel_scope.cancel()
        assert len(gaps) > 20 and max(gaps) < 0.2


def test_zeroing_without_punch_writes_only_where_there_is_data(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "_fallocate", None)
    store = storage_mod.FileStore(str(tmp_path / "ns.img"), 64 << 20)
    try:
        store.write(1 << 20, b"x" * (1 << 20))
        before = store.allocated()
        store.zero(100, (64 << 20) - 200)
        assert store.read(1 << 20, 1 << 20) == bytes(1 << 20)
        assert store.allocated() <= before
    finally:
        store.close()
    with pytest.raises(OSError):
        store.read(0, 512)


async def test_the_command_log_is_opt_in():
    async with controller() as c:
        await c.get_log(2, 512)
        assert len(c.command_log) == 0
    async with controller("sim:command_log=3") as c:
        for _ in range(5):
            await c.get_log(2, 512)
        assert [(q, cmd.opcode) for q, cmd in c.command_log] == [(ADMIN, 0x02)] * 3


async def test_mdts_0_means_no_transfer_limit():
    async with controller("sim:size=64M,mdts=0,command_log=10") as c:
        assert c.id_ctrl["mdts"] == 0 and c.max_transfer == 0
        cpl = await c.io(commands.rw(OP_READ, 1, 0, 65536), data_in_len=32 << 20)
        assert cpl.ok and len(cpl.data) == 32 << 20
        before = len(c.command_log)
        whole = await c.get_log(7, 1 << 20)
        assert whole.ok and len(whole.data) == 1 << 20 and len(c.command_log) == before + 1


# ---------------------------------------------------------------- fault rules a user can write

def test_fault_rules_parse_and_describe():
    cases = {
        "delay:io:0x02:3:0.5": Fault("delay", "io", 2, delay=0.5, count=3),
        "delay:*:*:2:250ms": Fault("delay", None, None, delay=0.25, count=2),
        "status:any:any:*:READ_ERROR+dnr": Fault("status", status=0x4281, count=None),
        "status:io:2:1:0x0281": Fault("status", "io", 2, status=0x281),
        " timeout:admin:6:1 ": Fault("timeout", "admin", 6),
        "FATAL:*:*:1": Fault("fatal"),
        "remove:io:*:1": Fault("remove", "io"),
    }
    for text, want in cases.items():
        got = parse_fault(text)
        assert got == want, text
        assert parse_fault(got.describe()) == got
    assert parse_fault("status:io:2:1:READ_ERROR").describe() == "status:io:0x02:1:0x0281"
    assert parse_fault("delay:*:*:*:600").describe() == "delay:*:*:*:600.0"


@pytest.mark.parametrize("bad", [
    "", "delay", "delay:io:2:1", "timeout:io:2:1:5", "delay:io:2:1:601", "delay:io:2:1:-1",
    "delay:io:2:1:nan", "delay:io:2:1:inf", "delay:io:2:0:1", "delay:nvme:2:1:1",
    "delay:io:0x100:1:1", "status:io:2:1:0", "status:io:2:1:0x4000", "status:io:2:1:0x8000",
    "status:io:2:1:NO_SUCH", "status:io:2:1:READ_ERROR+x", "explode:io:2:1",
    "delay:io:2:1:1:extra", "delay:io:two:1:1", "delay:io:2:-1:1", "delay::2:1:1",
])
def test_bad_fault_rules_are_refused(bad):
    with pytest.raises(FaultError):
        parse_fault(bad)


def test_faults_apply_all_or_nothing():
    faults = Faults()
    faults.apply("delay:io:*:1:1\n\ntimeout:admin:*:2\n")
    assert faults.describe() == "delay:io:*:1:1.0\ntimeout:admin:*:2\n"
    with pytest.raises(FaultError):
        faults.apply("clear\nstatus:io:*:1:0x281\nnonsense\n")
    assert len(faults.rules) == 2
    faults.apply("clear\nstatus:io:*:1:0x281")
    assert faults.describe() == "status:io:*:1:0x0281\n"
    with pytest.raises(FaultError):
        faults.apply("timeout:io:*:1\n" * MAX_RULES)
    assert len(faults.rules) == 1
    with pytest.raises(ValueError):
        faults.inject("delay", delay=MAX_DELAY + 1)
    faults.inject("delay", delay=MAX_DELAY)


async def test_faults_from_the_uri():
    uri = "sim:size=64M,fault=status:io:0x02:2:READ_ERROR,fault=delay:io:0x01:1:300ms"
    async with controller(uri) as c:
        read = commands.rw(OP_READ, 1, 0, 1)
        for _ in range(2):
            assert (await c.io(read, data_in_len=512)).status == make_status(S.MEDIA, 0x81)
        assert (await c.io(read, data_in_len=512)).ok
        start = trio.current_time()
        assert (await c.io(commands.rw(OP_WRITE, 1, 0, 1), data_out=bytes(512))).ok
        assert trio.current_time() - start >= 0.3
        assert c.faults.rules == [] and c.statistics().extra["faults_fired"] == 3


async def test_faults_control_file():
    from pyfuse3 import FUSEError

    from nvmefs.fs.faults import FaultsFile

    class Access:
        def policy_for(self, uid):
            return "all" if uid == 0 else "readonly"

    class Tree:
        access = Access()

    class Ctx:
        def __init__(self, uid):
            self.uid = uid

    async with controller("sim:size=64M") as c:
        f = FaultsFile(c.faults, c.set_temperature)
        f.tree = Tree()
        h = await f.open(os.O_WRONLY, Ctx(0))
        assert await h.write(0, b"status:io:0x02:2:READ_ERROR\n") == 28
        assert await h.write(0, b"delay:admin:*:*:0.5") == 19
        for bad in (b"status:io:0x02:2\n", b"delay:io:*:1:601\n", b"\xff\n",
                    b"timeout:io:*:1\nnonsense\n"):
            with pytest.raises(FUSEError) as e:
                await h.write(0, bad)
            assert e.value.errno == errno.EINVAL
        with pytest.raises(FUSEError) as e:
            await h.write(0, b"timeout:io:*:1\n" * MAX_RULES)
        assert e.value.errno == errno.ENOSPC
        listing = await (await f.open(os.O_RDONLY, Ctx(1000))).read(0, 4096)
        assert listing == b"status:io:0x02:2:0x0281\ndelay:admin:*:*:0.5\n"
        assert await f.size() == len(listing)
        assert (await c.io(commands.rw(OP_READ, 1, 0, 1), data_in_len=512)).status == 0x281
        await h.write(0, b"clear\n")
        assert await (await f.open(os.O_RDONLY, Ctx(0))).read(0, 4096) == b""
        with pytest.raises(FUSEError) as e:
            await f.open(os.O_WRONLY, Ctx(1000))
        assert e.value.errno == errno.EACCES


async def test_null_mode_completes_io_without_storage_and_admin_as_usual():
    assert parse_uri("sim:null=1").null == 1 and parse_uri("sim").null == 0
    for bad in ("sim:null=2", "sim:null=x", "sim:null=1,path=/tmp"):
        with pytest.raises(ValueError):
            parse_uri(bad)
    async with controller("sim:null=1,size=64M,command_log=8") as c:
        smart = (await c.get_log(2, 512)).data
        assert (await c.io(commands.rw(OP_WRITE, 1, 0, 8), data_out=b"\xab" * 4096)).ok
        read = await c.io(commands.rw(OP_READ, 1, 0, 8), data_in_len=4096)
        assert read.ok and read.data == bytes(4096)     # the write was never kept
        beyond = await c.io(commands.rw(OP_READ, 1, 1 << 40, 8), data_in_len=4096)
        assert beyond.ok and beyond.data == bytes(4096)     # nothing is checked either
        for cmd in (commands.rw(OP_WRITE_ZEROES, 1, 0, 8), Command(0x7F, nsid=1)):
            assert (await c.io(cmd)).ok
        assert c.device.namespaces[1].store.allocated() == 0
        assert [op for q, op in ((q, cmd.opcode) for q, cmd in c.command_log) if q == IO] == \
            [OP_WRITE, OP_READ, OP_READ, OP_WRITE_ZEROES, 0x7F]
        # admin commands as ever: the SMART counters never moved, errors are still errors
        assert (await c.get_log(2, 512)).data == smart
        assert identify.decode_id_ctrl(c.id_ctrl_raw)["mn"].strip() == "nvmefs simulated controller"
        assert (await c.admin(Command(0x7F))).status == S.INVALID_OPCODE


async def test_the_namespace_attribute_changed_notice_reads_the_namespaces_again():
    """A Format sent as a raw command (not through passthru, which refreshes itself):
    the controller's notice alone makes the host read Identify again."""
    async with controller("sim:size=64M") as c:
        generation = c.generation
        assert (await c.admin(Command(0x80, nsid=1, cdw10=1))).ok
        with trio.fail_after(1):
            while c.generation == generation:
                await trio.sleep(0.01)
        ns = identify.decode_id_ns((await c.identify_ns(1)).data)
        assert identify.block_size(ns) == 4096
