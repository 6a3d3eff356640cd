"""Opcode tables (NVMe Base 2.0 Figure 28 admin, NVM Command Set 1.0 Figure 18 I/O).

Each row: name (as nvme-cli prints it), whether the command is free of side
effects (the read-only passthru policy admits only those), the effects nvmefs
assumes whatever the controller's effects log says (OR-ed in, as Linux does in
nvme_known_admin_effects), and whether it would break the host's own queues
(always refused).
"""

from __future__ import annotations

from dataclasses import dataclass

ADMIN, IO = "admin", "io"

# Data transfer direction, opcode bits 1:0 (Base 2.0 §3.3.3.1, Figure 83)
XFER_NONE, XFER_TO_CTRL, XFER_FROM_CTRL, XFER_BIDI = 0, 1, 2, 3

# Commands Supported and Effects bits (Figure 210), repeated here to keep this module a leaf
_LBCC, _NCC, _NIC, _CCC, _CSE_ONE_NS, _CSE_ALL = 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 16, 1 << 17


@dataclass(frozen=True)
class Opcode:
    name: str
    read_only: bool = False     # no side effect on the controller, its namespaces or data
    effects: int = 0            # effects assumed in addition to the effects log
    queue_mgmt: bool = False    # owned by the backend: refused in every policy


def direction(opcode: int) -> int:
    return opcode & 0x3


_ADMIN = {
    0x00: Opcode("Delete I/O Submission Queue", queue_mgmt=True),
    0x01: Opcode("Create I/O Submission Queue", queue_mgmt=True),
    0x02: Opcode("Get Log Page", read_only=True),
    0x04: Opcode("Delete I/O Completion Queue", queue_mgmt=True),
    0x05: Opcode("Create I/O Completion Queue", queue_mgmt=True),
    0x06: Opcode("Identify", read_only=True),
    0x08: Opcode("Abort", queue_mgmt=True),
    0x09: Opcode("Set Features", effects=_CCC),
    0x0A: Opcode("Get Features", read_only=True),
    0x0C: Opcode("Asynchronous Event Request", queue_mgmt=True),
    0x0D: Opcode("Namespace Management", effects=_NCC | _NIC),
    0x10: Opcode("Firmware Commit", effects=_CCC | _NIC),
    0x11: Opcode("Firmware Image Download", effects=_CCC),
    0x14: Opcode("Device Self-test", effects=_CCC),
    0x15: Opcode("Namespace Attachment", effects=_NCC | _NIC),
    0x18: Opcode("Keep Alive", queue_mgmt=True),
    0x19: Opcode("Directive Send", effects=_CCC),
    0x1A: Opcode("Directive Receive", read_only=True),
    0x1C: Opcode("Virtualization Management", effects=_CCC),
    0x1D: Opcode("NVMe-MI Send", effects=_CCC),
    0x1E: Opcode("NVMe-MI Receive"),
    0x20: Opcode("Capacity Management", effects=_NCC | _NIC),
    0x24: Opcode("Lockdown", effects=_CCC),
    0x3D: Opcode("Track Send", effects=_CCC),
    0x3E: Opcode("Track Receive", read_only=True),
    0x41: Opcode("Migration Send", effects=_CCC),
    0x42: Opcode("Migration Receive", read_only=True),
    0x45: Opcode("Controller Data Queue", queue_mgmt=True),   # its memory must be the backend's
    0x7C: Opcode("Doorbell Buffer Config", queue_mgmt=True),
    0x7F: Opcode("Fabrics Command", queue_mgmt=True),
    0x80: Opcode("Format NVM", effects=_LBCC | _NCC | _CSE_ALL),
    0x81: Opcode("Security Send", effects=_LBCC | _CCC),
    0x82: Opcode("Security Receive"),
    0x84: Opcode("Sanitize", effects=_LBCC | _CSE_ALL),
    0x86: Opcode("Get LBA Status", read_only=True),
}

_IO = {
    0x00: Opcode("Flush"),
    0x01: Opcode("Write", effects=_LBCC),
    0x02: Opcode("Read", read_only=True),
    0x04: Opcode("Write Uncorrectable", effects=_LBCC),
    0x05: Opcode("Compare", read_only=True),
    0x08: Opcode("Write Zeroes", effects=_LBCC),
    0x09: Opcode("Dataset Management", effects=_LBCC),
    0x0C: Opcode("Verify", read_only=True),
    0x0D: Opcode("Reservation Register", effects=_CCC),
    0x0E: Opcode("Reservation Report", read_only=True),
    0x11: Opcode("Reservation Acquire", effects=_CCC),
    0x12: Opcode("I/O Management Receive", read_only=True),
    0x15: Opcode("Reservation Release", effects=_CCC),
    0x18: Opcode("Cancel", queue_mgmt=True),
    0x19: Opcode("Copy", effects=_LBCC),
    0x1D: Opcode("I/O Management Send", effects=_CCC),
    0x79: Opcode("Zone Management Send", effects=_LBCC),
    0x7A: Opcode("Zone Management Receive", read_only=True),
    0x7D: Opcode("Zone Append", effects=_LBCC),
}

OPCODES: dict[str, dict[int, Opcode]] = {ADMIN: _ADMIN, IO: _IO}


def lookup(queue: str, opcode: int) -> Opcode | None:
    return OPCODES[queue].get(opcode)


def name_of(queue: str, opcode: int) -> str:
    op = OPCODES[queue].get(opcode)
    return op.name if op else "Unknown"


def is_vendor(queue: str, opcode: int) -> bool:
    """Vendor specific opcodes: admin C0h-FFh, I/O 80h-FFh."""
    return opcode >= (0xC0 if queue == ADMIN else 0x80)
