"""PCIe controller registers in BAR0 (NVMe Base 2.0 §3.1.4): offsets, bit fields,
doorbells and the decoded snapshot view.

Field names are the spec's mnemonics in lowercase; register names are the keys
of nvme-cli's `show-regs -o json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .fields import kv_text

# Register offsets (§3.1.4)
CAP, VS, INTMS, INTMC, CC, CSTS, NSSR, AQA = 0x00, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20, 0x24
ASQ, ACQ, CMBLOC, CMBSZ, BPINFO, CRTO, PMRCAP = 0x28, 0x30, 0x38, 0x3C, 0x40, 0x68, 0xE00
DOORBELLS = 0x1000
REGISTERS_SIZE = 0x1000        # a snapshot: every register below the doorbells


@dataclass(frozen=True)
class Reg:
    """A bit field: `width` bits from bit `lo` of a register value."""
    lo: int
    width: int

    @property
    def max(self) -> int:
        return (1 << self.width) - 1

    def get(self, value: int) -> int:
        return value >> self.lo & self.max

    def put(self, field_value: int) -> int:
        """`field_value` in place, to OR into a register value (ValueError if it does not fit)."""
        if not 0 <= field_value <= self.max:
            raise ValueError(f"{field_value:#x} does not fit in {self.width} bits")
        return field_value << self.lo


# CAP, Controller Capabilities (§3.1.4.1)
CAP_MQES, CAP_CQR, CAP_AMS, CAP_TO = Reg(0, 16), Reg(16, 1), Reg(17, 2), Reg(24, 8)
CAP_DSTRD, CAP_NSSRS, CAP_CSS, CAP_BPS = Reg(32, 4), Reg(36, 1), Reg(37, 8), Reg(45, 1)
CAP_CPS, CAP_MPSMIN, CAP_MPSMAX, CAP_PMRS = Reg(46, 2), Reg(48, 4), Reg(52, 4), Reg(56, 1)
CAP_CMBS, CAP_NSSS, CAP_CRMS = Reg(57, 1), Reg(58, 1), Reg(59, 2)
# CAP.CSS bits: the command sets a controller supports
CAP_CSS_NVM, CAP_CSS_IOCS, CAP_CSS_NOIOCS = 1 << 0, 1 << 6, 1 << 7

# VS, Version (§3.1.4.2)
VS_TER, VS_MNR, VS_MJR = Reg(0, 8), Reg(8, 8), Reg(16, 16)

# CC, Controller Configuration (§3.1.4.5)
CC_EN, CC_CSS, CC_MPS, CC_AMS = Reg(0, 1), Reg(4, 3), Reg(7, 4), Reg(11, 3)
CC_SHN, CC_IOSQES, CC_IOCQES, CC_CRIME = Reg(14, 2), Reg(16, 4), Reg(20, 4), Reg(24, 1)
CSS_NVM, CSS_CSI, CSS_ADMIN_ONLY = 0, 6, 7        # CC.CSS
SHN_NONE, SHN_NORMAL, SHN_ABRUPT = 0, 1, 2        # CC.SHN

# CSTS, Controller Status (§3.1.4.6)
CSTS_RDY, CSTS_CFS, CSTS_SHST = Reg(0, 1), Reg(1, 1), Reg(2, 2)
CSTS_NSSRO, CSTS_PP, CSTS_ST = Reg(4, 1), Reg(5, 1), Reg(6, 1)
SHST_NORMAL, SHST_OCCURRING, SHST_COMPLETE = 0, 1, 2   # CSTS.SHST

# NSSR, NVM Subsystem Reset (§3.1.4.7): writing "NVMe" resets the subsystem
NSSR_RESET = 0x4E564D65

# AQA, Admin Queue Attributes (§3.1.4.8): both sizes 0's based
AQA_ASQS, AQA_ACQS = Reg(0, 12), Reg(16, 12)

# CMBLOC, Controller Memory Buffer Location (§3.1.4.11)
CMBLOC_BIR, CMBLOC_CQMMS, CMBLOC_CQPDS, CMBLOC_CDPMLS = Reg(0, 3), Reg(3, 1), Reg(4, 1), Reg(5, 1)
CMBLOC_CDPCILS, CMBLOC_CDMMMS, CMBLOC_CQDA, CMBLOC_OFST = Reg(6, 1), Reg(7, 1), Reg(8, 1), Reg(12, 20)

# CMBSZ, Controller Memory Buffer Size (§3.1.4.12)
CMBSZ_SQS, CMBSZ_CQS, CMBSZ_LISTS, CMBSZ_RDS = Reg(0, 1), Reg(1, 1), Reg(2, 1), Reg(3, 1)
CMBSZ_WDS, CMBSZ_SZU, CMBSZ_SZ = Reg(4, 1), Reg(8, 4), Reg(12, 20)

# BPINFO, Boot Partition Information (§3.1.4.13)
BPINFO_BPSZ, BPINFO_BRS, BPINFO_ABPID = Reg(0, 15), Reg(24, 2), Reg(31, 1)

# CRTO, Controller Ready Timeouts (§3.1.4.21), in 500 ms units
CRTO_CRWMT, CRTO_CRIMT = Reg(0, 16), Reg(16, 16)

# PMRCAP, Persistent Memory Region Capabilities (§3.1.4.22)
PMRCAP_RDS, PMRCAP_WDS, PMRCAP_BIR, PMRCAP_PMRTU = Reg(3, 1), Reg(4, 1), Reg(5, 3), Reg(8, 2)
PMRCAP_PMRWBM, PMRCAP_PMRTO, PMRCAP_CMSS = Reg(10, 4), Reg(16, 8), Reg(24, 1)


@dataclass(frozen=True)
class Register:
    name: str                  # nvme-cli's `show-regs -o json` key
    offset: int
    size: int                  # 4 or 8 bytes
    fields: Mapping[str, Reg] = field(default_factory=dict)

    def decode(self, raw: bytes) -> dict[str, int]:
        value = int.from_bytes(raw[self.offset:self.offset + self.size], "little")
        return {"value": value, **{name: f.get(value) for name, f in self.fields.items()}}


# In offset order. INTMS/INTMC (one interrupt mask), NSSR (write-only control)
# and ASQ/ACQ (a base address) have no fields worth splitting.
REGISTERS: tuple[Register, ...] = (
    Register("cap", CAP, 8, {
        "mqes": CAP_MQES, "cqr": CAP_CQR, "ams": CAP_AMS, "to": CAP_TO, "dstrd": CAP_DSTRD,
        "nssrs": CAP_NSSRS, "css": CAP_CSS, "bps": CAP_BPS, "cps": CAP_CPS, "mpsmin": CAP_MPSMIN,
        "mpsmax": CAP_MPSMAX, "pmrs": CAP_PMRS, "cmbs": CAP_CMBS, "nsss": CAP_NSSS, "crms": CAP_CRMS}),
    Register("vs", VS, 4, {"ter": VS_TER, "mnr": VS_MNR, "mjr": VS_MJR}),
    Register("intms", INTMS, 4),
    Register("intmc", INTMC, 4),
    Register("cc", CC, 4, {
        "en": CC_EN, "css": CC_CSS, "mps": CC_MPS, "ams": CC_AMS, "shn": CC_SHN,
        "iosqes": CC_IOSQES, "iocqes": CC_IOCQES, "crime": CC_CRIME}),
    Register("csts", CSTS, 4, {
        "rdy": CSTS_RDY, "cfs": CSTS_CFS, "shst": CSTS_SHST, "nssro": CSTS_NSSRO,
        "pp": CSTS_PP, "st": CSTS_ST}),
    Register("nssr", NSSR, 4),
    Register("aqa", AQA, 4, {"asqs": AQA_ASQS, "acqs": AQA_ACQS}),
    Register("asq", ASQ, 8),
    Register("acq", ACQ, 8),
    Register("cmbloc", CMBLOC, 4, {
        "bir": CMBLOC_BIR, "cqmms": CMBLOC_CQMMS, "cqpds": CMBLOC_CQPDS, "cdpmls": CMBLOC_CDPMLS,
        "cdpcils": CMBLOC_CDPCILS, "cdmmms": CMBLOC_CDMMMS, "cqda": CMBLOC_CQDA, "ofst": CMBLOC_OFST}),
    Register("cmbsz", CMBSZ, 4, {
        "sqs": CMBSZ_SQS, "cqs": CMBSZ_CQS, "lists": CMBSZ_LISTS, "rds": CMBSZ_RDS,
        "wds": CMBSZ_WDS, "szu": CMBSZ_SZU, "sz": CMBSZ_SZ}),
    Register("bpinfo", BPINFO, 4, {"bpsz": BPINFO_BPSZ, "brs": BPINFO_BRS, "abpid": BPINFO_ABPID}),
    Register("crto", CRTO, 4, {"crwmt": CRTO_CRWMT, "crimt": CRTO_CRIMT}),
    Register("pmrcap", PMRCAP, 4, {
        "rds": PMRCAP_RDS, "wds": PMRCAP_WDS, "bir": PMRCAP_BIR, "pmrtu": PMRCAP_PMRTU,
        "pmrwbm": PMRCAP_PMRWBM, "pmrto": PMRCAP_PMRTO, "cmss": PMRCAP_CMSS}),
)


def doorbell(qid: int, completion: bool, dstrd: int) -> int:
    """Offset of SQyTDBL (completion false) or CQyHDBL of queue `qid` (§3.1.4):
    doorbells are `4 << CAP.DSTRD` bytes apart, each SQ's tail before its CQ's head."""
    return DOORBELLS + (2 * qid + int(completion)) * (4 << dstrd)


def timeout_ms(cap: int) -> int:
    """How long to wait for CSTS.RDY to follow CC.EN, in ms. CAP.TO is the
    worst case in 500 ms units; like libvfn we wait one unit more, so a TO of 0
    still leaves 500 ms and a controller right at its limit is not given up on."""
    return 500 * (CAP_TO.get(cap) + 1)


def decode_registers(raw: bytes) -> dict[str, dict[str, int]]:
    """A little-endian snapshot of BAR0 [0, REGISTERS_SIZE), register by register."""
    if len(raw) < REGISTERS_SIZE:
        raise ValueError(f"registers: need {REGISTERS_SIZE} bytes, got {len(raw)}")
    return {r.name: r.decode(raw) for r in REGISTERS}


def text_registers(d: Mapping[str, Mapping[str, Any]]) -> str:
    """`name : 0x<value>` per register, zero-padded to its width, with its fields
    indented below it in decimal."""
    pairs = []
    for r in REGISTERS:
        values = d[r.name]
        pairs.append((r.name, f"{values['value']:#0{2 + 2 * r.size}x}"))
        pairs.extend((f"  {name}", str(values[name])) for name in r.fields)
    return kv_text(pairs)
