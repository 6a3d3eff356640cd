"""One renderer table for every structure: raw bytes -> `.json` and `.txt` views.

A new structure is a decoder plus a row here. `ctx` carries what the bytes
alone do not say: the controller's name (nvme-cli keys some pages by it), the
command set of an effects log, the FID and SEL of a feature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import cdq, discovery, features, identify, iocs, logs, registers, zones
from .fields import Layout, kv_text

FORMATS = ("raw", "json", "txt")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as `a.b.0.c` keys, for the generic text view."""
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return [(prefix, str(value))]
    out: list[tuple[str, str]] = []
    for key, v in items:
        out.extend(flatten(v, f"{prefix}.{key}" if prefix else str(key)))
    return out


def generic_text(decoded: Any) -> str:
    return kv_text(flatten(decoded))


@dataclass(frozen=True)
class Renderer:
    kind: str
    title: str
    size: int                                   # fewest bytes the decoder needs
    decode: Callable[[bytes, Mapping[str, Any]], Any]
    text: Callable[[Any], str] = generic_text


def _layout(kind: str, title: str, layout: Layout) -> Renderer:
    return Renderer(kind, title, layout.size, lambda raw, ctx: layout.decode(raw),
                    lambda d: kv_text(layout.text_lines(d)))


RENDERERS: dict[str, Renderer] = {r.kind: r for r in [
    Renderer("id-ctrl", "Identify Controller", identify.IDENTIFY_SIZE,
             lambda raw, ctx: identify.decode_id_ctrl(raw), identify.text_id_ctrl),
    Renderer("id-ns", "Identify Namespace", identify.IDENTIFY_SIZE,
             lambda raw, ctx: identify.decode_id_ns(raw), identify.text_id_ns),
    Renderer("nvm-id-ns", "NVM Command Set Identify Namespace", identify.IDENTIFY_SIZE,
             iocs.decode_nvm_id_ns, iocs.text_nvm_id_ns),
    _layout("nvm-id-ctrl", "NVM Command Set Identify Controller", iocs.NVM_ID_CTRL),
    Renderer("zns-id-ns", "Zoned Namespace Command Set Identify Namespace",
             identify.IDENTIFY_SIZE, iocs.decode_zns_id_ns, iocs.text_zns_id_ns),
    _layout("zns-id-ctrl", "Zoned Namespace Command Set Identify Controller", iocs.ZNS_ID_CTRL),
    Renderer("zone-report", "Zone Management Receive report", zones.REPORT_HEADER_SIZE,
             zones.decode_report_json),
    Renderer("ns-list", "Active Namespace ID list", 4,
             lambda raw, ctx: {"nsid_list": identify.decode_ns_list(raw)}),
    _layout("smart", "SMART / Health Information log", logs.SMART),
    Renderer("error", "Error Information log", logs.ERROR_ENTRY.size, logs.decode_error),
    Renderer("fw-slot", "Firmware Slot Information log", 64, logs.decode_fw_slot, logs.text_fw_slot),
    Renderer("changed-ns", "Changed Namespace List log", 4, logs.decode_changed_ns),
    Renderer("effects", "Commands Supported and Effects log", 2048, logs.decode_effects),
    Renderer("self-test", "Device Self-test log", logs.SELF_TEST_SIZE, logs.decode_self_test),
    _layout("telemetry", "Telemetry log header", logs.TELEMETRY),
    _layout("endurance", "Endurance Group Information log", logs.ENDURANCE),
    _layout("sanitize", "Sanitize Status log", logs.SANITIZE),
    Renderer("supported-logs", "Supported Log Pages log", 1024, logs.decode_supported_logs),
    Renderer("discovery", "Discovery Log Page", discovery.DISC_HEADER_SIZE,
             lambda raw, ctx: discovery.decode_discovery(raw)),
    Renderer("feature", "Get Features value", 4, features.decode_feature),
    Renderer("regs", "Controller Registers", registers.REGISTERS_SIZE,
             lambda raw, ctx: registers.decode_registers(raw), registers.text_registers),
    Renderer("udmq", "User Data Migration Queue entries", cdq.ENTRY_SIZE,
             lambda raw, ctx: [cdq.decode_entry(e) for e in cdq.EntryStream.whole(raw)]),
]}


def decode(kind: str, raw: bytes, ctx: Mapping[str, Any] | None = None) -> Any:
    r = RENDERERS[kind]
    if len(raw) < r.size:
        raise ValueError(f"{r.title} needs at least {r.size} bytes, got {len(raw)}")
    return r.decode(raw, ctx or {})


def render(kind: str, raw: bytes, fmt: str, ctx: Mapping[str, Any] | None = None) -> bytes:
    """The `fmt` view ("raw", "json" or "txt") of a structure of `kind`."""
    if fmt == "raw":
        return bytes(raw)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return show(kind, decode(kind, raw, ctx), fmt)


def show(kind: str, decoded: Any, fmt: str) -> bytes:
    """The `fmt` view ("json" or "txt") of a decoded structure of `kind`."""
    if fmt == "json":
        return (json.dumps(decoded, indent=2) + "\n").encode()
    if fmt == "txt":
        return RENDERERS[kind].text(decoded).encode()
    raise ValueError(f"unknown format {fmt!r}; expected json or txt")
