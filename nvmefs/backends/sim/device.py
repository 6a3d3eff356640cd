"""The simulated controller's command set: state plus opcode -> handler tables.

Synchronous and deterministic: time comes from the `now` function it is given.
Handlers return a `Result` (status, DW0, data in), or `Media` where the command
touches a namespace's store: the store work (`Media.run`, which the controller
runs in a worker thread for a file-backed namespace) and what makes the result
of it (`Media.done`, back on the caller's thread). A failing status also adds
an Error Information log entry. The Commands Supported and Effects log is
built from the same tables, so it always matches what is implemented.

Every field a command carries is checked the way a controller checks it: a
value it cannot take is answered with a status (Invalid Field in Command and
the others the spec names), never an exception.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Union

from ...spec import events as E
from ...spec import features as F
from ...spec import identify as ID
from ...spec import logs as L
from ...spec import status as S
from ...spec.commands import (COPY_NR, COPY_RANGE_SIZE, CSI, CSI_NVM, CSI_ZNS, DESFMT, FID_CDQ,
                              LOG_CSI, NSID_ALL, OP_ASYNC_EVENT, SDLBA, SLBA, ZRA, ZRA_PARTIAL,
                              ZRASF, ZSA, ZSA_SELECT_ALL, log_page_fields, rw_fields,
                              zone_recv_len)
from ...spec.logs import CCC, CSUPP, LBCC, NCC, NIC
from ...spec import iocs
from ...spec.opcodes import ADMIN, IO
from ...spec.queue import Command
from .cdq import MAX_CDQS, CdqEngine
from .config import SimConfig
from .storage import FileStore, MemoryStore
from .zones import ZoneSet


class Result(NamedTuple):
    status: int
    dw0: int = 0
    data: bytes = b""
    metadata: bytes = b""       # a separate metadata buffer's contents (Read of MSET 0)
    dw1: int = 0                # completion dword 1 (Zone Append: the LBA's upper half)


class Media(NamedTuple):
    """A command's work on namespace media, and how it completes."""
    run: Callable[[], Any]              # the store I/O; may raise OSError (blocking for files)
    done: Callable[[Any], Result]       # the result from what `run` returned
    failed: int                         # the status if `run` raised OSError


Outcome = Union[Result, Media]
Handler = Callable[[Command, bytes, int], Outcome]

# LBA formats: LBADS (512 and 4096 bytes) and, in LBA_MS, metadata bytes per block; 0 and
# 1 have none, then each data size with 8, 16 and 64 bytes of metadata
LBA_FORMATS = (9, 12, 9, 9, 9, 12, 12, 12)
LBA_MS = (0, 0, 8, 16, 64, 8, 16, 64)
MC_EXTENDED, MC_SEPARATE = 1 << 0, 1 << 1     # Identify Namespace MC: metadata capabilities
MAX_NAMESPACES = 32
ERROR_ENTRIES = 64
SELF_TEST_SECONDS = {1: 2.0, 2: 10.0}      # short, extended (scaled down from minutes)
TELEMETRY_DALB = (7, 63, 2047)             # last block of data areas 1..3: 1 MiB in all
CSE_ONE_NS = 1 << 16
MAX_FW_IMAGE = 16 << 20                    # bytes a firmware download may add up to

# Statuses spec.status has no name for (Base 2.0 Figures 96 and 98).
FEATURE_NOT_PER_NS = S.make_status(S.CMD_SPECIFIC, 0x0F, dnr=True)
OVERLAPPING_RANGE = S.make_status(S.CMD_SPECIFIC, 0x14, dnr=True)
WRITE_FAULT = S.make_status(S.MEDIA, 0x80)
READ_ERROR = S.make_status(S.MEDIA, 0x81)     # Unrecovered Read Error
DSM_RANGE = struct.Struct("<IIQ")    # Dataset Management range (NVM Figure 43)
SIZE_LIMIT = S.make_status(S.CMD_SPECIFIC, 0x83, dnr=True)    # Copy over MCL, MSSRL or MSRC

# Dword fields spec has no helper for.
# Format NVM CDW10 (Base 2.0 Figure 300): LBAF 3:0, MSET 4, PI 7:5, PIL 8, SES 11:9, LBAFU 13:12
FORMAT_MSET_SHIFT, FORMAT_PI_SHIFT, FORMAT_SES_SHIFT, FORMAT_LBAFU_SHIFT = 4, 5, 9, 12
SES_USER_DATA_ERASE, SES_CRYPTO_ERASE = 1, 2
# Firmware Commit CDW10 (Figure 195): FS 2:0, CA 5:3, BPID 31
FW_CA_REPLACE, FW_CA_REPLACE_ACTIVATE, FW_CA_ACTIVATE, FW_CA_REPLACE_NOW = 0, 1, 2, 3
# Device Self-test CDW10 STC 3:0 (Figure 300): 1 short, 2 extended, Fh abort
STC_ABORT = 0xF
# Dataset Management CDW11 (NVM Figure 40): AD, deallocate
DSM_AD = 1 << 2
# Timestamp data (Figure 337) byte 6: Synch bit 0, Timestamp Origin bits 3:1
TIMESTAMP_MAX = 1 << 48
ORIGIN_RESET, ORIGIN_SET_FEATURES = 0, 1
# APST entry (Figure 332): ITPS 7:3, ITPT 31:8; bits 2:0 and 63:32 reserved
APST_RESERVED = 0x7 | 0xFFFFFFFF << 32
# Temperature Threshold (Figure 326): THSEL 0 over, 1 under
THSEL_OVER, THSEL_UNDER = 0, 1
# Power Management (Figure 328): WH 0 none, 1 extended idle, 2 heavy sequential writes
MAX_WORKLOAD_HINT = 2
NPSS = 2                                   # power states 0..2, the last non-operational
NOPS_STATES = {2}                          # the PSD flagged PSD_FLAG_NOPS in id_ctrl
AERL = 3                                   # 0's based: 4 Asynchronous Event Requests
EVENTS_KEPT = 16                           # events waiting for an Asynchronous Event Request
# Asynchronous Event Configuration bit (Figure 330) that enables an event (type, info)
AEC_BIT = {(E.TYPE_SMART, E.SMART_SPARE): 0, (E.TYPE_SMART, E.SMART_TEMPERATURE): 1,
           (E.TYPE_SMART, E.SMART_RELIABILITY): 2, (E.TYPE_NOTICE, E.NOTICE_NS_CHANGED): 8,
           (E.TYPE_NOTICE, E.NOTICE_FW_ACTIVATION): 9}
# the event type a log page read with RAE clear lets the controller report again
LOG_CLEARS = {0x01: E.TYPE_ERROR, 0x02: E.TYPE_SMART, 0x03: E.TYPE_NOTICE, 0x04: E.TYPE_NOTICE}
# Copy source range entry (format 0h): SLBA at 8, NLB (0's based) at 16; the limits
# Identify Namespace reports
MSSRL, MCL, MSRC = 0x8000, 0x40000, 127


