"""Commands: opcodes, identifiers, dword fields, builders and data lengths.

Every command dword field is named here once, as a `Bits` (its spec mnemonic),
and the builders, the parsers, passthru validation and the sim all use it
(CNS values are in spec.identify, with the structures they select).
Opcodes: NVMe Base 2.0 Figure 28 (admin), NVM Command Set 1.0 Figure 18, ZNS 1.1
and Key Value 1.0 (I/O); libnvme's names where the spec has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable

from .identify import IDENTIFY_SIZE
from .queue import Command

NSID_ALL = 0xFFFFFFFF      # the broadcast NSID (§3.2.1)

# Admin opcodes
OP_DELETE_IO_SQ, OP_CREATE_IO_SQ, OP_GET_LOG_PAGE, OP_DELETE_IO_CQ = 0x00, 0x01, 0x02, 0x04
OP_CREATE_IO_CQ, OP_IDENTIFY, OP_ABORT, OP_SET_FEATURES, OP_GET_FEATURES = 0x05, 0x06, 0x08, 0x09, 0x0A
OP_ASYNC_EVENT, OP_NS_MGMT, OP_FW_COMMIT, OP_FW_DOWNLOAD = 0x0C, 0x0D, 0x10, 0x11
OP_SELF_TEST, OP_NS_ATTACH, OP_KEEP_ALIVE = 0x14, 0x15, 0x18
OP_DIRECTIVE_SEND, OP_DIRECTIVE_RECV, OP_VIRT_MGMT, OP_MI_SEND, OP_MI_RECV = 0x19, 0x1A, 0x1C, 0x1D, 0x1E
OP_CAPACITY_MGMT, OP_LOCKDOWN, OP_TRACK_SEND, OP_TRACK_RECV = 0x20, 0x24, 0x3D, 0x3E
OP_MIGRATION_SEND, OP_MIGRATION_RECV, OP_CDQ = 0x41, 0x42, 0x45
OP_DBBUF, OP_FABRICS, OP_FORMAT_NVM, OP_SECURITY_SEND, OP_SECURITY_RECV = 0x7C, 0x7F, 0x80, 0x81, 0x82
OP_SANITIZE, OP_GET_LBA_STATUS = 0x84, 0x86
# I/O opcodes (OP_FABRICS too)
OP_FLUSH, OP_WRITE, OP_READ, OP_WRITE_UNCOR, OP_COMPARE = 0x00, 0x01, 0x02, 0x04, 0x05
OP_WRITE_ZEROES, OP_DSM, OP_VERIFY, OP_RESV_REGISTER, OP_RESV_REPORT = 0x08, 0x09, 0x0C, 0x0D, 0x0E
OP_RESV_ACQUIRE, OP_IO_MGMT_RECV, OP_RESV_RELEASE, OP_CANCEL, OP_COPY = 0x11, 0x12, 0x15, 0x18, 0x19
OP_IO_MGMT_SEND, OP_ZONE_MGMT_SEND, OP_ZONE_MGMT_RECV, OP_ZONE_APPEND = 0x1D, 0x79, 0x7A, 0x7D
# Key Value Command Set 1.0 opcodes (Flush and the Reservation commands are NVM's)
OP_KV_STORE, OP_KV_RETRIEVE, OP_KV_LIST, OP_KV_DELETE, OP_KV_EXIST = 0x01, 0x02, 0x06, 0x10, 0x14

# I/O Command Set identifiers (Base 2.0 Figure 286)
CSI_NVM, CSI_KV, CSI_ZNS = 0x00, 0x01, 0x02

# Log page identifiers (§5.16.1)
LID_SUPPORTED_LOGS, LID_ERROR, LID_SMART, LID_FW_SLOT, LID_CHANGED_NS = 0x00, 0x01, 0x02, 0x03, 0x04
LID_EFFECTS, LID_SELF_TEST, LID_TELEMETRY_HOST, LID_TELEMETRY_CTRL = 0x05, 0x06, 0x07, 0x08
LID_ENDURANCE, LID_ANA, LID_PERSISTENT_EVENT, LID_SANITIZE = 0x09, 0x0C, 0x0D, 0x81
LID_DISCOVERY = 0x70

# Feature identifiers (§5.27.1, Figure 317; 21h: TP4159)
FID_ARBITRATION, FID_POWER_MGMT, FID_LBA_RANGE, FID_TEMP_THRESH = 0x01, 0x02, 0x03, 0x04
FID_ERR_RECOVERY, FID_VOLATILE_WC, FID_NUM_QUEUES, FID_IRQ_COALESCE = 0x05, 0x06, 0x07, 0x08
FID_IRQ_CONFIG, FID_WRITE_ATOMIC, FID_ASYNC_EVENT, FID_AUTO_PST = 0x09, 0x0A, 0x0B, 0x0C
FID_HOST_MEM_BUF, FID_TIMESTAMP, FID_KATO, FID_HCTM, FID_NOPSC = 0x0D, 0x0E, 0x0F, 0x10, 0x11
FID_RRL, FID_PLM_CONFIG, FID_PLM_WINDOW, FID_LBA_STS_INTERVAL = 0x12, 0x13, 0x14, 0x15
FID_HOST_BEHAVIOR, FID_SANITIZE, FID_ENDURANCE_EVT_CFG, FID_IOCS_PROFILE = 0x16, 0x17, 0x18, 0x19
FID_SPINUP_CONTROL, FID_CDQ = 0x1A, 0x21
FID_ENH_CTRL_METADATA, FID_CTRL_METADATA, FID_NS_METADATA = 0x7D, 0x7E, 0x7F
FID_SW_PROGRESS, FID_HOST_ID, FID_RESV_MASK, FID_RESV_PERSIST, FID_WRITE_PROTECT = \
    0x80, 0x81, 0x82, 0x83, 0x84


@dataclass(frozen=True)
class Bits:
    """A command field: `mask` bits from bit `shift` of CDW`dword`; a field that
    runs past bit 31 goes on in the next dword (SLBA, LPO, NUMD)."""
    dword: int
    shift: int
    mask: int
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _words: Callable[[Command], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count = (self.shift + self.mask.bit_length() + 31) // 32
        if count > 2:
            raise ValueError("a command field spans at most two dwords")
        object.__setattr__(self, "_names", tuple(f"cdw{self.dword + i}" for i in range(count)))
        object.__setattr__(self, "_words", attrgetter(*self._names))

    def get(self, cmd: Command) -> int:
        words = self._words(cmd)        # one dword, or two (low, high)
        wide = words if len(self._names) == 1 else words[0] | words[1] << 32
        return wide >> self.shift & self.mask

    def put(self, value: int) -> dict[str, int]:
        """The dwords that hold `value` (ValueError if it does not fit)."""
        if not 0 <= value <= self.mask:
            raise ValueError(f"{value:#x} does not fit in {self.mask.bit_length()} bits")
        wide = value << self.shift
        return {name: wide >> 32 * i & 0xFFFFFFFF for i, name in enumerate(self._names)}


# Identify (§5.17)
CNS, CNTID, CSI = Bits(10, 0, 0xFF), Bits(10, 16, 0xFFFF), Bits(11, 24, 0xFF)
# Get Log Page (§5.16); NUMD is NUMDU (CDW11 15:0) : NUMDL (CDW10 31:16)
LID, LSP, RAE, NUMD = Bits(10, 0, 0xFF), Bits(10, 8, 0x7F), Bits(10, 15, 1), Bits(10, 16, 0xFFFFFFFF)
LSI, LPO, LOG_CSI = Bits(11, 16, 0xFFFF), Bits(12, 0, (1 << 64) - 1), Bits(14, 24, 0xFF)
# Get Features (§5.15) and Set Features (§5.27); EXHID: Host Identifier (81h) is 128-bit
FID, SEL, SV, EXHID = Bits(10, 0, 0xFF), Bits(10, 8, 0x7), Bits(10, 31, 1), Bits(11, 0, 1)
# NVM commands on LBAs (NVM Command Set §3.2): NLB is 0's based
SLBA, NLB = Bits(10, 0, (1 << 64) - 1), Bits(12, 0, 0xFFFF)
# Protection information (NVM Command Set §5.3): PRINFO (CDW12 29:26: PRACT, PRCHK), the
# initial reference tag (ILBRT/EILBRT, CDW14), application tag and mask (LBAT/LBATM, CDW15);
# PRACT 1 with metadata of exactly one 8-byte PI tuple: the controller strips or inserts
# it and no metadata is transferred
PRINFO, PRACT = Bits(12, 26, 0xF), Bits(12, 29, 1)
ILBRT, LBAT, LBATM = Bits(14, 0, 0xFFFFFFFF), Bits(15, 0, 0xFFFF), Bits(15, 16, 0xFFFF)
PI_SIZE = 8
# Format NVM (§5.14): LBA format (LBAFU:LBAFL), Secure Erase Settings
LBAFL, SES, LBAFU = Bits(10, 0, 0xF), Bits(10, 9, 0x7), Bits(10, 12, 0x3)
# Create I/O CQ/SQ (§5.4, §5.5): QID, QSIZE (0's based); CQ: PC, IEN, IV; SQ: PC, CQID
QID, QSIZE = Bits(10, 0, 0xFFFF), Bits(10, 16, 0xFFFF)
Q_PC, CQ_IEN = Bits(11, 0, 1), Bits(11, 1, 1)
CQ_IV, SQ_CQID = Bits(11, 16, 0xFFFF), Bits(11, 16, 0xFFFF)
# Abort (§5.1): SQID, CID; Number of Queues (§5.27.1.5): NSQR, NCQR (0's based), same in DW0
ABORT_SQID, ABORT_CID = Bits(10, 0, 0xFFFF), Bits(10, 16, 0xFFFF)
NSQR, NCQR = Bits(11, 0, 0xFFFF), Bits(11, 16, 0xFFFF)
# Firmware Image Download (§5.13): NUMD; Dataset Management (NVM §3.2.3): NR (both 0's based)
FW_NUMD, DSM_NR = Bits(10, 0, 0xFFFFFFFF), Bits(10, 0, 0xFF)
DSM_RANGE_SIZE = 16
# Copy (NVM §3.2.2): SDLBA, NR (0's based), DESFMT; source range entries of format 0h
SDLBA, COPY_NR, DESFMT = Bits(10, 0, (1 << 64) - 1), Bits(12, 0, 0xFF), Bits(12, 8, 0xF)
COPY_RANGE_SIZE = 32
# Zone Management Send / Receive (ZNS 1.1 §3.4.3, §3.4.2): SLBA in CDW10-11; Receive:
# NUMD (0's based dwords), ZRA, ZRASF, Partial Report; Send: ZSA, Select All
ZMR_NUMD = Bits(12, 0, 0xFFFFFFFF)
ZRA, ZRASF, ZRA_PARTIAL = Bits(13, 0, 0xFF), Bits(13, 8, 0xFF), Bits(13, 16, 1)
ZSA, ZSA_SELECT_ALL = Bits(13, 0, 0xFF), Bits(13, 8, 1)
ZSA_SET_ZDE = 0x10          # Set Zone Descriptor Extension: the only action with data
# Key Value (KV 1.0 §3.2): Store's Value Size, Retrieve's and List's Host Buffer Size (bytes)
KV_SIZE = Bits(10, 0, 0xFFFFFFFF)


def command(opcode: int, nsid: int = 0, *fields: tuple[Bits, int], **dwords: int) -> Command:
    """A Command with `fields` (Bits, value) OR-ed into its dwords."""
    for bits, value in fields:
        for name, word in bits.put(value).items():
            dwords[name] = dwords.get(name, 0) | word
    return Command(opcode, nsid, **dwords)


# ------------------------------------------------------------------ builders and parsers

def identify(cns: int, nsid: int = 0, cntid: int = 0, csi: int = 0) -> Command:
    return command(OP_IDENTIFY, nsid, (CNS, cns), (CNTID, cntid), (CSI, csi))


def get_log_page(lid: int, length: int, offset: int = 0, nsid: int = NSID_ALL, lsp: int = 0,
                 lsi: int = 0, rae: bool = True, csi: int = 0) -> Command:
    if length <= 0 or length % 4:
        raise ValueError(f"log length {length} is not a positive multiple of 4")
    return command(OP_GET_LOG_PAGE, nsid, (LID, lid), (LSP, lsp), (RAE, int(rae)),
                   (NUMD, length // 4 - 1), (LSI, lsi), (LPO, offset), (LOG_CSI, csi))


def log_page_fields(cmd: Command) -> tuple[int, int, int, int, int]:
    """(lid, lsp, length, offset, lsi) of a Get Log Page command."""
    return LID.get(cmd), LSP.get(cmd), log_page_len(cmd), LPO.get(cmd), LSI.get(cmd)


def get_features(fid: int, sel: int = 0, nsid: int = 0, cdw11: int = 0) -> Command:
    return command(OP_GET_FEATURES, nsid, (FID, fid), (SEL, sel), cdw11=cdw11)


def set_features(fid: int, cdw11: int, save: bool = False, nsid: int = 0,
                 cdw12: int = 0) -> Command:
    return command(OP_SET_FEATURES, nsid, (FID, fid), (SV, int(save)), cdw11=cdw11, cdw12=cdw12)


def create_io_cq(qid: int, entries: int, iova: int, vector: int | None) -> Command:
    """A physically contiguous I/O CQ at `iova`; interrupts on `vector` (None: polled)."""
    return command(OP_CREATE_IO_CQ, 0, (QID, qid), (QSIZE, entries - 1), (Q_PC, 1),
                   (CQ_IEN, vector is not None), (CQ_IV, vector or 0))._replace(prp1=iova)


def create_io_sq(qid: int, entries: int, iova: int, cqid: int) -> Command:
    return command(OP_CREATE_IO_SQ, 0, (QID, qid), (QSIZE, entries - 1), (Q_PC, 1),
                   (SQ_CQID, cqid))._replace(prp1=iova)


def abort(sqid: int, cid: int) -> Command:
    return command(OP_ABORT, 0, (ABORT_SQID, sqid), (ABORT_CID, cid))


def number_of_queues(count: int) -> Command:
    """Set Features Number of Queues: `count` submission and completion queues."""
    return command(OP_SET_FEATURES, 0, (FID, FID_NUM_QUEUES), (NSQR, count - 1),
                   (NCQR, count - 1))


def queues_granted(dw0: int) -> int:
    """I/O queue pairs a Number of Queues completion grants (NSQA, NCQA: 0's based)."""
    return min(dw0 & 0xFFFF, dw0 >> 16) + 1


def rw(opcode: int, nsid: int, slba: int, nlb: int) -> Command:
    """Read/Write/Compare/Write Zeroes... of `nlb` (1..65536) blocks from `slba`."""
    return command(opcode, nsid, (SLBA, slba), (NLB, nlb - 1))


def zone_mgmt_recv(nsid: int, slba: int, length: int, zra: int = 0, zrasf: int = 0,
                   partial: bool = True) -> Command:
    """Zone Management Receive of `length` bytes (a multiple of 4): the zones from the
    one holding `slba` on, of state filter `zrasf` (0: all)."""
    if length <= 0 or length % 4:
        raise ValueError(f"report length {length} is not a positive multiple of 4")
    return command(OP_ZONE_MGMT_RECV, nsid, (SLBA, slba), (ZMR_NUMD, length // 4 - 1),
                   (ZRA, zra), (ZRASF, zrasf), (ZRA_PARTIAL, int(partial)))


def zone_mgmt_send(nsid: int, slba: int, zsa: int, select_all: bool = False) -> Command:
    return command(OP_ZONE_MGMT_SEND, nsid, (SLBA, slba), (ZSA, zsa),
                   (ZSA_SELECT_ALL, int(select_all)))


def rw_fields(cmd: Command) -> tuple[int, int]:
    """(slba, nlb) of an LBA command."""
    return SLBA.get(cmd), NLB.get(cmd) + 1


# ------------------------------------------------------------------ data lengths
# Each returns the bytes a command moves, from its dwords and the namespace's
# block size (0: unknown), or None where that is not known here.

# Get / Set Features data buffer by FID, (get, set) bytes: LBA Range Type (NVM Command Set
# 1.0), APST (Figure 332), Host Memory Buffer (attributes, Figure 335; Set takes its
# list from CDW12..15), Timestamp (Figure 337), Predictable Latency Mode Config, Host
# Behavior Support, Host Metadata (7Dh-7Fh), Host Identifier (x2 with EXHID), CDQ (TP4159).
# FIDs not listed (vendor specific, newer than this table) are bounded by MDTS only.
FEATURE_DATA: dict[int, tuple[int, int]] = {
    **dict.fromkeys((FID_ARBITRATION, FID_POWER_MGMT, FID_TEMP_THRESH, FID_ERR_RECOVERY,
                     FID_VOLATILE_WC, FID_NUM_QUEUES, FID_IRQ_COALESCE, FID_IRQ_CONFIG,
                     FID_WRITE_ATOMIC, FID_ASYNC_EVENT, FID_KATO, FID_HCTM, FID_NOPSC, FID_RRL,
                     FID_PLM_WINDOW, FID_LBA_STS_INTERVAL, FID_SANITIZE, FID_ENDURANCE_EVT_CFG,
                     FID_IOCS_PROFILE, FID_SPINUP_CONTROL, FID_SW_PROGRESS, FID_RESV_MASK,
                     FID_RESV_PERSIST, FID_WRITE_PROTECT), (0, 0)),
    FID_LBA_RANGE: (4096, 4096), FID_AUTO_PST: (256, 256), FID_HOST_MEM_BUF: (4096, 0),
    FID_TIMESTAMP: (8, 8), FID_PLM_CONFIG: (512, 512), FID_HOST_BEHAVIOR: (512, 512),
    **dict.fromkeys((FID_ENH_CTRL_METADATA, FID_CTRL_METADATA, FID_NS_METADATA), (4096, 4096)),
    FID_HOST_ID: (8, 8), FID_CDQ: (8, 0),
}


def identify_len(cmd: Command, block: int = 0) -> int:
    return IDENTIFY_SIZE


def log_page_len(cmd: Command, block: int = 0) -> int:
    return (NUMD.get(cmd) + 1) * 4


def lba_len(cmd: Command, block: int = 0) -> int | None:
    return (NLB.get(cmd) + 1) * block if block else None


def fw_download_len(cmd: Command, block: int = 0) -> int:
    return (FW_NUMD.get(cmd) + 1) * 4


def dsm_len(cmd: Command, block: int = 0) -> int:
    return (DSM_NR.get(cmd) + 1) * DSM_RANGE_SIZE


def copy_len(cmd: Command, block: int = 0) -> int | None:
    """Format 0h source ranges; other formats are not known here."""
    return (COPY_NR.get(cmd) + 1) * COPY_RANGE_SIZE if DESFMT.get(cmd) == 0 else None


def zone_recv_len(cmd: Command, block: int = 0) -> int:
    return (ZMR_NUMD.get(cmd) + 1) * 4


def zone_send_len(cmd: Command, block: int = 0) -> int | None:
    """None for Set Zone Descriptor Extension (its size is the namespace's ZDES), else 0."""
    return None if ZSA.get(cmd) == ZSA_SET_ZDE else 0


def kv_len(cmd: Command, block: int = 0) -> int:
    return KV_SIZE.get(cmd)


def feature_len(cmd: Command, block: int = 0) -> int | None:
    fid = FID.get(cmd)
    sizes = FEATURE_DATA.get(fid)
    if sizes is None:
        return None
    size = sizes[cmd.opcode == OP_SET_FEATURES]
    return size << EXHID.get(cmd) if fid == FID_HOST_ID else size
