"""Log pages (NVMe Base 2.0 §5.16.1): layouts, decoders and the LID table.

JSON follows nvme-cli 2.3 (`error-log`, `smart-log`, `fw-log`, `effects-log`,
`self-test-log`, `changed-ns-list-log`, `endurance-log`, `sanitize-log`
with `-o json`); pages nvme-cli has no JSON for use the spec's mnemonics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .discovery import DISC_HEADER_SIZE, discovery_log_len, record_count
from .fields import HEX, IEEE, U128, Field, Layout, kv_text, u, x
from .opcodes import ADMIN, IO, name_of


# --- SMART / Health (02h, Figure 207)


def _kelvin(k: int) -> str:
    return f"{k - 273}°C ({k} Kelvin)"


def _percent(v: int) -> str:
    return f"{v}%"


def _data_units(v: str) -> str:
    # one data unit is 1000 512-byte units (§5.16.1.3)
    n = int(v) * 512_000
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            break
        n /= 1000
    return f"{v} ({n:.2f} {unit})"


def _sensor(i: int) -> Field:
    name = f"temperature_sensor_{i + 1}"
    return u(name, 200 + 2 * i, 2, _kelvin, when=lambda v, n=name: v[n] != 0)


SMART = Layout("smart", 512, [
    x("critical_warning", 0, 1), u("temperature", 1, 2, _kelvin), u("avail_spare", 3, 1, _percent),
    u("spare_thresh", 4, 1, _percent), u("percent_used", 5, 1, _percent),
    x("endurance_grp_critical_warning_summary", 6, 1),
    Field("data_units_read", 32, 16, U128, _data_units),
    Field("data_units_written", 48, 16, U128, _data_units),
    Field("host_read_commands", 64, 16, U128), Field("host_write_commands", 80, 16, U128),
    Field("controller_busy_time", 96, 16, U128), Field("power_cycles", 112, 16, U128),
    Field("power_on_hours", 128, 16, U128), Field("unsafe_shutdowns", 144, 16, U128),
    Field("media_errors", 160, 16, U128), Field("num_err_log_entries", 176, 16, U128),
    u("warning_temp_time", 192, 4), u("critical_comp_time", 196, 4),
    *[_sensor(i) for i in range(8)],
    u("thm_temp1_trans_count", 216, 4), u("thm_temp2_trans_count", 220, 4),
    u("thm_temp1_total_time", 224, 4), u("thm_temp2_total_time", 228, 4),
    u("op_lifetime_energy_consumed", 232, 8), u("interval_power_measurement", 240, 4),
])

# Critical Warning bits (Figure 207, byte 0)
CW_SPARE, CW_TEMPERATURE, CW_RELIABILITY, CW_READ_ONLY, CW_VOLATILE_BACKUP = 1, 2, 4, 8, 16

# --- Error Information (01h, Figure 205)

ERROR_ENTRY = Layout("error-entry", 64, [
    u("error_count", 0, 8), u("sqid", 8, 2), u("cmdid", 10, 2), x("status_field", 12, 2),
    x("parm_error_location", 14, 2), u("lba", 16, 8), u("nsid", 24, 4), u("vs", 28, 1),
    u("trtype", 29, 1), u("csi", 30, 1), x("opcode", 31, 1), u("cs", 32, 8),
    u("trtype_spec_info", 40, 2), u("log_page_version", 63, 1),
])


def decode_error(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    errors = []
    for off in range(0, len(buf) - len(buf) % 64, 64):
        e = ERROR_ENTRY.decode(buf[off:off + 64])
        raw = e.pop("status_field")
        entry = {k: e[k] for k in ("error_count", "sqid", "cmdid")}
        entry.update(status_field=raw >> 1, phase_tag=raw & 1)   # nvme-cli splits the phase off
        entry.update((k, e[k]) for k in ERROR_ENTRY.by_name if k in e and k not in entry)
        errors.append(entry)
    return {"errors": errors}


def encode_error_entry(error_count: int, sqid: int, cmdid: int, status: int, nsid: int,
                       opcode: int, lba: int = 0, parm_error_location: int = 0xFFFF) -> bytes:
    """One entry; `status` is the 15-bit status, stored with phase tag 0."""
    return bytes(ERROR_ENTRY.encode(dict(
        error_count=error_count, sqid=sqid, cmdid=cmdid, status_field=status << 1, nsid=nsid,
        opcode=opcode, lba=lba, parm_error_location=parm_error_location)))

# --- Firmware Slot Information (03h, Figure 208)


def _fw_string(raw: bytes) -> str:
    return "".join(chr(b) if 0x21 <= b <= 0x7E else "." for b in raw)


def decode_fw_slot(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    slots: dict[str, Any] = {"Active Firmware Slot (afi)": buf[0]}
    for i in range(7):
        raw = bytes(buf[8 + 8 * i: 16 + 8 * i])
        if raw[0]:
            slots[f"Firmware Rev Slot {i + 1}"] = f"{int.from_bytes(raw, 'little')} ({_fw_string(raw)})"
    return {ctx.get("name", "nvme0"): slots}


def text_fw_slot(d: Mapping[str, Any]) -> str:
    (slots,) = d.values()
    pairs = [("afi", hex(slots["Active Firmware Slot (afi)"]))]
    for key, value in slots.items():
        if key.startswith("Firmware Rev Slot"):
            number, shown = value.split(" ", 1)
            pairs.append((f"frs{key.rsplit(' ', 1)[1]}", f"{int(number):#018x} {shown}"))
    return kv_text(pairs)


def encode_fw_slot(afi: int, revisions: Mapping[int, str]) -> bytes:
    buf = bytearray(512)
    buf[0] = afi
    for slot, rev in revisions.items():
        buf[8 * slot: 8 * slot + 8] = rev.encode("ascii")[:8].ljust(8, b" ")
    return bytes(buf)

# --- Commands Supported and Effects (05h, Figure 210)


EFFECTS_SIZE = 4096
CSUPP, LBCC, NCC, NIC, CCC = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4
CSER_MASK, CSE_MASK, UUID_SEL = 0x3 << 14, 0x7 << 16, 1 << 19


def effects_tables(buf: bytes) -> tuple[list[int], list[int]]:
    words = [int.from_bytes(buf[i:i + 4], "little") for i in range(0, 2048, 4)]
    return words[:256], words[256:]


def decode_effects(buf: bytes, ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The page of command set ctx["csi"] (default 0), as `nvme effects-log --csi=N`:
    a list of one object. I/O opcodes are named as that command set names them."""
    csi = ctx.get("csi", 0)
    acs, iocs = effects_tables(buf)
    return [{
        "command_set_identifier": csi,
        "admin_cmd_set": {f"ACS_{op} ({name_of(ADMIN, op)})": e for op, e in enumerate(acs) if e & CSUPP},
        "io_cmd_set": {f"IOCS_{op} ({name_of(IO, op, csi)})": e for op, e in enumerate(iocs) if e & CSUPP},
    }]


