"""Status codes (NVMe Base 2.0 §4.6.1.2, Figures 93-100): (SCT, SC) -> name, errno.

Names are libnvme's NVME_SC_* mnemonics without the prefix. The errno mapping
follows libnvme's nvme_status_to_errno, refined where a file system caller
gains from a precise errno (media access denied, unwritten block, host abort).
"""

from __future__ import annotations

import errno as E
from dataclasses import dataclass

from .queue import SC_MASK, SCT_MASK, SCT_SHIFT, make_status

GENERIC, CMD_SPECIFIC, MEDIA, PATH, VENDOR = 0, 1, 2, 3, 7


@dataclass(frozen=True)
class Status:
    name: str
    errno: int


def _table(sct: int, rows: str) -> dict[tuple[int, int], Status]:
    """Rows of `SC NAME ERRNO`, one per line."""
    out = {}
    for line in rows.strip().splitlines():
        sc, name, err = line.split()
        out[(sct, int(sc, 16))] = Status(name, getattr(E, err))
    return out


STATUS: dict[tuple[int, int], Status] = {
    **_table(GENERIC, """
        00 SUCCESS                       EIO
        01 INVALID_OPCODE                EINVAL
        02 INVALID_FIELD                 EINVAL
        03 CMDID_CONFLICT                EADDRINUSE
        04 DATA_XFER_ERROR               EIO
        05 POWER_LOSS                    EWOULDBLOCK
        06 INTERNAL                      EIO
        07 ABORT_REQ                     EWOULDBLOCK
        08 ABORT_QUEUE                   EWOULDBLOCK
        09 FUSED_FAIL                    EWOULDBLOCK
        0a FUSED_MISSING                 EWOULDBLOCK
        0b INVALID_NS                    EINVAL
        0c CMD_SEQ_ERROR                 EILSEQ
        0d SGL_INVALID_LAST              EINVAL
        0e SGL_INVALID_COUNT             EINVAL
        0f SGL_INVALID_DATA              EINVAL
        10 SGL_INVALID_METADATA          EINVAL
        11 SGL_INVALID_TYPE              EINVAL
        12 CMB_INVALID_USE               EINVAL
        13 PRP_INVALID_OFFSET            EINVAL
        14 AWU_EXCEEDED                  ENOSPC
        15 OP_DENIED                     EACCES
        16 SGL_INVALID_OFFSET            EINVAL
        18 HOSTID_FORMAT                 EIO
        19 KAT_EXPIRED                   EIO
        1a KAT_INVALID                   EINVAL
        1b CMD_ABORTED_PREMEPT           EIO
        1c SANITIZE_FAILED               EIO
        1d SANITIZE_IN_PROGRESS          EINPROGRESS
        1e SGL_INVALID_GRANULARITY       EINVAL
        1f CMD_IN_CMBQ_NOT_SUPP          EIO
        20 NS_WRITE_PROTECTED            EACCES
        21 CMD_INTERRUPTED               EIO
        22 TRAN_TPORT_ERROR              EIO
        23 PROHIBITED_BY_CMD_AND_FEAT    EIO
        24 ADMIN_CMD_MEDIA_NOT_READY     EACCES
        25 INVALID_KEY_TAG               EINVAL
        26 HOST_DISPERSED_NS_NOT_ENABLED EIO
        27 HOST_ID_NOT_INITIALIZED       EIO
        28 INCORRECT_KEY                 EINVAL
        29 FDP_DISABLED                  EIO
        2a INVALID_PLACEMENT_HANDLE_LIST EINVAL
        80 LBA_RANGE                     EREMOTEIO
        81 CAP_EXCEEDED                  ENOSPC
        82 NS_NOT_READY                  EACCES
        83 RESERVATION_CONFLICT          EACCES
        84 FORMAT_IN_PROGRESS            EINPROGRESS
        85 INVALID_VALUE_SIZE            EINVAL
        86 INVALID_KEY_SIZE              EINVAL
        87 KV_KEY_NOT_EXISTS             EIO
        88 UNRECOVERED_ERROR             EIO
        89 KEY_EXISTS                    EIO
    """),
    **_table(CMD_SPECIFIC, """
        00 CQ_INVALID                    EINVAL
        01 QID_INVALID                   EINVAL
        02 QUEUE_SIZE                    EINVAL
        03 ABORT_LIMIT                   EDQUOT
        04 ABORT_MISSING                 EWOULDBLOCK
        05 ASYNC_LIMIT                   EDQUOT
        06 FIRMWARE_SLOT                 EINVAL
        07 FIRMWARE_IMAGE                EINVAL
        08 INVALID_VECTOR                EINVAL
        09 INVALID_LOG_PAGE              EINVAL
        0a INVALID_FORMAT                EINVAL
        0b FW_NEEDS_CONV_RESET           ERESTART
        0c INVALID_QUEUE                 EINVAL
        0d FEATURE_NOT_SAVEABLE          EPERM
        0e FEATURE_NOT_CHANGEABLE        EPERM
        0f FEATURE_NOT_PER_NS            EPERM
        10 FW_NEEDS_SUBSYS_RESET         ERESTART
        11 FW_NEEDS_RESET                ERESTART
        12 FW_NEEDS_MAX_TIME             ERESTART
        13 FW_ACTIVATE_PROHIBITED        EPERM
        14 OVERLAPPING_RANGE             ENOSPC
        15 NS_INSUFFICIENT_CAP           EINVAL
        16 NS_ID_UNAVAILABLE             EINVAL
        18 NS_ALREADY_ATTACHED           EALREADY
        19 NS_IS_PRIVATE                 EPERM
        1a NS_NOT_ATTACHED               ENOSPC
        1b THIN_PROV_NOT_SUPP            EOPNOTSUPP
        1c CTRL_LIST_INVALID             EINVAL
        1d SELF_TEST_IN_PROGRESS         EINPROGRESS
        1e BP_WRITE_PROHIBITED           EPERM
        1f INVALID_CTRL_ID               EINVAL
        20 INVALID_SEC_CTRL_STATE        EINVAL
        21 INVALID_CTRL_RESOURCES        EINVAL
        22 INVALID_RESOURCE_ID           EINVAL
        23 PMR_SAN_PROHIBITED            EPERM
        24 ANA_GROUP_ID_INVALID          EINVAL
        25 ANA_ATTACH_FAILED             EIO
        26 INSUFFICIENT_CAP              EINVAL
        27 NS_ATTACHMENT_LIMIT_EXCEEDED  EDQUOT
        28 PROHIBIT_CMD_EXEC_NOT_SUPPORTED EOPNOTSUPP
        29 IOCS_NOT_SUPPORTED            EOPNOTSUPP
        2a IOCS_NOT_ENABLED              EIO
        2b IOCS_COMBINATION_REJECTED     EIO
        2c INVALID_IOCS                  EINVAL
        2d ID_UNAVAILABLE                EINVAL
        37 INVALID_CONTROLLER_DATA_QUEUE EINVAL
        38 NOT_ENOUGH_RESOURCES          ENOSPC
        39 CONTROLLER_SUSPENDED          EBUSY
        3a CONTROLLER_NOT_SUSPENDED      EIO
        3b CONTROLLER_DATA_QUEUE_FULL    ENOSPC
        80 BAD_ATTRIBUTES                EINVAL
        81 INVALID_PI                    EINVAL
        82 READ_ONLY                     EPERM
        83 CMD_SIZE_LIMIT_EXCEEDED       E2BIG
        85 INCOMPATIBLE_NS               EINVAL
        86 FAST_COPY_NOT_POSSIBLE        EIO
        87 OVERLAPPING_IO_RANGE          EINVAL
        89 INSUFFICIENT_RESOURCES        ENOSPC
        b6 ZNS_INVALID_OP_REQUEST        EINVAL
        b7 ZNS_ZRWA_RESOURCES_UNAVAILABLE ETOOMANYREFS
        b8 ZNS_BOUNDARY_ERROR            EIO
        b9 ZNS_FULL                      ENOSPC
        ba ZNS_READ_ONLY                 EROFS
        bb ZNS_OFFLINE                   EIO
        bc ZNS_INVALID_WRITE             EIO
        bd ZNS_TOO_MANY_ACTIVE           ETOOMANYREFS
        be ZNS_TOO_MANY_OPENS            ETOOMANYREFS
        bf ZNS_INVAL_TRANSITION          EINVAL
    """),
    **_table(MEDIA, """
        80 WRITE_FAULT                   EIO
        81 READ_ERROR                    EIO
        82 GUARD_CHECK                   EILSEQ
        83 APPTAG_CHECK                  EILSEQ
        84 REFTAG_CHECK                  EILSEQ
        85 COMPARE_FAILED                EILSEQ
        86 ACCESS_DENIED                 EACCES
        87 UNWRITTEN_BLOCK               ENODATA
        88 STORAGE_TAG_CHECK             EILSEQ
    """),
    **_table(PATH, """
        00 ANA_INTERNAL_PATH_ERROR       EIO
        01 ANA_PERSISTENT_LOSS           EIO
        02 ANA_INACCESSIBLE              EAGAIN
        03 ANA_TRANSITION                EAGAIN
        60 CTRL_PATH_ERROR               EIO
        70 HOST_PATH_ERROR               EIO
        71 CMD_ABORTED_BY_HOST           ETIMEDOUT
    """),
}

