"""Asynchronous events (Base 2.0 §5.2, Figures 146-151; TP4159 for the one-shot
CDQ events): the completion of an Asynchronous Event Request decoded and named,
and the log page that explains each event.

DW0: Asynchronous Event Type 2:0, Asynchronous Event Information 15:8, Log Page
Identifier 23:16. A one-shot CDQ event (type 4) names no log page: its DW1 holds
the CDQID (as QEMU's TP4159 controller posts it).
"""

from __future__ import annotations

from typing import Any

from .commands import LID_CHANGED_NS, LID_ERROR, LID_FW_SLOT, LID_SMART

TYPE_ERROR, TYPE_SMART, TYPE_NOTICE, TYPE_IMMEDIATE, TYPE_ONE_SHOT = 0, 1, 2, 3, 4
TYPE_IO_CMD_SET, TYPE_VENDOR = 6, 7
TYPE_NAMES = {TYPE_ERROR: "error", TYPE_SMART: "smart", TYPE_NOTICE: "notice",
              TYPE_IMMEDIATE: "immediate", TYPE_ONE_SHOT: "one-shot",
              TYPE_IO_CMD_SET: "io-command-set", TYPE_VENDOR: "vendor"}

# (type, info) -> name; libnvme's NVME_AER_* names, lower case, dashes
SMART_RELIABILITY, SMART_TEMPERATURE, SMART_SPARE = 0x00, 0x01, 0x02
NOTICE_NS_CHANGED, NOTICE_FW_ACTIVATION, NOTICE_TELEMETRY = 0x00, 0x01, 0x02
NAMESPACES_CHANGED = (TYPE_NOTICE, NOTICE_NS_CHANGED)    # (type, info): read them again
ONE_SHOT_CDQ_TPT, ONE_SHOT_CDQ_FULL = 0x00, 0x01
INFO_NAMES = {
    (TYPE_ERROR, 0x00): "invalid-db", (TYPE_ERROR, 0x01): "invalid-db-value",
    (TYPE_ERROR, 0x02): "diag-failure", (TYPE_ERROR, 0x03): "persistent-internal-error",
    (TYPE_ERROR, 0x04): "transient-internal-error", (TYPE_ERROR, 0x05): "fw-image-load-error",
    (TYPE_SMART, SMART_RELIABILITY): "subsystem-reliability",
    (TYPE_SMART, SMART_TEMPERATURE): "temperature-threshold",
    (TYPE_SMART, SMART_SPARE): "spare-below-threshold",
    (TYPE_NOTICE, NOTICE_NS_CHANGED): "ns-attr-changed",
    (TYPE_NOTICE, NOTICE_FW_ACTIVATION): "fw-activation-starting",
    (TYPE_NOTICE, NOTICE_TELEMETRY): "telemetry-log-changed",
    (TYPE_NOTICE, 0x03): "ana-change", (TYPE_NOTICE, 0x04): "pl-event-aggregate-change",
    (TYPE_NOTICE, 0x05): "lba-status-alert", (TYPE_NOTICE, 0x06): "eg-event-aggregate-change",
    (TYPE_NOTICE, 0x07): "normal-subsystem-shutdown", (TYPE_NOTICE, 0xF0): "discovery-log-changed",
    (TYPE_ONE_SHOT, ONE_SHOT_CDQ_TPT): "cdq-tail-pointer-trigger",
    (TYPE_ONE_SHOT, ONE_SHOT_CDQ_FULL): "cdq-full",
    (TYPE_IO_CMD_SET, 0x00): "reservation-log-available",
    (TYPE_IO_CMD_SET, 0x01): "sanitize-completed",
    (TYPE_IO_CMD_SET, 0x02): "sanitize-completed-unexpected-deallocation",
}

# Asynchronous Event Configuration (feature 0Bh, Figure 330): what a host enables.
AEC_SMART_ALL = 0xFF                    # every critical warning bit
AEC_NOTICES = 0x3 << 8                  # namespace attribute, firmware activation notices
OAES_NOTICES = AEC_NOTICES              # OAES (Identify Controller) has them at the same bits


def aen(dw0: int) -> tuple[int, int, int]:
    """(type, info, log page identifier) of an Asynchronous Event Request's DW0."""
    return dw0 & 0x7, dw0 >> 8 & 0xFF, dw0 >> 16 & 0xFF


def encode_aen(kind: int, info: int, lid: int) -> int:
    return kind & 0x7 | (info & 0xFF) << 8 | (lid & 0xFF) << 16


def decode_aen(dw0: int, dw1: int = 0) -> dict[str, Any]:
    """The event's fields, named (`type`, `info`, `lid`; `cdqid` for a CDQ event)."""
    kind, info, lid = aen(dw0)
    out: dict[str, Any] = {"type": kind, "type_name": TYPE_NAMES.get(kind, f"type{kind}"),
                           "info": info,
                           "info_name": INFO_NAMES.get((kind, info), f"info{info:#04x}")}
    if kind == TYPE_ONE_SHOT:
        out["cdqid"] = dw1 & 0xFFFF
    else:
        out["lid"] = lid
    return out


# The log pages an event may name that explain it: read whole, decoded in its record
EXPLAINING_LOGS = {LID_ERROR: 64, LID_SMART: 512, LID_FW_SLOT: 512, LID_CHANGED_NS: 4096}


def explaining_log(dw0: int) -> tuple[int, int] | None:
    """(LID, bytes) of the log page to read, with RAE clear, for this event: the read
    lets the controller report events of its type again (§5.2) and, for the pages
    of EXPLAINING_LOGS, explains it. None for a one-shot event (no log page)."""
    kind, _, lid = aen(dw0)
    if kind == TYPE_ONE_SHOT:
        return None
    return lid, EXPLAINING_LOGS.get(lid, 4)