def encode_effects(acs: Mapping[int, int], iocs: Mapping[int, int]) -> bytes:
    buf = bytearray(EFFECTS_SIZE)
    for base, table in ((0, acs), (1024, iocs)):
        for op, effect in table.items():
            buf[base + 4 * op: base + 4 * op + 4] = effect.to_bytes(4, "little")
    return bytes(buf)

# --- Device Self-test (06h, Figures 211-212)


SELF_TEST_SIZE = 564
SELF_TEST_RESULT = Layout("self-test-result", 28, [
    x("dsts", 0, 1), u("seg", 1, 1), x("vdi", 2, 1), u("poh", 4, 8), u("nsid", 12, 4),
    u("flba", 16, 8), u("sct", 24, 1), u("sc", 25, 1), u("vs", 26, 2),
])
# Valid Diagnostic Information bits
VDI_NSID, VDI_FLBA, VDI_SCT, VDI_SC = 1, 2, 4, 8


def decode_self_test(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    reports = []
    for i in range(20):
        r = SELF_TEST_RESULT.decode(buf[4 + 28 * i: 32 + 28 * i])
        entry: dict[str, Any] = {"Self test result": r["dsts"] & 0xF}
        if r["dsts"] & 0xF != 0xF:    # 0xF: entry not used
            entry.update({"Self test code": r["dsts"] >> 4, "Segment number": r["seg"],
                          "Valid Diagnostic Information": r["vdi"], "Power on hours": r["poh"]})
            for bit, key, field in ((VDI_NSID, "Namespace Identifier", "nsid"),
                                    (VDI_FLBA, "Failing LBA", "flba"),
                                    (VDI_SCT, "Status Code Type", "sct"), (VDI_SC, "Status Code", "sc")):
                if r["vdi"] & bit:
                    entry[key] = r[field]
            entry["Vendor Specific"] = r["vs"]
        reports.append(entry)
    return {"Current Device Self-Test Operation": buf[0],
            "Current Device Self-Test Completion": buf[1],
            "List of Valid Reports": reports}


def encode_self_test(current: int, completion: int, results: list[Mapping[str, int]]) -> bytes:
    buf = bytearray(SELF_TEST_SIZE)
    buf[0], buf[1] = current, completion
    for i in range(20):
        r = results[i] if i < len(results) else {"dsts": 0xF}
        buf[4 + 28 * i: 32 + 28 * i] = SELF_TEST_RESULT.encode(r)
    return bytes(buf)

# --- Telemetry (07h/08h, Figures 213-214)


TELEMETRY_BLOCK = 512
TELEMETRY = Layout("telemetry", TELEMETRY_BLOCK, [
    u("lpi", 0, 1), Field("ieee", 5, 3, IEEE), u("dalb1", 8, 2), u("dalb2", 10, 2),
    u("dalb3", 12, 2), u("dalb4", 16, 4), u("hostdgn", 381, 1), u("ctrlavail", 382, 1),
    u("ctrldgn", 383, 1), Field("rsnident", 384, 128, HEX),
])
LSP_TELEMETRY_CREATE = 1
LSP_PEL_ESTABLISH = 1


def telemetry_size(header: bytes, idc: Mapping[str, Any]) -> int:
    """Bytes from the header through the last block of the last data area
    (data area 4 only where LPA bit 6 says the controller has it)."""
    h = TELEMETRY.decode(header)
    last = max(h["dalb1"], h["dalb2"], h["dalb3"])
    if idc["lpa"] >> 6 & 1:
        last = max(last, h["dalb4"])
    return (last + 1) * TELEMETRY_BLOCK


def persistent_event_size(header: bytes, idc: Mapping[str, Any]) -> int:
    """Total Log Length, bytes 8..15 of the Persistent Event Log header (Figure 216)."""
    return int.from_bytes(header[8:16], "little")

# --- Changed Namespace List (04h), Supported Log Pages (00h)


def _u32s(buf: bytes) -> list[int]:
    return [int.from_bytes(buf[i:i + 4], "little") for i in range(0, len(buf) - len(buf) % 4, 4)]


def decode_changed_ns(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    name = ctx.get("name", "nvme0")
    nsids = {}
    for i, nsid in enumerate(_u32s(buf)):
        if nsid == 0:
            break
        nsids[f"[{i + 1:4d}]"] = hex(nsid)
    return {"Changed Namespace List Log": name, name: nsids}


def decode_supported_logs(buf: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    return {"supported_logs": [
        {"lid": lid, "name": LOG_PAGES[lid].name if lid in LOG_PAGES else None, "lidsp": word}
        for lid, word in enumerate(_u32s(buf)) if word & 1]}


def encode_supported_logs(lids: list[int]) -> bytes:
    buf = bytearray(1024)
    for lid in lids:
        buf[4 * lid] |= 1
    return bytes(buf)

# --- Endurance Group (09h), Sanitize Status (81h)


ENDURANCE = Layout("endurance", 512, [
    x("critical_warning", 0, 1), u("avl_spare", 3, 1), u("avl_spare_threshold", 4, 1),
    u("percent_used", 5, 1), Field("endurance_estimate", 32, 16, U128),
    Field("data_units_read", 48, 16, U128), Field("data_units_written", 64, 16, U128),
    Field("media_units_written", 80, 16, U128), Field("host_read_cmds", 96, 16, U128),
    Field("host_write_cmds", 112, 16, U128), Field("media_data_integrity_err", 128, 16, U128),
    Field("num_err_info_log_entries", 144, 16, U128),
])

SANITIZE = Layout("sanitize", 512, [
    u("sprog", 0, 2), x("sstat", 2, 2), x("cdw10_info", 4, 4), u("time_over_write", 8, 4),
    u("time_block_erase", 12, 4), u("time_crypto_erase", 16, 4),
])

# --- the LID table


@dataclass(frozen=True)
class LogPage:
    lid: int
    name: str                                   # file name under log/
    kind: str | None                            # renderer kind (spec.render), None: raw only
    size: Callable[[Mapping[str, Any]], int]    # bytes, from Identify Controller
    supported: Callable[[Mapping[str, Any]], bool]
    # Large logs: opened by reading the 512-byte header with `open_lsp` (telemetry
    # "create", persistent event "establish context"), sized from it, then read
    # at each requested offset (LPO) with LSP 0.
    size_from_header: Callable[[bytes, Mapping[str, Any]], int] | None = None
    open_lsp: int = 0
    # Pages read whole whose length their first `size` bytes give (discovery: NUMREC)
    length_from: Callable[[bytes], int] | None = None
    # I/O Command Set specific (CSI in CDW14): the raw view is CSI 0's page, the JSON
    # a list of the decoded pages of every command set in use, in CSI order (the
    # decoder gives a list for ctx "csi")
    per_csi: bool = False


CNTRLTYPE_DISCOVERY = 2         # Identify Controller CNTRLTYPE (Figure 275)


def _fixed(n: int) -> Callable[[Mapping[str, Any]], int]:
    return lambda idc: n


def _bit(field: str, bit: int) -> Callable[[Mapping[str, Any]], bool]:
    return lambda idc: bool(idc[field] >> bit & 1)


LOG_PAGES: dict[int, LogPage] = {p.lid: p for p in [
    LogPage(0x00, "supported-logs", "supported-logs", _fixed(1024), _bit("lpa", 5)),
    LogPage(0x01, "error", "error", lambda idc: (idc["elpe"] + 1) * 64, lambda idc: True),
    LogPage(0x02, "smart", "smart", _fixed(512), lambda idc: True),
    LogPage(0x03, "fw-slot", "fw-slot", _fixed(512), lambda idc: True),
    LogPage(0x04, "changed-ns", "changed-ns", _fixed(4096), _bit("oaes", 8)),
    LogPage(0x05, "effects", "effects", _fixed(EFFECTS_SIZE), _bit("lpa", 1), per_csi=True),
    LogPage(0x06, "self-test", "self-test", _fixed(SELF_TEST_SIZE), _bit("oacs", 4)),
    LogPage(0x07, "telemetry-host", "telemetry", _fixed(TELEMETRY_BLOCK), _bit("lpa", 3),
            telemetry_size, LSP_TELEMETRY_CREATE),
    LogPage(0x08, "telemetry-ctrl", "telemetry", _fixed(TELEMETRY_BLOCK), _bit("lpa", 3),
            telemetry_size),
    LogPage(0x09, "endurance", "endurance", _fixed(512), _bit("ctratt", 4)),
    LogPage(0x0C, "ana", None, _fixed(4096), _bit("cmic", 3)),
    LogPage(0x0D, "persistent-event", None, _fixed(512), _bit("lpa", 4),
            persistent_event_size, LSP_PEL_ESTABLISH),
    LogPage(0x70, "discovery", "discovery", _fixed(DISC_HEADER_SIZE),
            lambda idc: idc["cntrltype"] == CNTRLTYPE_DISCOVERY,
            length_from=lambda raw: discovery_log_len(record_count(raw))),
    LogPage(0x81, "sanitize", "sanitize", _fixed(512), lambda idc: idc["sanicap"] != 0),
]}
LOG_BY_NAME = {p.name: p for p in LOG_PAGES.values()}
