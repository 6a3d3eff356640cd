"""Command builders: dword packing for the commands nvmefs sends itself."""

from __future__ import annotations

from .logs import NSID_ALL
from .queue import Command

# Admin opcodes (Figure 28)
OP_GET_LOG_PAGE, OP_IDENTIFY, OP_ABORT = 0x02, 0x06, 0x08
OP_SET_FEATURES, OP_GET_FEATURES, OP_ASYNC_EVENT = 0x09, 0x0A, 0x0C
OP_FW_COMMIT, OP_FW_DOWNLOAD, OP_SELF_TEST, OP_FORMAT = 0x10, 0x11, 0x14, 0x80
# NVM I/O opcodes (NVM Command Set Figure 18)
OP_FLUSH, OP_WRITE, OP_READ, OP_COMPARE, OP_WRITE_ZEROES, OP_DSM = 0x00, 0x01, 0x02, 0x05, 0x08, 0x09


def identify(cns: int, nsid: int = 0, cntid: int = 0, csi: int = 0) -> Command:
    """§5.17: CDW10 CNS 7:0, CNTID 31:16; CDW11 CSI 31:24."""
    return Command(OP_IDENTIFY, nsid=nsid, cdw10=cns | cntid << 16, cdw11=csi << 24)


def get_log_page(lid: int, length: int, offset: int = 0, nsid: int = NSID_ALL, lsp: int = 0,
                 lsi: int = 0, rae: bool = True, csi: int = 0) -> Command:
    """§5.16: NUMD is 0's based dwords split over CDW10/CDW11; LPO in CDW12/13."""
    if length <= 0 or length % 4:
        raise ValueError(f"log length {length} is not a positive multiple of 4")
    numd = length // 4 - 1
    return Command(OP_GET_LOG_PAGE, nsid=nsid,
                   cdw10=lid | (lsp & 0x7F) << 8 | int(rae) << 15 | (numd & 0xFFFF) << 16,
                   cdw11=numd >> 16 | lsi << 16, cdw12=offset & 0xFFFFFFFF,
                   cdw13=offset >> 32, cdw14=csi << 24)


def log_page_fields(cmd: Command) -> tuple[int, int, int, int, int]:
    """(lid, lsp, length, offset, lsi) of a Get Log Page command."""
    numd = (cmd.cdw10 >> 16) | (cmd.cdw11 & 0xFFFF) << 16
    return (cmd.cdw10 & 0xFF, cmd.cdw10 >> 8 & 0x7F, (numd + 1) * 4,
            cmd.cdw12 | cmd.cdw13 << 32, cmd.cdw11 >> 16)


def get_features(fid: int, sel: int = 0, nsid: int = 0, cdw11: int = 0) -> Command:
    """§5.27: CDW10 FID 7:0, SEL 10:8."""
    return Command(OP_GET_FEATURES, nsid=nsid, cdw10=fid | sel << 8, cdw11=cdw11)


def set_features(fid: int, cdw11: int, save: bool = False, nsid: int = 0,
                 cdw12: int = 0) -> Command:
    """§5.27: CDW10 FID 7:0, SV 31."""
    return Command(OP_SET_FEATURES, nsid=nsid, cdw10=fid | int(save) << 31, cdw11=cdw11,
                   cdw12=cdw12)


def rw(opcode: int, nsid: int, slba: int, nlb: int) -> Command:
    """Read/Write/Compare/Write Zeroes: SLBA in CDW10/11, NLB 0's based in CDW12 15:0."""
    if not 1 <= nlb <= 0x10000:
        raise ValueError(f"{nlb} blocks is outside 1..65536")
    return Command(opcode, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32, cdw12=nlb - 1)


def rw_fields(cmd: Command) -> tuple[int, int]:
    """(slba, nlb) of an LBA command."""
    return cmd.cdw10 | cmd.cdw11 << 32, (cmd.cdw12 & 0xFFFF) + 1
