"""`metrics` at the mount root (fs.metrics), through Operations: the values, the
once-a-second SMART reads, and controllers that fail or do not answer."""

import os
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from nvmefs.fs import metrics as M
from nvmefs.spec import identify as ID
from nvmefs.spec import logs as L
from nvmefs.spec.commands import LID_SMART, OP_GET_LOG_PAGE, OP_WRITE, rw
from nvmefs.spec.opcodes import ADMIN

from .conftest import Ctx, inode_of, listing, mounted_ops, open_file, read_all, read_fh

URIS = ("sim:size=64M,command_log=10000", "sim:size=64M,namespaces=2,command_log=10000",
        "sim:size=32M,lba=4096,command_log=10000", "vfio:sim:size=16M,command_log=10000")
CONTROLLER_LABELS = ("controller", "serial", "model", "firmware")


class Scrape:
    """A parsed `metrics` snapshot: value(name, controller=..., nsid=...)."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((s.labels, s.value))

    def series(self, name: str, **match) -> list[tuple[dict, float]]:
        return [(lab, v) for lab, v in self.samples.get(name, [])
                if all(lab.get(k) == str(w) for k, w in match.items())]

    def value(self, name: str, **match) -> float:
        (found,) = self.series(name, **match)
        return found[1]


async def scrape(ops) -> Scrape:
    return Scrape((await read_all(ops, "metrics")).decode())


def smart_reads(ctrl) -> int:
    """SMART / Health Get Log Pages that reached the (simulated) controller."""
    sim = getattr(ctrl, "model", None) or ctrl
    return sum(1 for queue, cmd in sim.command_log
               if queue == ADMIN and cmd.opcode == OP_GET_LOG_PAGE and cmd.cdw10 & 0xFF == LID_SMART)


@pytest.fixture
def clock(monkeypatch):
    """The clock metrics ages samples by, standing still until a test moves it: [now]."""
    now = [0.0]
    monkeypatch.setattr(M, "now", lambda: now[0])
    return now


async def wait_for(predicate, limit: float = 5.0) -> None:
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.01)


async def test_metrics_sits_beside_the_controllers():
    async with mounted_ops(*URIS[:2]) as (ops, ctrls):
        assert await listing(ops, "") == ["nvme0", "nvme1", "metrics"]
        attr = await ops.getattr(await inode_of(ops, "metrics"), Ctx())
        assert attr.st_mode == 0o100444 and attr.st_size == 0    # before the first open
        data = await read_all(ops, "metrics")
        assert (await ops.getattr(await inode_of(ops, "metrics"), Ctx())).st_size == len(data)


async def test_the_values_are_the_smart_log_identify_and_statistics(clock):
    async with mounted_ops(*URIS) as (ops, ctrls):
        # traffic to count: writes on nvme0, a passthru batch on nvme2, a hot nvme1
        for lba in range(0, 4096, 8):
            assert (await ctrls[0].io(rw(OP_WRITE, 1, lba, 8), data_out=bytes(4096))).ok
        fh = await open_file(ops, "nvme2/passthru/admin", os.O_RDWR)
        request = b"opcode=0x06 cdw10=1 data_len=4096\n"
        assert await ops.write(fh, 0, request) == len(request)
        assert (await read_fh(ops, fh)).startswith(b"status=0x0000")
        await ops.release(fh)
        ctrls[1].set_temperature(360)           # past the sim's threshold: warning and event
        await wait_for(lambda: ctrls[1].events.count >= 1)

        s = await scrape(ops)
        smart = [L.SMART.decode((await ctrl.get_log(LID_SMART, 512)).data) for ctrl in ctrls]
        for ctrl, page in zip(ctrls, smart):
            idc = ctrl.id_ctrl
            who = {"controller": ctrl.name}
            lab, up = s.series("nvmefs_controller_up", **who)[0]
            assert up == 1
            assert lab == {"controller": ctrl.name, "serial": idc["sn"].strip(),
                           "model": idc["mn"].strip(), "firmware": idc["fr"].strip()}
            assert s.value("nvmefs_smart_temperature_kelvin", **who) == page["temperature"]
            assert s.value("nvmefs_smart_temperature_celsius", **who) == page["temperature"] - 273
            assert s.value("nvmefs_smart_available_spare_ratio", **who) == page["avail_spare"] / 100
            assert s.value("nvmefs_smart_available_spare_threshold_ratio", **who) == \
                page["spare_thresh"] / 100
            assert s.value("nvmefs_smart_endurance_used_ratio", **who) == page["percent_used"] / 100
            for field, name, scale in (
                    ("data_units_read", "data_read_bytes", 512000),
                    ("data_units_written", "data_written_bytes", 512000),
                    ("host_read_commands", "host_read_commands", 1),
                    ("host_write_commands", "host_write_commands", 1),
                    ("controller_busy_time", "controller_busy_seconds", 60),
                    ("power_cycles", "power_cycles", 1),
                    ("power_on_hours", "power_on_seconds", 3600),
                    ("unsafe_shutdowns", "unsafe_shutdowns", 1),
                    ("media_errors", "media_errors", 1),
                    ("num_err_log_entries", "error_log_entries", 1)):
                assert s.value(f"nvmefs_smart_{name}_total", **who) == int(page[field]) * scale
            bits = {lab["bit"]: v for lab, v in s.series("nvmefs_smart_critical_warning", **who)}
            assert bits == {name: page["critical_warning"] >> i & 1
                            for i, name in enumerate(M.WARNING_BITS)}
            for nsid in ctrl.nsids:
                ns = ID.decode_id_ns((await ctrl.identify_ns(nsid)).data)
                block = ID.block_size(ns)
                at = dict(who, nsid=nsid)
                assert s.value("nvmefs_namespace_size_bytes", **at) == ns["nsze"] * block
                assert s.value("nvmefs_namespace_capacity_bytes", **at) == ns["ncap"] * block
                assert s.value("nvmefs_namespace_utilization_bytes", **at) == ns["nuse"] * block
            assert len(s.series("nvmefs_namespace_size_bytes", **who)) == len(ctrl.nsids)
            assert s.value("nvmefs_events_total", **who) == ctrl.events.count

        # what the traffic did
        assert s.value("nvmefs_smart_host_write_commands_total", controller="nvme0") == 512
        assert s.value("nvmefs_smart_data_written_bytes_total", controller="nvme0") == \
            -(-512 * 4096 // 512000) * 512000
        assert s.value("nvmefs_smart_critical_warning", controller="nvme1", bit="temperature") == 1
        assert s.value("nvmefs_smart_critical_warning", controller="nvme0", bit="temperature") == 0
        assert s.value("nvmefs_smart_temperature_celsius", controller="nvme1") == 87
        assert s.value("nvmefs_events_total", controller="nvme1") >= 1
        assert s.value("nvmefs_passthru_batches_total", controller="nvme2") == 1
        assert s.value("nvmefs_passthru_batches_total", controller="nvme0") == 0
        assert s.value("nvmefs_namespace_size_bytes", controller="nvme2", nsid=1) == 32 << 20
        assert len(s.series("nvmefs_namespace_size_bytes", controller="nvme1")) == 2

        # the daemon's counters, as they were at the snapshot (no command since but the
        # SMART reads above, one each)
        for ctrl in ctrls:
            stats, who = ctrl.statistics(), {"controller": ctrl.name}
            assert s.value("nvmefs_commands_submitted_total", **who) == stats.submitted - 1
            assert s.value("nvmefs_commands_completed_total", **who) == stats.completed - 1
            for field, name in (("errors", "command_errors"), ("timeouts", "command_timeouts"),
                                ("resets", "controller_resets"),
                                ("transport_errors", "transport_errors")):
                assert s.value(f"nvmefs_{name}_total", **who) == getattr(stats, field)
            assert s.value("nvmefs_commands_in_flight", **who) == stats.in_flight == 0
        assert s.value("nvmefs_commands_submitted_total", controller="nvme0") >= 512

        waits, memory = ops.tree.waiters.statistics(), ops.tree.memory.statistics()
        assert s.value("nvmefs_blocked_readers") == waits.waiting == 0
        assert s.value("nvmefs_blocked_readers_peak") == waits.most_waiting
        assert s.value("nvmefs_blocked_readers_refused_total") == waits.refused
        assert s.value("nvmefs_blocked_readers_timeouts_total") == waits.timed_out
        assert s.value("nvmefs_answer_buffer_bytes") == memory["used"]
        assert s.value("nvmefs_answer_buffer_peak_bytes") == memory["peak"] > 0
        assert s.value("nvmefs_answer_buffer_limit_bytes") == memory["limit"]
        assert s.value("nvmefs_answer_buffer_refused_total") == memory["refused"]


async def test_the_format_conventions():
    async with mounted_ops(*URIS[:2]) as (ops, ctrls):
        s = await scrape(ops)
        lines = s.text.splitlines()
        assert s.text.endswith("\n") and all(lines)
        helps = [line.split()[2] for line in lines if line.startswith("# HELP ")]
        types = {line.split()[2]: line.split()[3] for line in lines if line.startswith("# TYPE ")}
        assert helps == list(types) == [n for n in M.FAMILIES if n in types]
        assert set(types) == set(M.FAMILIES)        # every family has a sample here
        for name, kind in types.items():
            assert name.startswith("nvmefs_")
            assert (kind == "counter") == name.endswith("_total"), name
            assert kind in ("counter", "gauge")
        # each family's samples together, right after its TYPE line
        current = None
        for line in lines:
            if line.startswith("# TYPE "):
                current = line.split()[2]
            elif not line.startswith("#"):
                assert line.split("{")[0].split(" ")[0] == current
        for family in s.families.values():
            for sample in family.samples:
                if family.name.startswith("nvmefs_smart_") or family.name.startswith(
                        "nvmefs_controller") or family.name.startswith("nvmefs_command"):
                    assert set(CONTROLLER_LABELS) <= set(sample.labels)


async def test_label_values_are_escaped():
    assert M.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    async with mounted_ops(*URIS[:2]) as (ops, ctrls):
        ctrls[0].id_ctrl = dict(ctrls[0].id_ctrl, mn='odd "model"\\ with\nnewline  ',
                                sn="SN\0\0", fr="\u00e91.0 ")
        s = await scrape(ops)
        lab, up = s.series("nvmefs_controller_up", controller="nvme0")[0]
        assert up == 1 and lab["model"] == 'odd "model"\\ with\nnewline'
        assert lab["serial"] == "SN" and lab["firmware"] == "\u00e91.0"
        assert s.value("nvmefs_controller_up", controller="nvme1") == 1


async def test_smart_is_read_at_most_once_a_second(clock):
    async with mounted_ops(*URIS) as (ops, ctrls):
        assert [smart_reads(c) for c in ctrls] == [0] * 4
        first = await scrape(ops)
        await scrape(ops)
        assert [smart_reads(c) for c in ctrls] == [1] * 4

        async with trio.open_nursery() as nursery:      # opens at once share the reads
            for _ in range(8):
                nursery.start_soon(scrape, ops)
        clock[0] += 0.99
        again = await scrape(ops)
        assert [smart_reads(c) for c in ctrls] == [1] * 4
        # the same SMART values, newer daemon counters
        assert again.value("nvmefs_smart_host_read_commands_total", controller="nvme0") == \
            first.value("nvmefs_smart_host_read_commands_total", controller="nvme0")

        clock[0] += 0.02                                # 1.01 s after the first read
        await scrape(ops)
        await scrape(ops)
        assert [smart_reads(c) for c in ctrls] == [2] * 4
        clock[0] += 1.5
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(scrape, ops)
        assert [smart_reads(c) for c in ctrls] == [3] * 4
        # the only commands the scrapes sent: those SMART reads, and Identify
        # Namespace once (the controller caches it)
        for ctrl in ctrls:
            assert ctrl.statistics().submitted == \
                first.value("nvmefs_commands_submitted_total", controller=ctrl.name) + 2


async def test_a_failing_smart_read_leaves_the_controller_down(clock):
    async with mounted_ops(*URIS) as (ops, ctrls):
        for ctrl in (ctrls[1], ctrls[3]):
            ctrl.faults.apply("status:admin:0x02:*:INTERNAL")
        s = await scrape(ops)
        for ctrl in ctrls:
            who = {"controller": ctrl.name}
            down = ctrl in (ctrls[1], ctrls[3])
            assert s.value("nvmefs_controller_up", **who) == (0 if down else 1)
            smart_series = [n for n in s.samples if n.startswith("nvmefs_smart_")
                            and s.series(n, **who)]
            assert (smart_series == []) == down
            # the rest of the controller is there all the same
            assert s.value("nvmefs_namespace_size_bytes", nsid=1, **who) > 0
            assert s.value("nvmefs_command_errors_total", **who) == (1 if down else 0)
        assert s.value("nvmefs_answer_buffer_bytes") == 0
        assert [smart_reads(c) for c in ctrls] == [1] * 4     # one each, two of them failed

        await scrape(ops)                       # within the second: no second try
        assert ctrls[1].statistics().errors == 1
        for ctrl in (ctrls[1], ctrls[3]):
            ctrl.faults.apply("clear")
        clock[0] += 1.01
        s = await scrape(ops)
        assert [s.value("nvmefs_controller_up", controller=c.name) for c in ctrls] == [1] * 4


async def test_a_controller_that_does_not_answer_does_not_hold_the_file(clock, monkeypatch):
    monkeypatch.setattr(M, "SAMPLE_WAIT", 0.1)
    async with mounted_ops(*URIS[:3]) as (ops, ctrls):
        samplers = ops.tree.get(await inode_of(ops, "metrics")).samplers
        ctrls[0].faults.apply("delay:admin:0x02:1:900ms")
        start = trio.current_time()
        s = await scrape(ops)
        assert trio.current_time() - start < 0.5
        assert [s.value("nvmefs_controller_up", controller=c.name) for c in ctrls] == [0, 1, 1]
        assert s.value("nvmefs_commands_in_flight", controller="nvme0") == 1
        clock[0] += 1.5             # past MAX_AGE, with its read outstanding: no second one
        s = await scrape(ops)
        assert [s.value("nvmefs_controller_up", controller=c.name) for c in ctrls] == [0, 1, 1]
        assert [sampler.smart_reads for sampler in samplers] == [1, 2, 2]
        await wait_for(lambda: samplers[0].pending is None)     # the delay ends
        s = await scrape(ops)       # its sample is 1.5 s old: read again (the fault is spent)
        assert [s.value("nvmefs_controller_up", controller=c.name) for c in ctrls] == [1, 1, 1]
        assert [sampler.smart_reads for sampler in samplers] == [2, 2, 2]
        assert smart_reads(ctrls[0]) == 2


def test_every_series_is_documented():
    man = (Path(__file__).parents[2] / "man" / "nvmefs.5").read_text()
    text = man.replace("\\%", "").replace("\\-", "-")
    section = text[text.index(".SH METRICS"):text.index(".SH WRITABLE FILES")]
    for name in M.FAMILIES:
        assert f".B {name}\n" in section, name
    for bit in M.WARNING_BITS:
        assert bit in section
