"""`metrics` at the mount root: every controller's health and the daemon's own
counters in the Prometheus text exposition format 0.0.4 (which OpenMetrics
parsers read too), for a node_exporter textfile collector or `nvmefs
serve-metrics`.

The file is a snapshot taken at open, as every file of the tree. What it costs
the controllers is bounded however often it is read: each controller's SMART /
Health page (and its Identify Namespace data, which the controller object
caches) is sampled by one task of the mount's, at most once per MAX_AGE
seconds; an open reuses a younger sample. A sample still being read after
SAMPLE_WAIT seconds (a controller that does not answer) is not waited for:
that controller reads `nvmefs_controller_up 0` in this snapshot, as one whose
SMART read failed, and its read goes on for the next one. Nothing a controller
does makes the whole file fail.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import trio

from ..backends.base import Controller
from ..backends.errors import TransportError
from ..spec import identify as ID
from ..spec import logs as L
from ..spec import status as S
from ..spec.commands import LID_SMART
from .nodes import SnapshotFile

log = logging.getLogger(__name__)

MAX_AGE = 1.0           # seconds a controller's SMART page is reused (one Get Log Page at most)
SAMPLE_WAIT = 5.0       # seconds an open waits for the controllers' samples being read
DATA_UNIT = 512_000     # bytes per SMART data unit (1000 units of 512 bytes, §5.16.1.3)
KELVIN_OFFSET = 273     # the NVMe specification's kelvin to Celsius conversion (as nvme-cli)

# Critical Warning (SMART byte 0): bit -> the `bit` label
WARNING_BITS = ("spare", "temperature", "reliability", "read_only", "volatile_backup", "pmr")

GAUGE, COUNTER = "gauge", "counter"

# name -> (type, help), in the order the file lists them
FAMILIES: dict[str, tuple[str, str]] = {
    "nvmefs_controller_up": (
        GAUGE, "1 if the controller's SMART / Health log was read for this snapshot, "
               "0 if the read failed or is still outstanding (its SMART series are left out)"),
    "nvmefs_smart_temperature_kelvin": (GAUGE, "Composite Temperature in kelvin"),
    "nvmefs_smart_temperature_celsius": (
        GAUGE, "Composite Temperature in degrees Celsius (kelvin - 273, the NVMe conversion)"),
    "nvmefs_smart_available_spare_ratio": (
        GAUGE, "Available Spare as a ratio 0..1 (the log's percent / 100)"),
    "nvmefs_smart_available_spare_threshold_ratio": (
        GAUGE, "Available Spare Threshold as a ratio 0..1 (the log's percent / 100)"),
    "nvmefs_smart_endurance_used_ratio": (
        GAUGE, "Percentage Used, the estimate of endurance used, as a ratio (the log's "
               "percent / 100; may exceed 1)"),
    "nvmefs_smart_data_read_bytes_total": (
        COUNTER, "Data Units Read x 512000 bytes (rounded up to whole data units)"),
    "nvmefs_smart_data_written_bytes_total": (
        COUNTER, "Data Units Written x 512000 bytes (rounded up to whole data units)"),
    "nvmefs_smart_host_read_commands_total": (COUNTER, "Host Read Commands completed"),
    "nvmefs_smart_host_write_commands_total": (COUNTER, "Host Write Commands completed"),
    "nvmefs_smart_controller_busy_seconds_total": (
        COUNTER, "Controller Busy Time (whole minutes) x 60 seconds"),
    "nvmefs_smart_power_cycles_total": (COUNTER, "Power Cycles"),
    "nvmefs_smart_power_on_seconds_total": (
        COUNTER, "Power On Hours (whole hours) x 3600 seconds"),
    "nvmefs_smart_unsafe_shutdowns_total": (COUNTER, "Unsafe Shutdowns"),
    "nvmefs_smart_media_errors_total": (
        COUNTER, "Media and Data Integrity Errors (unrecovered data integrity errors)"),
    "nvmefs_smart_error_log_entries_total": (
        COUNTER, "Number of Error Information Log Entries over the controller's life"),
    "nvmefs_smart_critical_warning": (
        GAUGE, "Critical Warning, one series per bit: spare (below threshold), temperature, "
               "reliability (degraded), read_only, volatile_backup (failed), pmr (read-only "
               "or unreliable); 1 when set"),
    "nvmefs_namespace_size_bytes": (GAUGE, "Namespace Size (NSZE) x logical block size"),
    "nvmefs_namespace_capacity_bytes": (GAUGE, "Namespace Capacity (NCAP) x logical block size"),
    "nvmefs_namespace_utilization_bytes": (
        GAUGE, "Namespace Utilization (NUSE) x logical block size, as of the controller's "
               "last Identify Namespace (cached until a reset or namespace change)"),
    "nvmefs_commands_submitted_total": (
        COUNTER, "Commands the daemon sent to the controller (its own and passthru)"),
    "nvmefs_commands_completed_total": (COUNTER, "Commands completed (any status)"),
    "nvmefs_command_errors_total": (COUNTER, "Completions with a non-zero NVMe status"),
    "nvmefs_command_timeouts_total": (
        COUNTER, "Commands past their timeout (aborted, or the controller reset)"),
    "nvmefs_controller_resets_total": (COUNTER, "Controller resets the daemon carried out"),
    "nvmefs_transport_errors_total": (
        COUNTER, "Batches failed by the transport (controller gone, fatal status, ...)"),
    "nvmefs_commands_in_flight": (GAUGE, "Commands sent and not yet completed"),
    "nvmefs_events_total": (
        COUNTER, "Asynchronous events published in the controller's events file"),
    "nvmefs_passthru_batches_total": (
        COUNTER, "Batches of passthru requests submitted through passthru/"),
    "nvmefs_blocked_readers": (
        GAUGE, "Requests waiting in the daemon now (mailbox answers, streams)"),
    "nvmefs_blocked_readers_peak": (GAUGE, "The most requests that ever waited at once"),
    "nvmefs_blocked_readers_refused_total": (
        COUNTER, "Waits refused with EAGAIN (the most that may wait already did)"),
    "nvmefs_blocked_readers_timeouts_total": (COUNTER, "Waits that ended with ETIMEDOUT"),
    "nvmefs_answer_buffer_bytes": (GAUGE, "Bytes of passthru answers held now"),
    "nvmefs_answer_buffer_peak_bytes": (GAUGE, "The most bytes of passthru answers ever held"),
    "nvmefs_answer_buffer_limit_bytes": (
        GAUGE, "The most bytes of passthru answers the mount may hold (--max-buffer)"),
    "nvmefs_answer_buffer_refused_total": (
        COUNTER, "Requests refused with ENOBUFS (their answers would not fit)"),
}

# SMART field -> (family, scale) of the plain values
SMART_VALUES = (
    ("temperature", "nvmefs_smart_temperature_kelvin", 1),
    ("data_units_read", "nvmefs_smart_data_read_bytes_total", DATA_UNIT),
    ("data_units_written", "nvmefs_smart_data_written_bytes_total", DATA_UNIT),
    ("host_read_commands", "nvmefs_smart_host_read_commands_total", 1),
    ("host_write_commands", "nvmefs_smart_host_write_commands_total", 1),
    ("controller_busy_time", "nvmefs_smart_controller_busy_seconds_total", 60),
    ("power_cycles", "nvmefs_smart_power_cycles_total", 1),
    ("power_on_hours", "nvmefs_smart_power_on_seconds_total", 3600),
    ("unsafe_shutdowns", "nvmefs_smart_unsafe_shutdowns_total", 1),
    ("media_errors", "nvmefs_smart_media_errors_total", 1),
    ("num_err_log_entries", "nvmefs_smart_error_log_entries_total", 1),
)
SMART_RATIOS = (
    ("avail_spare", "nvmefs_smart_available_spare_ratio"),
    ("spare_thresh", "nvmefs_smart_available_spare_threshold_ratio"),
    ("percent_used", "nvmefs_smart_endurance_used_ratio"),
)
SMART_FIELDS = {name for name, _, _ in SMART_VALUES} | {name for name, _ in SMART_RATIOS} \
    | {"critical_warning"}

STATISTICS = (
    ("submitted", "nvmefs_commands_submitted_total"),
    ("completed", "nvmefs_commands_completed_total"),
    ("errors", "nvmefs_command_errors_total"),
    ("timeouts", "nvmefs_command_timeouts_total"),
    ("resets", "nvmefs_controller_resets_total"),
    ("transport_errors", "nvmefs_transport_errors_total"),
    ("in_flight", "nvmefs_commands_in_flight"),
)


def now() -> float:
    """The clock samples are aged by (trio's: tests move it)."""
    return trio.current_time()


def escape_label(value: str) -> str:
    """A label value as the exposition format quotes it: backslash, double quote and
    line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs)


def _text(value: Any) -> str:
    """An Identify text field for a label: without padding or NULs."""
    return str(value or "").replace("\0", "").strip()


def controller_labels(ctrl: Controller) -> list[tuple[str, str]]:
    idc = ctrl.id_ctrl
    return [("controller", ctrl.name), ("serial", _text(idc.get("sn"))),
            ("model", _text(idc.get("mn"))), ("firmware", _text(idc.get("fr")))]


@dataclass(frozen=True)
class Namespace:
    nsid: int
    size: int           # bytes: NSZE x block size
    capacity: int       # NCAP x block size
    utilization: int    # NUSE x block size


@dataclass(frozen=True)
class Sample:
    """What one read of a controller gave."""
    taken: float                        # when the read began (now())
    smart: dict[str, int] | None        # the SMART fields used here; None: the read failed
    namespaces: tuple[Namespace, ...]


def smart_values(page: bytes) -> dict[str, int]:
    """The SMART / Health fields the file shows, as integers."""
    d = L.SMART.decode(page)
    return {k: int(v) for k, v in d.items() if k in SMART_FIELDS}


class Sampler:
    """One controller's SMART page and namespace sizes, read by a task of the mount at
    most once per MAX_AGE seconds; one read at a time."""

    def __init__(self, ctrl: Controller):
        self.ctrl = ctrl
        self.sample: Sample | None = None
        self.started = -math.inf            # when the last read began
        self.pending: trio.Event | None = None   # set when the read under way ends
        self.smart_reads = 0                # SMART Get Log Pages sent
        self._id_ns: dict[int, tuple[bytes, Namespace]] = {}

    def refresh(self, nursery: trio.Nursery) -> trio.Event | None:
        """Start a read if the last one is MAX_AGE old and none is under way; the
        event of the read under way, if any."""
        if self.pending is None and now() - self.started >= MAX_AGE:
            self.started = now()
            self.pending = trio.Event()
            nursery.start_soon(self._read, self.pending)
        return self.pending

    async def _read(self, done: trio.Event) -> None:
        ctrl, taken = self.ctrl, self.started
        smart = None
        namespaces: list[Namespace] = []
        try:
            self.smart_reads += 1
            try:
                cpl = await ctrl.get_log(LID_SMART, L.SMART.size)
            except TransportError as e:
                log.info("%s: metrics: SMART / Health log: %s", ctrl.name, e)
            else:
                if cpl.ok:
                    smart = smart_values(cpl.data)
                else:
                    log.info("%s: metrics: SMART / Health log: %s", ctrl.name,
                             S.describe(cpl.status).name)
            for nsid in list(ctrl.nsids):
                try:
                    ns = await self._namespace(nsid)
                except TransportError:
                    break
                if ns is not None:
                    namespaces.append(ns)
        except Exception:       # noqa: BLE001: a controller's data never ends the mount
            log.exception("%s: metrics: sampling failed", ctrl.name)
            smart = None
        finally:
            self.sample = Sample(taken, smart, tuple(namespaces))
            if self.pending is done:
                self.pending = None
            done.set()

    async def _namespace(self, nsid: int) -> Namespace | None:
        """Sizes from Identify Namespace as the controller caches it (decoded again only
        when its bytes changed)."""
        cpl = await self.ctrl.identify_ns(nsid)
        if not cpl.ok:
            return None
        known = self._id_ns.get(nsid)
        if known is not None and known[0] == cpl.data:
            return known[1]
        d = ID.decode_id_ns(cpl.data)
        block = ID.block_size(d)
        ns = Namespace(nsid, d["nsze"] * block, d["ncap"] * block, d["nuse"] * block)
        self._id_ns[nsid] = (cpl.data, ns)
        return ns


class Exposition:
    """Samples gathered by family, written family by family."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {name: [] for name in FAMILIES}

    def add(self, name: str, label_text: str, value: int | float) -> None:
        where = f"{{{label_text}}}" if label_text else ""
        self.lines[name].append(f"{name}{where} {value}\n")

    def render(self) -> bytes:
        out: list[str] = []
        for name, samples in self.lines.items():
            if samples:
                kind, text = FAMILIES[name]
                out += [f"# HELP {name} {text}\n", f"# TYPE {name} {kind}\n", *samples]
        return "".join(out).encode()


def _ratio(percent: int) -> float:
    return percent / 100


class MetricsFile(SnapshotFile):
    """`metrics`: the snapshot of every controller's series and the mount's."""

    def __init__(self, controllers: Sequence[Controller]):
        super().__init__("metrics", self.snapshot)
        self.samplers = [Sampler(c) for c in controllers]

    async def samples(self) -> list[Sample | None]:
        """Each controller's sample no older than MAX_AGE; None for one still being read
        SAMPLE_WAIT seconds after this call."""
        nursery = self.tree.nursery
        pending = [s.refresh(nursery) for s in self.samplers]
        with trio.move_on_after(SAMPLE_WAIT):
            for event in pending:
                if event is not None:
                    await event.wait()
        return [None if event is not None and not event.is_set() else s.sample
                for s, event in zip(self.samplers, pending)]

    async def snapshot(self) -> bytes:
        samples = await self.samples()
        out = Exposition()
        tree = self.tree
        for sampler, sample in zip(self.samplers, samples):
            ctrl = sampler.ctrl
            base = controller_labels(ctrl)
            lab = labels(base)
            smart = sample.smart if sample is not None else None
            out.add("nvmefs_controller_up", lab, 0 if smart is None else 1)
            if smart is not None:
                for field, family, scale in SMART_VALUES:
                    out.add(family, lab, smart[field] * scale)
                out.add("nvmefs_smart_temperature_celsius", lab,
                        smart["temperature"] - KELVIN_OFFSET)
                for field, family in SMART_RATIOS:
                    out.add(family, lab, _ratio(smart[field]))
                warning = smart["critical_warning"]
                for bit, name in enumerate(WARNING_BITS):
                    out.add("nvmefs_smart_critical_warning", labels([*base, ("bit", name)]),
                            warning >> bit & 1)
            for ns in sample.namespaces if sample is not None else ():
                ns_lab = labels([*base, ("nsid", str(ns.nsid))])
                out.add("nvmefs_namespace_size_bytes", ns_lab, ns.size)
                out.add("nvmefs_namespace_capacity_bytes", ns_lab, ns.capacity)
                out.add("nvmefs_namespace_utilization_bytes", ns_lab, ns.utilization)
            stats = ctrl.statistics()
            for field, family in STATISTICS:
                out.add(family, lab, getattr(stats, field))
            out.add("nvmefs_events_total", lab, ctrl.events.count)
            out.add("nvmefs_passthru_batches_total", lab, tree.passthru_batches[ctrl.name])
        waits = tree.waiters.statistics()
        out.add("nvmefs_blocked_readers", "", waits.waiting)
        out.add("nvmefs_blocked_readers_peak", "", waits.most_waiting)
        out.add("nvmefs_blocked_readers_refused_total", "", waits.refused)
        out.add("nvmefs_blocked_readers_timeouts_total", "", waits.timed_out)
        memory = tree.memory.statistics()
        out.add("nvmefs_answer_buffer_bytes", "", memory["used"])
        out.add("nvmefs_answer_buffer_peak_bytes", "", memory["peak"])
        out.add("nvmefs_answer_buffer_limit_bytes", "", memory["limit"])
        out.add("nvmefs_answer_buffer_refused_total", "", memory["refused"])
        return out.render()