def ok(data: bytes = b"", dw0: int = 0) -> Result:
    return Result(S.SUCCESS, dw0, data)


def fail(status: int) -> Result:
    return Result(status)


def lba_format(block: int, ms: int) -> int:
    """The LBA format index of a data size and metadata size."""
    return next(i for i, (ds, m) in enumerate(zip(LBA_FORMATS, LBA_MS))
                if 1 << ds == block and m == ms)


@dataclass
class Namespace:
    """A namespace on its store: every block's data from offset 0, then (in formats
    with metadata) every block's metadata, as QEMU keeps them; MSET decides only how
    metadata travels, in the data buffer (extended LBAs) or in a buffer of its own."""
    nsid: int
    blocks: int
    lbaf: int
    store: MemoryStore | FileStore
    extended: bool = False      # FLBAS bit 4 (MSET 1): each block's metadata ends its data
    zone_bytes: int = 0         # sim:zoned: a zoned namespace's zone size (0: not zoned)
    zones: ZoneSet | None = None

    def __post_init__(self) -> None:
        self.rezone()

    def rezone(self) -> None:
        """Every zone empty (a new namespace, or a format), sized in the format's blocks."""
        self.zones = ZoneSet(self.blocks, self.zone_bytes // self.block_size) \
            if self.zone_bytes else None

    @property
    def csi(self) -> int:
        return CSI_ZNS if self.zone_bytes else CSI_NVM

    @property
    def block_size(self) -> int:
        return 1 << LBA_FORMATS[self.lbaf]

    @property
    def ms(self) -> int:
        return LBA_MS[self.lbaf]

    def reformat(self, lbaf: int, extended: bool) -> None:
        self.lbaf, self.extended = lbaf, extended
        self.blocks = self.store.size // (self.block_size + self.ms)
        self.rezone()

    def host_lengths(self, nlb: int) -> tuple[int, int]:
        """Bytes of `nlb` blocks in the host's data buffer and in its metadata buffer."""
        if self.extended:
            return nlb * (self.block_size + self.ms), 0
        return nlb * self.block_size, nlb * self.ms

    def metadata_at(self, slba: int, nlb: int) -> tuple[int, int]:
        """Store offset and length of the metadata of `nlb` blocks from `slba`."""
        return self.blocks * self.block_size + slba * self.ms, nlb * self.ms

    def erase(self, slba: int, nlb: int) -> None:
        """Zero `nlb` blocks from `slba`, their metadata too (media work: Write Zeroes,
        Deallocate, a zone reset)."""
        self.store.zero(slba * self.block_size, nlb * self.block_size)
        if self.ms:
            self.store.zero(*self.metadata_at(slba, nlb))

    def from_host(self, nlb: int, data: bytes, metadata: bytes
                  ) -> tuple[bytes | memoryview, bytes | memoryview] | None:
        """The data and metadata of `nlb` blocks as kept, from the host's data and
        metadata buffers; None if they are too short."""
        block, ms = self.block_size, self.ms
        if self.extended and ms:
            unit = block + ms
            if len(data) < nlb * unit:
                return None
            view = memoryview(data)
            return (b"".join([view[i:i + block] for i in range(0, nlb * unit, unit)]),
                    b"".join([view[i + block:i + unit] for i in range(0, nlb * unit, unit)]))
        if len(data) < nlb * block or len(metadata) < nlb * ms:
            return None
        return memoryview(data)[:nlb * block], memoryview(metadata)[:nlb * ms]

    def to_host(self, data: bytes, metadata: bytes) -> tuple[bytes, bytes]:
        """The host's data and metadata buffers for blocks kept as `data`, `metadata`."""
        block, ms = self.block_size, self.ms
        if not (self.extended and ms):
            return data, metadata
        return b"".join([data[i * block:(i + 1) * block] + metadata[i * ms:(i + 1) * ms]
                         for i in range(len(data) // block)]), b""


@dataclass(frozen=True)
class Op:
    handler: str          # SimDevice method name
    effects: int = 0      # beyond CSUPP, reported in the effects log
    metadata: bool = False  # moves a separate metadata buffer (its handler takes it)


class SimDevice:
    ADMIN_OPS = {
        0x02: Op("get_log_page"), 0x06: Op("identify"), 0x08: Op("abort"),
        0x09: Op("set_features", CCC), 0x0A: Op("get_features"),
        0x10: Op("fw_commit", CCC | NIC | NCC), 0x11: Op("fw_download"),
        0x14: Op("device_self_test"), 0x3D: Op("track_send", CCC), 0x45: Op("controller_data_queue"),
        0x80: Op("format_nvm", LBCC | NCC | NIC | CSE_ONE_NS),
    }
    log_csi = CSI_NVM       # CDW14 CSI of the Get Log Page being answered
    LOGS = {0x00: "log_supported", 0x01: "log_error", 0x02: "log_smart", 0x03: "log_fw_slot",
            0x04: "log_changed_ns", 0x05: "log_effects", 0x06: "log_self_test",
            0x07: "log_telemetry_host", 0x08: "log_telemetry_ctrl"}
    # Identify Controller fields that decide which features exist (spec.features)
    CAPS = dict(vwc=0x7, apsta=1, hmpre=0, oncs=0x1DD, kas=0)     # ONCS bit 8: Copy
    IO_OPS = {
        0x00: Op("flush"), 0x01: Op("write", LBCC, True), 0x02: Op("read", metadata=True),
        0x05: Op("compare", metadata=True),
        0x08: Op("write_zeroes", LBCC), 0x09: Op("dsm", LBCC), 0x0C: Op("verify"),
        0x19: Op("copy", LBCC),
    }
    # a zoned namespace's (ZNS 1.1 Figure 20): writes at the write pointer only, no
    # Dataset Management or Copy
    ZNS_OPS = {
        0x00: Op("flush"), 0x01: Op("zoned_write", LBCC, True), 0x02: Op("read", metadata=True),
        0x05: Op("compare", metadata=True), 0x08: Op("zoned_write_zeroes", LBCC),
        0x0C: Op("verify"), 0x79: Op("zone_send", LBCC), 0x7A: Op("zone_receive"),
        0x7D: Op("zone_append", LBCC, True),
    }

    def __init__(self, cfg: SimConfig, now: Callable[[], float], index: int = 0,
                 stores: list[MemoryStore | FileStore] | None = None):
        """`stores`: one per namespace, as `open_stores` makes them (made here if None)."""
        self.cfg = cfg
        self.now = now
        self.index = index
        self.born = now()
        self.namespaces: dict[int, Namespace] = {}
        lbaf = lba_format(cfg.lba, cfg.ms)
        zoned = cfg.zoned_nsids()
        if stores is None:
            stores = open_stores(cfg, index)
        for nsid, store in enumerate(stores, 1):
            self.namespaces[nsid] = Namespace(nsid, cfg.size // (cfg.lba + cfg.ms), lbaf, store,
                                              bool(cfg.mset), cfg.zoned * (nsid in zoned))
        self.temperature = cfg.temperature
        self.counters = dict(bytes_read=0, bytes_written=0, reads=0, writes=0, busy=0.0)
        self.errors: deque[bytes] = deque(maxlen=ERROR_ENTRIES)
        self.error_count = 0
        self.changed_ns: list[int] = []
        self.firmware = {1: cfg.firmware}           # slot -> revision
        self.active_slot, self.next_slot = 1, 0
        self.fw_image = bytearray()
        self.test_running: tuple[int, float, int] | None = None     # (code, start, nsid)
        self.self_test_results: deque[dict[str, int]] = deque(maxlen=20)
        self.telemetry_gen = 0
        self._telemetry_cache: tuple[bool, int, bytes] = (False, -1, b"")
        self.features = {fid: self._feature_defaults(fid) for fid, feat in F.FEATURES.items()
                         if feat.supported(self.CAPS)}
        self.saved = {fid: dict(v) for fid, v in self.features.items()}
        # the last commands that reached the controller, for tests (sim:command_log=N)
        self.command_log: deque[tuple[str, Command]] = deque(maxlen=cfg.command_log)
        self._id_ctrl: tuple[tuple[str, int], bytes] = (("", -1), b"")
        self._null = Result(S.SUCCESS, 0, b"")      # sim:null=1's result, for the last size
        # asynchronous events (§5.2): (DW0, DW1) waiting for an Asynchronous Event Request;
        # the types reported and not yet cleared by a log page read with RAE clear
        self.events: deque[tuple[int, int]] = deque(maxlen=EVENTS_KEPT)
        self.masked: set[int] = set()
        self.events_masked = 0
        self.on_event: Callable[[], None] = lambda: None
        self.cdq = CdqEngine(index, self.raise_event)

    @property
    def file_backed(self) -> bool:
        """Whether store I/O is disk I/O (to be done off the event loop)."""
        return bool(self.cfg.path)

    @property
    def max_transfer(self) -> int:
        """MDTS in bytes; 0: no limit."""
        return 4096 << self.cfg.mdts if self.cfg.mdts else 0

    def close(self) -> None:
        for ns in self.namespaces.values():
            ns.store.close()

    # ------------------------------------------------------------------ dispatch

    def submit(self, queue: str, cmd: Command, data_out: bytes, data_in_len: int,
               metadata_out: bytes = b"", metadata_in_len: int = 0) -> Outcome:
        """Start one command: its result, or the media work it needs (then
        `Media.done`, or `Media.failed`, and `complete` finish it). A separate
        metadata buffer goes to the commands that move one."""
        self.log_command(queue, cmd)
        if queue == IO and self.cfg.null:
            return self.null_io(data_in_len)
        op = (self.ADMIN_OPS if queue == ADMIN else self.io_ops(cmd.nsid)).get(cmd.opcode)
        if op is None:
            return fail(S.INVALID_OPCODE)
        limit = self.max_transfer
        if limit and max(len(data_out), data_in_len) > limit:
            return fail(S.INVALID_FIELD)
        if metadata_out or metadata_in_len:
            if not op.metadata:
                return fail(S.INVALID_FIELD)
            return getattr(self, op.handler)(cmd, data_out, data_in_len, metadata_out,
                                             metadata_in_len)
        return getattr(self, op.handler)(cmd, data_out, data_in_len)

    def null_io(self, data_in_len: int) -> Result:
        """sim:null=1: any I/O command succeeds at once, data in all zeros; no store,
        counter or check is touched (the result of the last size is shared: it is
        immutable)."""
        if len(self._null.data) != data_in_len:
            self._null = Result(S.SUCCESS, 0, bytes(data_in_len))
        return self._null

    def complete(self, queue: str, cmd: Command, res: Result, data_in_len: int,
                 metadata_in_len: int = 0) -> Result:
        """The completion of a started command; data in is exactly `data_in_len`
        bytes (the host buffer), metadata in `metadata_in_len`; a failure goes to the
        error log."""
        if res.status & 0x7FF:            # SCT and SC: not a success
            self.record_error(queue, cmd, res.status)
            return Result(res.status, res.dw0, bytes(data_in_len), bytes(metadata_in_len))
        if len(res.data) != data_in_len:
            res = res._replace(data=res.data[:data_in_len].ljust(data_in_len, b"\0"))
        if len(res.metadata) != metadata_in_len:
            res = res._replace(metadata=res.metadata[:metadata_in_len].ljust(metadata_in_len,
                                                                             b"\0"))
        return res

    def execute(self, queue: str, cmd: Command, data_out: bytes, data_in_len: int,
                metadata_out: bytes = b"", metadata_in_len: int = 0) -> Result:
        """Run one command at once, media work included (blocking for a file store)."""
        res = self.submit(queue, cmd, data_out, data_in_len, metadata_out, metadata_in_len)
        if isinstance(res, Media):
            try:
                out = res.run()
            except OSError:
                res = fail(res.failed)
            else:
                res = res.done(out)
        return self.complete(queue, cmd, res, data_in_len, metadata_in_len)

    def log_command(self, queue: str, cmd: Command) -> None:
        self.command_log.append((queue, cmd))

    def controller_reset(self) -> None:
        """Controller Level Reset: features return to their saved values (§5.27.1),
        except the timestamp, which keeps counting; pending firmware activates."""
        self.activate_pending_firmware()
        self.cdq.reset()
        self.events.clear()
        self.masked.clear()
        timestamp = self.features.get(0x0E)
        self.features = {fid: dict(v) for fid, v in self.saved.items()}
        if timestamp is not None:
            self.features[0x0E] = timestamp

    # ------------------------------------------------------------------ asynchronous events

    def raise_event(self, kind: int, info: int, lid: int, dw1: int = 0) -> None:
        """An event for the next Asynchronous Event Request (§5.2): dropped unless the
        Asynchronous Event Configuration enables it, and while its type is masked
        (reported, and its log page not yet read with RAE clear). One-shot events
        (TP4159) are neither configured nor masked."""
        if kind != E.TYPE_ONE_SHOT:
            bit = AEC_BIT.get((kind, info))
            if bit is not None and not self.features[0x0B]["value"] >> bit & 1:
                return
            if kind in self.masked:
                self.events_masked += 1
                return
            self.masked.add(kind)
        self.events.append((E.encode_aen(kind, info, lid), dw1))
        self.on_event()

    def set_temperature(self, kelvin: int) -> None:
        self.temperature = kelvin
        self._check_temperature()

    def _check_temperature(self) -> None:
        """Past a threshold of feature 04h: a SMART / Health temperature event (QEMU
        checks at every change of temperature or threshold, as here)."""
        t = self.features[0x04]
        if self.temperature >= t["over"] or self.temperature < t["under"]:
            self.raise_event(E.TYPE_SMART, E.SMART_TEMPERATURE, 0x02)

    def record_error(self, queue: str, cmd: Command, status: int) -> None:
        self.error_count += 1
        lba = rw_fields(cmd)[0] if queue == IO else 0
        self.errors.appendleft(L.encode_error_entry(
            self.error_count, 0 if queue == ADMIN else 1, cmd.cid, status, cmd.nsid, cmd.opcode, lba))

    # ------------------------------------------------------------------ identify

    def id_ctrl(self) -> bytes:
        fr = self.firmware[self.active_slot]
        tnvmcap = sum(ns.blocks * ns.block_size for ns in self.namespaces.values())
        if self._id_ctrl[0] != (fr, tnvmcap):      # encoding is slow: keep it while it holds
            self._id_ctrl = ((fr, tnvmcap), self._encode_id_ctrl(fr, tnvmcap))
        return self._id_ctrl[1]

    def _encode_id_ctrl(self, fr: str, tnvmcap: int) -> bytes:
        c = self.cfg
        return ID.encode_id_ctrl(dict(
            vid=0, ssvid=0, sn=c.serial, mn=c.model, fr=fr, rab=6, ieee=0, cmic=0, mdts=c.mdts,
            cntlid=self.index, ver=0x20000, oaes=0x300, cntrltype=1,
            oacs=0x816, acl=3, aerl=AERL, frmw=0x16, lpa=0x2E, elpe=ERROR_ENTRIES - 1, npss=2,
            trattr=0x02, mcudmq=MAX_CDQS, mnsudmq=MAX_CDQS, mcmr=1,   # TP4159; OACS bit 11
            avscc=1, wctemp=343, cctemp=353, mtfa=0, edstt=1,
            tnvmcap=tnvmcap, sqes=0x66, cqes=0x44, nn=MAX_NAMESPACES,
            subnqn=f"nqn.2024-01.io.nvmefs:sim:{c.serial}", **self.CAPS),
            psds=[dict(mp=900, enlat=0, exlat=0),
                  dict(mp=500, enlat=10, exlat=10, rrt=1, rrl=1, rwt=1, rwl=1),
                  dict(mp=200, flags=ID.PSD_FLAG_NOPS, enlat=2000, exlat=2000, rrt=2, rrl=2,
                       rwt=2, rwl=2)])

    def id_ns(self, ns: Namespace) -> bytes:
        digest = hashlib.sha256(f"{self.cfg.serial}/{ns.nsid}".encode()).digest()
        return ID.encode_id_ns(dict(
            nsze=ns.blocks, ncap=ns.blocks, nuse=ns.blocks, nlbaf=len(LBA_FORMATS) - 1,
            flbas=ns.lbaf & 0xF | ID.FLBAS_EXTENDED * ns.extended | ns.lbaf >> 4 << 5,
            mc=MC_EXTENDED | MC_SEPARATE, dlfeat=1, nvmcap=ns.blocks * ns.block_size,
            mssrl=MSSRL, mcl=MCL, msrc=MSRC,
            nguid=digest[:16].hex(), eui64=digest[16:24].hex()),
            [dict(ds=ds, ms=ms) for ds, ms in zip(LBA_FORMATS, LBA_MS)])

    def identify(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        cns = cmd.cdw10 & 0xFF
        if cns == ID.CNS_CTRL:
            return ok(self.id_ctrl())
        if cns == ID.CNS_NS_ACTIVE_LIST:
            if cmd.nsid >= 0xFFFFFFFE:
                return fail(S.INVALID_NS)
            return ok(ID.encode_ns_list([n for n in self.namespaces if n > cmd.nsid]))
        if cns == ID.CNS_NS:
            ns = self.namespaces.get(cmd.nsid)
            if ns:
                return ok(self.id_ns(ns))
            # an inactive NSID within NN returns zeroes; anything else is invalid
            return ok(bytes(ID.IDENTIFY_SIZE)) if 1 <= cmd.nsid <= MAX_NAMESPACES else fail(S.INVALID_NS)
        if cns == ID.CNS_NS_DESC_LIST:
            ns = self.namespaces.get(cmd.nsid)
            if not ns:
                return fail(S.INVALID_NS)
            d = ID.decode_id_ns(self.id_ns(ns))
            # NIDT 1 EUI64 (8 bytes), 2 NGUID (16 bytes), 4 CSI (1 byte): Figure 279
            return ok(iocs.encode_ns_descs([
                (iocs.NIDT_EUI64, bytes.fromhex(d["eui64"])),
                (iocs.NIDT_NGUID, bytes.fromhex(d["nguid"])), (iocs.NIDT_CSI, bytes([ns.csi]))]))
        if cns in (ID.CNS_NS_CS, ID.CNS_CTRL_CS):
            return self.identify_cs(cns, cmd)
        return fail(S.INVALID_FIELD)

    # ------------------------------------------------------------------ log pages

    def get_log_page(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        lid, lsp, length, offset, _ = log_page_fields(cmd)
        rae = bool(cmd.cdw10 >> 15 & 1)
        if lid not in self.LOGS:
            return fail(S.INVALID_LOG_PAGE)
        if offset % 4:
            return fail(S.INVALID_FIELD)
        self.log_csi = LOG_CSI.get(cmd)     # the command set a command set specific page is of
        data = getattr(self, self.LOGS[lid])(lsp, rae, cmd.nsid)
        if not rae:
            self.masked.discard(LOG_CLEARS.get(lid))
        if offset >= len(data) and offset:
            return fail(S.INVALID_FIELD)
        return ok(data[offset:offset + length])

    def log_supported(self, lsp: int, rae: bool, nsid: int) -> bytes:
        return L.encode_supported_logs(list(self.LOGS))

    def log_error(self, lsp: int, rae: bool, nsid: int) -> bytes:
        return b"".join(self.errors).ljust(ERROR_ENTRIES * 64, b"\0")

    def log_smart(self, lsp: int, rae: bool, nsid: int) -> bytes:
        c = self.counters
        warning = L.CW_TEMPERATURE if self.temperature >= self.features[0x04]["over"] else 0
        return bytes(L.SMART.encode(dict(
            critical_warning=warning, temperature=self.temperature, avail_spare=100,
            spare_thresh=10, percent_used=0,
            data_units_read=math.ceil(c["bytes_read"] / 512_000),
            data_units_written=math.ceil(c["bytes_written"] / 512_000),
            host_read_commands=c["reads"], host_write_commands=c["writes"],
            controller_busy_time=int(c["busy"] // 60), power_cycles=1,
            power_on_hours=int((self.now() - self.born) // 3600),
            num_err_log_entries=self.error_count, temperature_sensor_1=self.temperature)))

    def log_fw_slot(self, lsp: int, rae: bool, nsid: int) -> bytes:
        return L.encode_fw_slot(self.active_slot | self.next_slot << 4, self.firmware)

    def log_changed_ns(self, lsp: int, rae: bool, nsid: int) -> bytes:
        data = b"".join(n.to_bytes(4, "little") for n in self.changed_ns).ljust(4096, b"\0")
        if not rae:
            self.changed_ns.clear()
        return data

    def log_effects(self, lsp: int, rae: bool, nsid: int) -> bytes:
        return L.encode_effects({OP_ASYNC_EVENT: CSUPP,     # the queue layer holds these
                                 **{o: CSUPP | op.effects for o, op in self.ADMIN_OPS.items()}},
                                {o: CSUPP | op.effects
                                 for o, op in self.io_ops_of(self.log_csi).items()})

    def log_self_test(self, lsp: int, rae: bool, nsid: int) -> bytes:
        self._finish_self_test()
        current, done = 0, 0
        if self.test_running:
            code, start, _ = self.test_running
            current = code
            done = min(99, int((self.now() - start) * 100 / SELF_TEST_SECONDS[code]))
        return L.encode_self_test(current, done, list(self.self_test_results))

    def log_telemetry_host(self, lsp: int, rae: bool, nsid: int) -> bytes:
        if lsp & L.LSP_TELEMETRY_CREATE:
            self.telemetry_gen = (self.telemetry_gen + 1) & 0xFF
        return self._telemetry(host=True)

    def log_telemetry_ctrl(self, lsp: int, rae: bool, nsid: int) -> bytes:
        return self._telemetry(host=False)

    def _telemetry(self, host: bool) -> bytes:
        """Header plus data areas whose every block names the generation and block
        number, so a reader can check it got one consistent capture at the right offset."""
        gen = self.telemetry_gen if host else 0
        if self._telemetry_cache[:2] == (host, gen):
            return self._telemetry_cache[2]
        dalb = TELEMETRY_DALB if host else (0, 0, 0)
        header = L.TELEMETRY.encode(dict(lpi=0x07 if host else 0x08, dalb1=dalb[0],
                                         dalb2=dalb[1], dalb3=dalb[2], hostdgn=gen))
        pattern = bytes(range(256)) * 3
        blocks = [bytes(header)]
        for block in range(1, dalb[2] + 1):
            text = f"nvmefs-sim telemetry gen={gen} block={block}\n".encode()
            blocks.append(text + pattern[block % 256:][:L.TELEMETRY_BLOCK - len(text)])
        self._telemetry_cache = (host, gen, b"".join(blocks))
        return self._telemetry_cache[2]

    # ------------------------------------------------------------------ features

    def _feature_defaults(self, fid: int) -> dict[str, Any]:
        return {0x01: dict(value=0x03), 0x02: dict(value=0), 0x04: dict(value=343, over=343, under=0),
                0x05: dict(value=0), 0x06: dict(value=1), 0x07: dict(value=63 | 63 << 16),
                0x08: dict(value=0), 0x0B: dict(value=0), 0x0C: dict(value=0, data=bytes(256)),
                0x0E: dict(value=0, stamp=0, at=self.now(), origin=ORIGIN_RESET)}[fid]

    @staticmethod
    def _saveable(fid: int) -> bool:
        return fid != 0x0E          # the timestamp is a clock, not a setting

    @staticmethod
    def _changeable(fid: int) -> bool:
        return fid != 0x07          # queues are allocated once

    def _feature_ns(self, fid: int, nsid: int, setting: bool) -> int:
        """The status the NSID gives a Get/Set Features of `fid` (0: fine). One value
        serves every namespace of a namespace specific feature; 0h and FFFFFFFFh
        name them all."""
        if nsid in (0, NSID_ALL):
            return S.SUCCESS
        if F.FEATURES[fid].ns_specific:
            return S.SUCCESS if nsid in self.namespaces else S.INVALID_NS
        if setting:
            return FEATURE_NOT_PER_NS
        return S.SUCCESS if 1 <= nsid <= MAX_NAMESPACES else S.INVALID_NS

    def _timestamp(self, value: dict[str, Any]) -> bytes:
        """Timestamp data (Figure 337): milliseconds, counting on from when it was
        set (wrapping at 48 bits, as a counter of that width does), and the origin."""
        ms = (value["stamp"] + int((self.now() - value["at"]) * 1000)) % TIMESTAMP_MAX
        return ms.to_bytes(6, "little") + bytes([value["origin"] << 1, 0])

    def get_features(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        fid, sel = cmd.cdw10 & 0xFF, cmd.cdw10 >> 8 & 0x7
        if fid == FID_CDQ:
            status, dw0, data = self.cdq.get_feature(cmd)
            return Result(status, dw0, data)
        if fid not in self.features or sel > F.SEL_SUPPORTED:
            return fail(S.INVALID_FIELD)
        st = self._feature_ns(fid, cmd.nsid, setting=False)
        if st:
            return fail(st)
        feat = F.FEATURES[fid]
        if sel == F.SEL_SUPPORTED:
            caps = (F.CAP_SAVEABLE if self._saveable(fid) else 0) \
                | (F.CAP_CHANGEABLE if self._changeable(fid) else 0) \
                | (F.CAP_NS_SPECIFIC if feat.ns_specific else 0)
            return ok(dw0=caps)
        if sel == F.SEL_SAVED and not self._saveable(fid):
            sel = F.SEL_DEFAULT     # a feature that cannot be saved reports its default
        value = {F.SEL_CURRENT: self.features, F.SEL_SAVED: self.saved}[sel][fid] \
            if sel != F.SEL_DEFAULT else self._feature_defaults(fid)
        if fid == 0x04:     # TMPSEL/THSEL pick the threshold (Figure 326); only the composite
            tmpsel, thsel = cmd.cdw11 >> 16 & 0xF, cmd.cdw11 >> 20 & 0x3
            if tmpsel or thsel > THSEL_UNDER:
                return fail(S.INVALID_FIELD)
            which = "under" if thsel == THSEL_UNDER else "over"
            return ok(dw0=value[which] | (cmd.cdw11 & 0x3F0000))
        if fid == 0x0E:
            return ok(self._timestamp(value))
        return ok(value.get("data", b""), dw0=value["value"])

    @staticmethod
    def _defined_bits(fid: int) -> int:
        """CDW11 bits the feature defines (spec.features); the rest are reserved."""
        mask = 0
        for f in F.FEATURES[fid].fields:
            mask |= ((1 << f.width) - 1) << f.lo
        return mask

    def _check_feature(self, fid: int, cdw11: int, data: bytes) -> int:
        """The status a Set Features value gets (0: it can be set)."""
        if cdw11 & ~self._defined_bits(fid):
            return S.INVALID_FIELD
        bits = {f.name: f.get(cdw11) for f in F.FEATURES[fid].fields}
        if fid == 0x02 and (bits["ps"] > NPSS or bits["wh"] > MAX_WORKLOAD_HINT):
            return S.INVALID_FIELD
        if fid == 0x04 and (bits["tmpsel"] or bits["thsel"] > THSEL_UNDER or bits["tmpthh"]):
            return S.INVALID_FIELD      # one sensor (composite), no hysteresis (TMPTHHA 0)
        if fid == 0x05 and bits["dulbe"]:
            return S.INVALID_FIELD      # the namespaces do not report DAE (NSFEAT bit 2)
        if fid == 0x07 and 0xFFFF in (bits["nsqa"], bits["ncqa"]):
            return S.INVALID_FIELD      # 65535 queues is not a request (Figure 329)
        if fid == 0x0C:
            for i in range(0, 256, 8):
                entry = int.from_bytes(data[i:i + 8], "little")
                itps, itpt = entry >> 3 & 0x1F, entry >> 8 & 0xFFFFFF
                if entry & APST_RESERVED or (itpt and itps not in NOPS_STATES):
                    return S.INVALID_FIELD
        return S.SUCCESS

    def set_features(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        fid, save = cmd.cdw10 & 0xFF, bool(cmd.cdw10 >> 31)
        if fid == FID_CDQ:
            return fail(self.cdq.set_feature(cmd))
        if fid not in self.features:
            return fail(S.INVALID_FIELD)
        st = self._feature_ns(fid, cmd.nsid, setting=True)
        if st:
            return fail(st)
        if save and not self._saveable(fid):
            return fail(S.FEATURE_NOT_SAVEABLE)
        need = F.FEATURES[fid].data_len
        if len(data_out) < need:
            return fail(S.DATA_XFER_ERROR)
        data = bytes(data_out[:need])
        st = self._check_feature(fid, cmd.cdw11, data)
        if st:
            return fail(st)
        value = dict(self.features[fid])
        if fid == 0x07:     # allocation is fixed once queues exist: report what is allocated
            return ok(dw0=value["value"])
        if fid == 0x04:
            thsel = cmd.cdw11 >> 20 & 0x3
            value["under" if thsel == THSEL_UNDER else "over"] = cmd.cdw11 & 0xFFFF
            value["value"] = value["over"]
        elif fid == 0x0E:   # bytes 6..7 (Synch, Origin) are the controller's to report
            value.update(stamp=int.from_bytes(data[:6], "little"), at=self.now(),
                         origin=ORIGIN_SET_FEATURES)
        else:
            value["value"] = cmd.cdw11
            if need:
                value["data"] = data
        self.features[fid] = value
        if save:
            self.saved[fid] = dict(value)
        if fid == 0x04:
            self._check_temperature()
        return ok(dw0=0)

    # ------------------------------------------------------------------ firmware, self-test, format

    def fw_download(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        numd, offset = cmd.cdw10 + 1, cmd.cdw11 * 4
        if len(data_out) != numd * 4:
            return fail(S.INVALID_FIELD)
        if offset == 0:
            self.fw_image = bytearray()
        if offset != len(self.fw_image):
            return fail(OVERLAPPING_RANGE)
        if offset + len(data_out) > MAX_FW_IMAGE:
            return fail(S.INVALID_FIELD)
        self.fw_image += data_out
        return ok()

    @staticmethod
    def _revision(image: bytes) -> str | None:
        """The sim's image format: the revision in the first 8 bytes, printable ASCII."""
        head = bytes(image[:8])
        if len(head) < 8 or not all(0x20 <= b <= 0x7E for b in head):
            return None
        return head.decode("ascii")

    def fw_commit(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        slot, action = cmd.cdw10 & 0x7, cmd.cdw10 >> 3 & 0x7
        slot = slot or 2
        if action > FW_CA_REPLACE_NOW:      # 4, 5 reserved; 6, 7 boot partitions: none
            return fail(S.INVALID_FIELD)
        if slot > 3:
            return fail(S.FIRMWARE_SLOT)
        if action in (FW_CA_REPLACE, FW_CA_REPLACE_ACTIVATE, FW_CA_REPLACE_NOW) and self.fw_image:
            revision = self._revision(self.fw_image)
            if revision is None:
                return fail(S.FIRMWARE_IMAGE)
            self.firmware[slot] = revision
            self.fw_image = bytearray()
        elif action in (FW_CA_REPLACE, FW_CA_REPLACE_ACTIVATE):
            return fail(S.FIRMWARE_IMAGE)
        if slot not in self.firmware:
            return fail(S.FIRMWARE_IMAGE)
        if action in (FW_CA_REPLACE_ACTIVATE, FW_CA_ACTIVATE):
            self.next_slot = slot
        elif action == FW_CA_REPLACE_NOW:
            self.active_slot, self.next_slot = slot, 0
            self.raise_event(E.TYPE_NOTICE, E.NOTICE_FW_ACTIVATION, 0x03)
        return ok()

    def activate_pending_firmware(self) -> None:
        if self.next_slot:
            self.active_slot, self.next_slot = self.next_slot, 0

    def _finish_self_test(self) -> None:
        if self.test_running:
            code, start, nsid = self.test_running
            if self.now() - start >= SELF_TEST_SECONDS[code]:
                self._record_self_test(code, 0, nsid)

    def _record_self_test(self, code: int, result: int, nsid: int) -> None:
        self.test_running = None
        self.self_test_results.appendleft(dict(
            dsts=code << 4 | result, vdi=L.VDI_NSID, nsid=nsid,
            poh=int((self.now() - self.born) // 3600)))

    def device_self_test(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        code = cmd.cdw10 & 0xF
        if cmd.nsid not in (0, NSID_ALL) and cmd.nsid not in self.namespaces:
            return fail(S.INVALID_NS)
        self._finish_self_test()
        if code == STC_ABORT:
            if self.test_running:
                self._record_self_test(self.test_running[0], 1, self.test_running[2])  # aborted
            return ok()
        if code not in SELF_TEST_SECONDS:
            return fail(S.INVALID_FIELD)
        if self.test_running:
            return fail(S.SELF_TEST_IN_PROGRESS)
        self.test_running = (code, self.now(), cmd.nsid)
        return ok()

    def format_nvm(self, cmd: Command, data_out: bytes, data_in_len: int) -> Outcome:
        cdw10 = cmd.cdw10
        lbaf = (cdw10 & 0xF) | (cdw10 >> FORMAT_LBAFU_SHIFT & 0x3) << 4
        targets = list(self.namespaces.values()) if cmd.nsid == NSID_ALL else \
            [self.namespaces[cmd.nsid]] if cmd.nsid in self.namespaces else []
        if not targets:
            return fail(S.INVALID_NS)
        if lbaf >= len(LBA_FORMATS) or cdw10 >> FORMAT_PI_SHIFT & 0x7:
            return fail(S.INVALID_FORMAT)   # no such LBA format; no protection information
        extended = bool(cdw10 >> FORMAT_MSET_SHIFT & 1)
        ses = cdw10 >> FORMAT_SES_SHIFT & 0x7
        if ses > SES_USER_DATA_ERASE:       # no cryptographic erase (FNA bit 2 clear)
            return fail(S.INVALID_FIELD)

        def run() -> None:
            for ns in targets:
                ns.store.zero(0, ns.store.size)

        def done(_: None) -> Result:
            for ns in targets:
                ns.reformat(lbaf, extended)
                if ns.nsid not in self.changed_ns:
                    self.changed_ns.append(ns.nsid)
            self.raise_event(E.TYPE_NOTICE, E.NOTICE_NS_CHANGED, 0x04)
            return ok()
        return Media(run, done, S.INTERNAL)

    def abort(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        # The command to abort is found by the queue layer; here nothing is outstanding.
        return ok(dw0=1)    # DW0 bit 0 set: command not aborted

    # ------------------------------------------------------------------ NVM I/O

    def _lba_range(self, cmd: Command) -> tuple[Namespace | None, int, int, int]:
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return None, S.INVALID_NS, 0, 0
        slba, nlb = rw_fields(cmd)
        if slba + nlb > ns.blocks:
            return None, S.LBA_RANGE, 0, 0
        return ns, S.SUCCESS, slba * ns.block_size, nlb * ns.block_size

    def read(self, cmd: Command, data_out: bytes, data_in_len: int, metadata_out: bytes = b"",
             metadata_in_len: int = 0) -> Outcome:
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        if ns.ms:
            return self._read_metadata(cmd, ns, offset, length, data_in_len, metadata_in_len)
        if data_in_len < length:
            return fail(S.DATA_XFER_ERROR)
        store = ns.store

        def done(data: bytes) -> Result:
            self.counters["reads"] += 1
            self.counters["bytes_read"] += length
            return ok(data)
        return Media(lambda: store.read(offset, length), done, READ_ERROR)

    def _read_metadata(self, cmd: Command, ns: Namespace, offset: int, length: int,
                       data_in_len: int, metadata_in_len: int) -> Outcome:
        """A Read of a format with metadata: each block's metadata at the end of its data
        (extended LBAs), or in the metadata buffer."""
        slba, nlb = rw_fields(cmd)
        data_len, metadata_len = ns.host_lengths(nlb)
        if data_in_len < data_len or metadata_in_len < metadata_len:
            return fail(S.DATA_XFER_ERROR)
        store, to_host = ns.store, ns.to_host
        moff, mlen = ns.metadata_at(slba, nlb)

        def run() -> tuple[bytes, bytes]:
            return to_host(store.read(offset, length), store.read(moff, mlen))

        def done(got: tuple[bytes, bytes]) -> Result:
            self.counters["reads"] += 1
            self.counters["bytes_read"] += length
            return Result(S.SUCCESS, 0, *got)
        return Media(run, done, READ_ERROR)

    def write(self, cmd: Command, data_out: bytes, data_in_len: int, metadata_out: bytes = b"",
              metadata_in_len: int = 0) -> Outcome:
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        slba, nlb = rw_fields(cmd)
        blocks = ns.from_host(nlb, data_out, metadata_out)
        if blocks is None:
            return fail(S.DATA_XFER_ERROR)
        store, (data, metadata) = ns.store, blocks
        moff, _ = ns.metadata_at(slba, nlb)

        def run() -> None:
            store.write(offset, data)
            if metadata:
                store.write(moff, metadata)

        def done(_: None) -> Result:
            self.counters["writes"] += 1
            self.counters["bytes_written"] += length
            if self.cdq.tracking:
                self.cdq.log(cmd.nsid, [(slba, nlb - 1)])
            return ok()
        return Media(run, done, WRITE_FAULT)

    def compare(self, cmd: Command, data_out: bytes, data_in_len: int, metadata_out: bytes = b"",
                metadata_in_len: int = 0) -> Outcome:
        """Compare: the data, and the metadata of a format with some (as QEMU does)."""
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        slba, nlb = rw_fields(cmd)
        blocks = ns.from_host(nlb, data_out, metadata_out)
        if blocks is None:
            return fail(S.DATA_XFER_ERROR)
        store = ns.store
        moff, mlen = ns.metadata_at(slba, nlb)

        def run() -> tuple[bytes, bytes]:
            return store.read(offset, length), store.read(moff, mlen) if mlen else b""

        def done(got: tuple[bytes, bytes]) -> Result:
            self.counters["reads"] += 1
            self.counters["bytes_read"] += length
            return ok() if got[0] == blocks[0] and got[1] == blocks[1] else \
                fail(S.COMPARE_FAILED)
        return Media(run, done, READ_ERROR)

    def write_zeroes(self, cmd: Command, data_out: bytes, data_in_len: int) -> Outcome:
        ns, st, _, _ = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        slba, nlb = rw_fields(cmd)

        def run() -> None:
            ns.erase(slba, nlb)             # the metadata is zeroed too (no PI here)

        def done(_: None) -> Result:
            self.counters["writes"] += 1
            if self.cdq.tracking:
                self.cdq.log(cmd.nsid, [(slba, nlb - 1)])
            return ok()
        return Media(run, done, WRITE_FAULT)

    def verify(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns, st, _, _ = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        self.counters["reads"] += 1
        return ok()

    def flush(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        if cmd.nsid not in self.namespaces and cmd.nsid != NSID_ALL:
            return fail(S.INVALID_NS)
        return ok()

    def dsm(self, cmd: Command, data_out: bytes, data_in_len: int) -> Outcome:
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        nr = (cmd.cdw10 & 0xFF) + 1
        if len(data_out) < nr * 16:
            return fail(S.DATA_XFER_ERROR)
        # Figure 43 (NVM): context attributes, NLB, SLBA
        ranges = [(slba, nlb) for _, nlb, slba in DSM_RANGE.iter_unpack(data_out[:nr * 16])]
        if any(slba + nlb > ns.blocks for slba, nlb in ranges):
            return fail(S.LBA_RANGE)
        if not cmd.cdw11 & DSM_AD:
            return ok()             # attributes only: nothing to do
        def run() -> None:
            for slba, nlb in ranges:
                ns.erase(slba, nlb)     # deallocated blocks read zeros, metadata included

        def done(_: None) -> Result:
            if self.cdq.tracking:
                self.cdq.log(cmd.nsid, _runs(ranges), dlba=True)
            return ok()
        return Media(run, done, WRITE_FAULT)

    def copy(self, cmd: Command, data_out: bytes, data_in_len: int) -> Outcome:
        """Copy (NVM §3.2.2), source range entries format 0h, within one namespace."""
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        nr = COPY_NR.get(cmd) + 1
        if DESFMT.get(cmd):
            return fail(S.INVALID_FIELD)
        if nr > MSRC + 1:
            return fail(SIZE_LIMIT)
        if len(data_out) < nr * COPY_RANGE_SIZE:
            return fail(S.DATA_XFER_ERROR)
        sources = []
        for i in range(nr):
            r = data_out[COPY_RANGE_SIZE * i: COPY_RANGE_SIZE * (i + 1)]
            slba, nlb = int.from_bytes(r[8:16], "little"), int.from_bytes(r[16:18], "little") + 1
            if nlb > MSSRL:
                return fail(SIZE_LIMIT)
            if slba + nlb > ns.blocks:
                return fail(S.LBA_RANGE)
            sources.append((slba, nlb))
        sdlba, total = SDLBA.get(cmd), sum(n for _, n in sources)
        if total > MCL:
            return fail(SIZE_LIMIT)
        if sdlba + total > ns.blocks:
            return fail(S.LBA_RANGE)
        store, block = ns.store, ns.block_size

        def run() -> None:
            data = b"".join(store.read(slba * block, nlb * block) for slba, nlb in sources)
            store.write(sdlba * block, data)
            if ns.ms:                   # each block's metadata goes with it
                metadata = b"".join(store.read(*ns.metadata_at(s, n)) for s, n in sources)
                store.write(ns.metadata_at(sdlba, total)[0], metadata)

        def done(_: None) -> Result:
            self.counters["writes"] += 1
            self.counters["bytes_written"] += total * block
            if self.cdq.tracking:
                self.cdq.log(cmd.nsid, [(sdlba, total - 1)])
            return ok()
        return Media(run, done, WRITE_FAULT)

    # ------------------------------------------------------------------ I/O Command Sets, zones

    def io_ops(self, nsid: int) -> dict[int, Op]:
        """The I/O commands of the namespace's command set (NVM's for an unknown NSID,
        whose commands fail Invalid Namespace)."""
        ns = self.namespaces.get(nsid)
        return self.io_ops_of(ns.csi if ns is not None else CSI_NVM)

    def io_ops_of(self, csi: int) -> dict[int, Op]:
        """The I/O commands of command set `csi` ({}: one the controller lacks)."""
        return {CSI_NVM: self.IO_OPS, CSI_ZNS: self.ZNS_OPS if self.cfg.zoned else {}}.get(csi, {})

    def identify_cs(self, cns: int, cmd: Command) -> Result:
        """Identify CNS 05h (a namespace's) or 06h (the controller's) I/O Command Set
        specific data, of the command set CDW11 names."""
        csi = CSI.get(cmd)
        if cns == ID.CNS_CTRL_CS:
            # all zeros, for each command set the controller has: NVM, no Verify, Write
            # Zeroes, Write Uncorrectable or DSM limits; ZNS, ZASL 0 (Zone Append up to MDTS)
            return ok(bytes(ID.IDENTIFY_SIZE)) if self.io_ops_of(csi) else fail(S.INVALID_IOCS)
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        made = {CSI_NVM: lambda: iocs.encode_nvm_id_ns({}, []),     # no protection information
                CSI_ZNS: (lambda: self.id_ns_zns(ns)) if ns.zones else None}
        make = made.get(csi)
        return ok(make()) if make else fail(S.INVALID_IOCS)

    def id_ns_zns(self, ns: Namespace) -> bytes:
        """No open or active zone limits, reads across zone boundaries, no zone
        descriptor extensions; the zone size in each LBA format's blocks."""
        return iocs.encode_zns_id_ns(dict(ozcs=iocs.OZCS_RAZB, mar=iocs.NO_LIMIT,
                                          mor=iocs.NO_LIMIT),
                                     [dict(zsze=ns.zone_bytes >> ds) for ds in LBA_FORMATS])

    def _zoned(self, cmd: Command, res: Outcome) -> Outcome:
        """A Write or Write Zeroes to a zoned namespace: once it passes a Write's checks,
        the zone's (at the write pointer, within the zone, a zone that takes writes)."""
        if isinstance(res, Result) and res.status:
            return res
        status = self.namespaces[cmd.nsid].zones.write(*rw_fields(cmd))
        return fail(status) if status else res

    def zoned_write(self, cmd: Command, data_out: bytes, data_in_len: int,
                    metadata_out: bytes = b"", metadata_in_len: int = 0) -> Outcome:
        return self._zoned(cmd, self.write(cmd, data_out, data_in_len, metadata_out,
                                           metadata_in_len))

    def zoned_write_zeroes(self, cmd: Command, data_out: bytes, data_in_len: int) -> Outcome:
        return self._zoned(cmd, self.write_zeroes(cmd, data_out, data_in_len))

    def zone_append(self, cmd: Command, data_out: bytes, data_in_len: int,
                    metadata_out: bytes = b"", metadata_in_len: int = 0) -> Outcome:
        """Zone Append (ZNS §3.4.1): a Write at the write pointer of the zone ZSLBA
        starts; the LBA written is DW0 (low) and DW1 (high) of the completion."""
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        zslba, nlb = rw_fields(cmd)
        status, lba = ns.zones.append(zslba, nlb)
        if status:
            return fail(status)
        res = self.write(cmd._replace(**SLBA.put(lba)), data_out, data_in_len, metadata_out,
                         metadata_in_len)
        if isinstance(res, Result) and res.status:
            return res
        ns.zones.appended(lba, nlb)

        def at(done: Result) -> Result:
            return done if done.status else done._replace(dw0=lba & 0xFFFFFFFF, dw1=lba >> 32)
        if isinstance(res, Result):
            return at(res)
        return res._replace(done=lambda out: at(res.done(out)))

    def zone_send(self, cmd: Command, data_out: bytes, data_in_len: int) -> Outcome:
        """Zone Management Send: Close, Finish, Open, Reset, Offline of one zone or, with
        Select All, of every zone the action applies to; a reset zone's data is zeroed."""
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        status, erased = ns.zones.send(ZSA.get(cmd), SLBA.get(cmd), bool(ZSA_SELECT_ALL.get(cmd)))
        if status or not erased:
            return Result(status)
        def run() -> None:
            for slba, nlb in erased:
                ns.erase(slba, nlb)
        return Media(run, lambda _: ok(), WRITE_FAULT)

    def zone_receive(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        """Zone Management Receive: a report of the zones from the one holding SLBA on."""
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        length = zone_recv_len(cmd)
        if data_in_len < length:
            return fail(S.DATA_XFER_ERROR)
        status, data = ns.zones.report(SLBA.get(cmd), ZRA.get(cmd), ZRASF.get(cmd),
                                       bool(ZRA_PARTIAL.get(cmd)), length)
        return Result(status, 0, data)

    # ------------------------------------------------------------------ Controller Data Queues

    def controller_data_queue(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        status, cdqid = self.cdq.create(cmd)
        return Result(status, cdqid)

    def track_send(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        return fail(self.cdq.track_send(cmd))


def _runs(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(SLBA, NLB 0's based) of the runs of adjacent ranges (SLBA, NLB), in order."""
    runs: list[tuple[int, int]] = []
    end = -1
    for slba, nlb in ranges:
        if not nlb:
            continue
        if slba == end:
            first, _ = runs[-1]
            runs[-1] = (first, slba + nlb - first - 1)
        else:
            runs.append((slba, nlb - 1))
        end = slba + nlb
    return runs


def open_stores(cfg: SimConfig, index: int) -> list[MemoryStore | FileStore]:
    """A store per namespace: sparse files in `cfg.path` (blocking: call it off the
    event loop), else memory."""
    if not cfg.path:
        return [MemoryStore(cfg.size) for _ in range(cfg.namespaces)]
    stores: list[MemoryStore | FileStore] = []
    try:
        for nsid in range(1, cfg.namespaces + 1):
            name = f"nvmefs-sim{index}-ns{nsid}.img"
            stores.append(FileStore(os.path.join(cfg.path, name), cfg.size))
    except OSError:
        for store in stores:
            store.close()
        raise
    return stores
