"""The command table: one row per opcode nvmefs knows, per queue, and for I/O per
I/O Command Set (CSI: NVM 0, Key Value 1, Zoned Namespace 2), since an I/O opcode
means what the command set of the namespace it names says (01h: Write or Store).

A row gives the command's name (as nvme-cli prints it), the least --passthru
policy that admits it, the effects nvmefs assumes whatever the controller's
effects log says (OR-ed in, as Linux does in nvme_known_admin_effects),
whether it belongs to the host's own queues (always refused), and the rule
for the bytes it moves. Opcode bits 1:0 give its data direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import commands as C
from .queue import Command

ADMIN, IO = "admin", "io"

# --passthru policies, in increasing power (nvmefs(5) POLICY)
POLICIES = ("off", "info", "readonly", "all")
OFF, INFO, READONLY, ALL = POLICIES

# Data transfer direction, opcode bits 1:0 (Base 2.0 §3.3.3.1, Figure 83)
XFER_NONE, XFER_TO_CTRL, XFER_FROM_CTRL, XFER_BIDI = 0, 1, 2, 3

# Commands Supported and Effects bits (Figure 210), repeated from logs to keep logs -> opcodes one way
_LBCC, _NCC, _NIC, _CCC, _CSE_ONE_NS, _CSE_ALL = 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 16, 1 << 17

DataLen = Callable[[Command, int], int | None]     # (command, block size) -> bytes it moves


def direction(opcode: int) -> int:
    return opcode & 0x3


@dataclass(frozen=True)
class Opcode:
    queue: str
    opcode: int
    name: str
    policy: str = ALL               # the least policy that admits it
    effects: int = 0                # effects assumed in addition to the effects log
    queue_mgmt: bool = False        # owned by the backend: refused in every policy
    data_len: DataLen | None = None     # None: any length, up to MDTS

    @property
    def direction(self) -> int:
        return direction(self.opcode)

    @property
    def read_only(self) -> bool:
        """Free of side effects on the controller, its namespaces and data."""
        return self.policy != ALL


_ROWS = [
    Opcode(ADMIN, C.OP_DELETE_IO_SQ, "Delete I/O Submission Queue", queue_mgmt=True),
    Opcode(ADMIN, C.OP_CREATE_IO_SQ, "Create I/O Submission Queue", queue_mgmt=True),
    Opcode(ADMIN, C.OP_GET_LOG_PAGE, "Get Log Page", INFO, data_len=C.log_page_len),
    Opcode(ADMIN, C.OP_DELETE_IO_CQ, "Delete I/O Completion Queue", queue_mgmt=True),
    Opcode(ADMIN, C.OP_CREATE_IO_CQ, "Create I/O Completion Queue", queue_mgmt=True),
    Opcode(ADMIN, C.OP_IDENTIFY, "Identify", INFO, data_len=C.identify_len),
    Opcode(ADMIN, C.OP_ABORT, "Abort", queue_mgmt=True),
    Opcode(ADMIN, C.OP_SET_FEATURES, "Set Features", effects=_CCC, data_len=C.feature_len),
    Opcode(ADMIN, C.OP_GET_FEATURES, "Get Features", INFO, data_len=C.feature_len),
    Opcode(ADMIN, C.OP_ASYNC_EVENT, "Asynchronous Event Request", queue_mgmt=True),
    Opcode(ADMIN, C.OP_NS_MGMT, "Namespace Management", effects=_NCC | _NIC),
    Opcode(ADMIN, C.OP_FW_COMMIT, "Firmware Commit", effects=_CCC | _NIC),
    Opcode(ADMIN, C.OP_FW_DOWNLOAD, "Firmware Image Download", effects=_CCC,
           data_len=C.fw_download_len),
    Opcode(ADMIN, C.OP_SELF_TEST, "Device Self-test", effects=_CCC),
    Opcode(ADMIN, C.OP_NS_ATTACH, "Namespace Attachment", effects=_NCC | _NIC),
    Opcode(ADMIN, C.OP_KEEP_ALIVE, "Keep Alive", queue_mgmt=True),
    Opcode(ADMIN, C.OP_DIRECTIVE_SEND, "Directive Send", effects=_CCC),
    Opcode(ADMIN, C.OP_DIRECTIVE_RECV, "Directive Receive", READONLY),
    Opcode(ADMIN, C.OP_VIRT_MGMT, "Virtualization Management", effects=_CCC),
    Opcode(ADMIN, C.OP_MI_SEND, "NVMe-MI Send", effects=_CCC),
    Opcode(ADMIN, C.OP_MI_RECV, "NVMe-MI Receive"),
    Opcode(ADMIN, C.OP_CAPACITY_MGMT, "Capacity Management", effects=_NCC | _NIC),
    Opcode(ADMIN, C.OP_LOCKDOWN, "Lockdown", effects=_CCC),
    Opcode(ADMIN, C.OP_TRACK_SEND, "Track Send", effects=_CCC),
    Opcode(ADMIN, C.OP_TRACK_RECV, "Track Receive", READONLY),
    Opcode(ADMIN, C.OP_MIGRATION_SEND, "Migration Send", effects=_CCC),
    Opcode(ADMIN, C.OP_MIGRATION_RECV, "Migration Receive", READONLY),
    Opcode(ADMIN, C.OP_CDQ, "Controller Data Queue", queue_mgmt=True),   # its memory must be ours
    Opcode(ADMIN, C.OP_DBBUF, "Doorbell Buffer Config", queue_mgmt=True),
    Opcode(ADMIN, C.OP_FABRICS, "Fabrics Command", queue_mgmt=True),
    Opcode(ADMIN, C.OP_FORMAT_NVM, "Format NVM", effects=_LBCC | _NCC | _CSE_ALL),
    Opcode(ADMIN, C.OP_SECURITY_SEND, "Security Send", effects=_LBCC | _CCC),
    Opcode(ADMIN, C.OP_SECURITY_RECV, "Security Receive"),
    Opcode(ADMIN, C.OP_SANITIZE, "Sanitize", effects=_LBCC | _CSE_ALL),
    Opcode(ADMIN, C.OP_GET_LBA_STATUS, "Get LBA Status", READONLY),

    # I/O commands of every I/O Command Set (Base 2.1): the daemon's queues own them
    Opcode(IO, C.OP_CANCEL, "Cancel", queue_mgmt=True),
    Opcode(IO, C.OP_FABRICS, "Fabrics Command", queue_mgmt=True),
]

# The NVM Command Set's I/O commands (NVM Command Set 1.0 Figure 18, I/O Management
# from 2.1); the Zoned Namespace Command Set takes them too (ZNS 1.1 Figure 20)
_NVM_ROWS = [
    Opcode(IO, C.OP_FLUSH, "Flush"),
    Opcode(IO, C.OP_WRITE, "Write", effects=_LBCC, data_len=C.lba_len),
    Opcode(IO, C.OP_READ, "Read", READONLY, data_len=C.lba_len),
    Opcode(IO, C.OP_WRITE_UNCOR, "Write Uncorrectable", effects=_LBCC),
    Opcode(IO, C.OP_COMPARE, "Compare", READONLY, data_len=C.lba_len),
    Opcode(IO, C.OP_WRITE_ZEROES, "Write Zeroes", effects=_LBCC),
    Opcode(IO, C.OP_DSM, "Dataset Management", effects=_LBCC, data_len=C.dsm_len),
    Opcode(IO, C.OP_VERIFY, "Verify", READONLY),
    Opcode(IO, C.OP_RESV_REGISTER, "Reservation Register", effects=_CCC),
    Opcode(IO, C.OP_RESV_REPORT, "Reservation Report", READONLY),
    Opcode(IO, C.OP_RESV_ACQUIRE, "Reservation Acquire", effects=_CCC),
    Opcode(IO, C.OP_IO_MGMT_RECV, "I/O Management Receive", READONLY),
    Opcode(IO, C.OP_RESV_RELEASE, "Reservation Release", effects=_CCC),
    Opcode(IO, C.OP_COPY, "Copy", effects=_LBCC, data_len=C.copy_len),
    Opcode(IO, C.OP_IO_MGMT_SEND, "I/O Management Send", effects=_CCC),
]

# Zoned Namespace Command Set 1.1 §3.4: its own commands
_ZNS_ROWS = [
    Opcode(IO, C.OP_ZONE_MGMT_SEND, "Zone Management Send", effects=_LBCC,
           data_len=C.zone_send_len),
    Opcode(IO, C.OP_ZONE_MGMT_RECV, "Zone Management Receive", READONLY,
           data_len=C.zone_recv_len),
    Opcode(IO, C.OP_ZONE_APPEND, "Zone Append", effects=_LBCC, data_len=C.lba_len),
]

# Key Value Command Set 1.0 Figure 17 (names as libnvme's nvme_kv_opcode); Flush and
# the Reservation commands are the NVM ones
_KV_ROWS = [row for row in _NVM_ROWS if row.opcode in (
    C.OP_FLUSH, C.OP_RESV_REGISTER, C.OP_RESV_REPORT, C.OP_RESV_ACQUIRE, C.OP_RESV_RELEASE)] + [
    Opcode(IO, C.OP_KV_STORE, "Store", effects=_LBCC, data_len=C.kv_len),
    Opcode(IO, C.OP_KV_RETRIEVE, "Retrieve", READONLY, data_len=C.kv_len),
    Opcode(IO, C.OP_KV_LIST, "List", READONLY, data_len=C.kv_len),
    Opcode(IO, C.OP_KV_DELETE, "Delete", effects=_LBCC),
    Opcode(IO, C.OP_KV_EXIST, "Exist", READONLY),
]

# The I/O commands of each I/O Command Set, by CSI, with those common to all (_ROWS)
_COMMON_IO = [r for r in _ROWS if r.queue == IO]
COMMAND_SETS: dict[int, dict[int, Opcode]] = {
    csi: {r.opcode: r for r in _COMMON_IO + rows} for csi, rows in (
        (C.CSI_NVM, _NVM_ROWS), (C.CSI_KV, _KV_ROWS), (C.CSI_ZNS, _NVM_ROWS + _ZNS_ROWS))}
_UNKNOWN_SET = {r.opcode: r for r in _COMMON_IO}     # a CSI nvmefs has no table for

# The admin table, and the NVM Command Set's I/O table (CSI 0)
OPCODES: dict[str, dict[int, Opcode]] = {ADMIN: {r.opcode: r for r in _ROWS if r.queue == ADMIN},
                                         IO: COMMAND_SETS[C.CSI_NVM]}


def table(queue: str, csi: int = C.CSI_NVM) -> dict[int, Opcode]:
    """The opcodes of a queue: admin, or the I/O commands of command set `csi`."""
    return OPCODES[ADMIN] if queue == ADMIN else COMMAND_SETS.get(csi, _UNKNOWN_SET)


def lookup(queue: str, opcode: int, csi: int = C.CSI_NVM) -> Opcode | None:
    return table(queue, csi).get(opcode)


def name_of(queue: str, opcode: int, csi: int = C.CSI_NVM) -> str:
    op = table(queue, csi).get(opcode)
    return op.name if op else "Unknown"


# Per queue, the opcodes that may change namespaces or their identify data (effects
# NCC or NIC, Figure 210): identify must be read again before the next request is checked.
CHANGES_NAMESPACES: dict[str, frozenset[int]] = {
    q: frozenset(op for rows in tables for op, row in rows.items()
                 if row.effects & (_NCC | _NIC))
    for q, tables in ((ADMIN, [OPCODES[ADMIN]]), (IO, COMMAND_SETS.values()))}


def changes_namespaces(opcode: int, queue: str) -> bool:
    return opcode in CHANGES_NAMESPACES[queue]