SUCCESS = 0
INVALID_OPCODE = make_status(GENERIC, 0x01, dnr=True)
INVALID_FIELD = make_status(GENERIC, 0x02, dnr=True)
DATA_XFER_ERROR = make_status(GENERIC, 0x04)
INTERNAL = make_status(GENERIC, 0x06)
ABORT_REQ = make_status(GENERIC, 0x07)
INVALID_NS = make_status(GENERIC, 0x0B, dnr=True)
CMD_SEQ_ERROR = make_status(GENERIC, 0x0C, dnr=True)
LBA_RANGE = make_status(GENERIC, 0x80, dnr=True)
INVALID_LOG_PAGE = make_status(CMD_SPECIFIC, 0x09, dnr=True)
INVALID_FORMAT = make_status(CMD_SPECIFIC, 0x0A, dnr=True)
FEATURE_NOT_SAVEABLE = make_status(CMD_SPECIFIC, 0x0D, dnr=True)
FEATURE_NOT_CHANGEABLE = make_status(CMD_SPECIFIC, 0x0E, dnr=True)
SELF_TEST_IN_PROGRESS = make_status(CMD_SPECIFIC, 0x1D, dnr=True)
FIRMWARE_SLOT = make_status(CMD_SPECIFIC, 0x06, dnr=True)
FIRMWARE_IMAGE = make_status(CMD_SPECIFIC, 0x07, dnr=True)
ASYNC_LIMIT = make_status(CMD_SPECIFIC, 0x05)
INVALID_CDQ = make_status(CMD_SPECIFIC, 0x37, dnr=True)
NOT_ENOUGH_RESOURCES = make_status(CMD_SPECIFIC, 0x38, dnr=True)
INVALID_IOCS = make_status(CMD_SPECIFIC, 0x2C, dnr=True)
# Zoned Namespace Command Set 1.1 Figure 26, by the spec's names
INVALID_ZONE_OPERATION_REQUEST = make_status(CMD_SPECIFIC, 0xB6, dnr=True)
ZONE_BOUNDARY_ERROR = make_status(CMD_SPECIFIC, 0xB8, dnr=True)
ZONE_IS_FULL = make_status(CMD_SPECIFIC, 0xB9, dnr=True)
ZONE_IS_READ_ONLY = make_status(CMD_SPECIFIC, 0xBA, dnr=True)
ZONE_IS_OFFLINE = make_status(CMD_SPECIFIC, 0xBB, dnr=True)
ZONE_INVALID_WRITE = make_status(CMD_SPECIFIC, 0xBC, dnr=True)
TOO_MANY_ACTIVE_ZONES = make_status(CMD_SPECIFIC, 0xBD, dnr=True)
TOO_MANY_OPEN_ZONES = make_status(CMD_SPECIFIC, 0xBE, dnr=True)
INVALID_ZONE_STATE_TRANSITION = make_status(CMD_SPECIFIC, 0xBF, dnr=True)
COMPARE_FAILED = make_status(MEDIA, 0x85, dnr=True)
HOST_PATH_ERROR = make_status(PATH, 0x70)
HOST_ABORTED = make_status(PATH, 0x71)
# What the host's own path gives a command it did not carry through, e.g. while the
# controller resets (Base 2.0 §4.2.3.1: retrying may succeed)
HOST_TRANSIENT = frozenset({HOST_PATH_ERROR, HOST_ABORTED})


def describe(status: int) -> Status:
    """Name and errno of a 15-bit status; unknown codes keep their numbers."""
    sct, sc = status >> SCT_SHIFT & SCT_MASK, status & SC_MASK
    known = STATUS.get((sct, sc))
    if known:
        return known
    prefix = "VENDOR" if sct == VENDOR else f"SCT{sct}"
    return Status(f"{prefix}_SC_{sc:#04x}", E.EIO)


CODE_MASK = SCT_MASK << SCT_SHIFT | SC_MASK     # SCT and SC: what a status means


def code(status: int) -> int:
    """The status without its DNR and More bits, to compare with the constants here."""
    return status & CODE_MASK


def errno_of(status: int) -> int:
    return 0 if code(status) == 0 else describe(status).errno
