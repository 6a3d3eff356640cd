"""The simulated controller's command set: state plus opcode -> handler tables.

Synchronous and deterministic: time comes from the `now` function it is given.
Handlers return a `Result` (status, DW0, data in); a failing status also adds
an Error Information log entry. The Commands Supported and Effects log is
built from the same tables, so it always matches what is implemented.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from dataclasses import dataclass
from typing import Callable, NamedTuple

from ...spec import features as F
from ...spec import identify as ID
from ...spec import logs as L
from ...spec import status as S
from ...spec.commands import log_page_fields, rw_fields
from ...spec.logs import CCC, CSUPP, LBCC, NCC, NIC
from ...spec.opcodes import ADMIN, IO
from ...spec.queue import Command
from .config import SimConfig
from .storage import FileStore, MemoryStore


class Result(NamedTuple):
    status: int
    dw0: int = 0
    data: bytes = b""


Handler = Callable[[Command, bytes, int], Result]

LBA_FORMATS = (9, 12)          # LBADS of LBA formats 0 and 1: 512 and 4096 bytes
MAX_NAMESPACES = 32
ERROR_ENTRIES = 64
SELF_TEST_SECONDS = {1: 2.0, 2: 10.0}      # short, extended (scaled down from minutes)
TELEMETRY_DALB = (7, 63, 2047)             # last block of data areas 1..3: 1 MiB in all
CSE_ONE_NS = 1 << 16


def ok(data: bytes = b"", dw0: int = 0) -> Result:
    return Result(S.SUCCESS, dw0, data)


def fail(status: int) -> Result:
    return Result(status)


@dataclass
class Namespace:
    nsid: int
    blocks: int
    lbaf: int
    store: MemoryStore | FileStore

    @property
    def block_size(self) -> int:
        return 1 << LBA_FORMATS[self.lbaf]


@dataclass(frozen=True)
class Op:
    handler: str          # SimDevice method name
    effects: int = 0      # beyond CSUPP, reported in the effects log


class SimDevice:
    ADMIN_OPS = {
        0x02: Op("get_log_page"), 0x06: Op("identify"), 0x08: Op("abort"),
        0x09: Op("set_features", CCC), 0x0A: Op("get_features"),
        0x10: Op("fw_commit", CCC | NIC | NCC), 0x11: Op("fw_download"),
        0x14: Op("device_self_test"), 0x80: Op("format_nvm", LBCC | NCC | NIC | CSE_ONE_NS),
    }
    LOGS = {0x00: "log_supported", 0x01: "log_error", 0x02: "log_smart", 0x03: "log_fw_slot",
            0x04: "log_changed_ns", 0x05: "log_effects", 0x06: "log_self_test",
            0x07: "log_telemetry_host", 0x08: "log_telemetry_ctrl"}
    # Identify Controller fields that decide which features exist (spec.features)
    CAPS = dict(vwc=0x7, apsta=1, hmpre=0, oncs=0xDD, kas=0)
    IO_OPS = {
        0x00: Op("flush"), 0x01: Op("write", LBCC), 0x02: Op("read"), 0x05: Op("compare"),
        0x08: Op("write_zeroes", LBCC), 0x09: Op("dsm", LBCC), 0x0C: Op("verify"),
    }

    def __init__(self, cfg: SimConfig, now: Callable[[], float], index: int = 0):
        self.cfg = cfg
        self.now = now
        self.index = index
        self.born = now()
        self.namespaces: dict[int, Namespace] = {}
        lbaf = LBA_FORMATS.index(cfg.lba.bit_length() - 1)
        for nsid in range(1, cfg.namespaces + 1):
            self.namespaces[nsid] = Namespace(nsid, cfg.size // cfg.lba, lbaf, self._store(nsid))
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
        self.command_log: deque[tuple[str, Command]] = deque(maxlen=1_000_000)
        self._id_ctrl: tuple[tuple[str, int], bytes] = (("", -1), b"")

    def _store(self, nsid: int) -> MemoryStore | FileStore:
        if self.cfg.path:
            name = f"nvmefs-sim{self.index}-ns{nsid}.img"
            return FileStore(os.path.join(self.cfg.path, name), self.cfg.size)
        return MemoryStore(self.cfg.size)

    def close(self) -> None:
        for ns in self.namespaces.values():
            ns.store.close()

    # ------------------------------------------------------------------ dispatch

    def execute(self, queue: str, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        """Run one command; data in is exactly `data_in_len` bytes (the host buffer)."""
        self.command_log.append((queue, cmd))
        op = (self.ADMIN_OPS if queue == ADMIN else self.IO_OPS).get(cmd.opcode)
        if op is None:
            res = fail(S.INVALID_OPCODE)
        elif max(len(data_out), data_in_len) > 4096 << self.cfg.mdts:
            res = fail(S.INVALID_FIELD)
        else:
            res = getattr(self, op.handler)(cmd, data_out, data_in_len)
        if res.status & 0x7FF:
            self.record_error(queue, cmd, res.status)
            return Result(res.status, res.dw0, bytes(data_in_len))
        if len(res.data) != data_in_len:
            return Result(res.status, res.dw0, res.data[:data_in_len].ljust(data_in_len, b"\0"))
        return res

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
            oacs=0x16, acl=3, aerl=3, frmw=0x16, lpa=0x2E, elpe=ERROR_ENTRIES - 1, npss=2,
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
            flbas=ns.lbaf, dlfeat=1, nvmcap=ns.blocks * ns.block_size,
            nguid=digest[:16].hex(), eui64=digest[16:24].hex()),
            [dict(ds=ds) for ds in LBA_FORMATS])

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
            # NIDT 1 EUI64 (8 bytes), 2 NGUID (16 bytes): Figure 279
            desc = bytes([1, 0, 8, 0]) + bytes.fromhex(d["eui64"]) + \
                bytes([2, 0, 16, 0]) + bytes.fromhex(d["nguid"])
            return ok(desc)
        return fail(S.INVALID_FIELD)

    # ------------------------------------------------------------------ log pages

    def get_log_page(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        lid, lsp, length, offset, _ = log_page_fields(cmd)
        rae = bool(cmd.cdw10 >> 15 & 1)
        if lid not in self.LOGS:
            return fail(S.INVALID_LOG_PAGE)
        if offset % 4:
            return fail(S.INVALID_FIELD)
        data = getattr(self, self.LOGS[lid])(lsp, rae, cmd.nsid)
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
        return L.encode_effects({o: CSUPP | op.effects for o, op in self.ADMIN_OPS.items()},
                                {o: CSUPP | op.effects for o, op in self.IO_OPS.items()})

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

    def _feature_defaults(self, fid: int) -> dict[str, int]:
        return {0x01: dict(value=0x03), 0x02: dict(value=0), 0x04: dict(value=343, over=343, under=0),
                0x05: dict(value=0), 0x06: dict(value=1), 0x07: dict(value=63 | 63 << 16),
                0x08: dict(value=0), 0x0B: dict(value=0), 0x0C: dict(value=0, data=bytes(256)),
                0x0E: dict(value=0, data=bytes(8), at=self.now())}[fid]

    def get_features(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        fid, sel = cmd.cdw10 & 0xFF, cmd.cdw10 >> 8 & 0x7
        feat = F.FEATURES.get(fid)
        if fid not in self.features or sel > F.SEL_SUPPORTED:
            return fail(S.INVALID_FIELD)
        if sel == F.SEL_SUPPORTED:
            caps = F.CAP_SAVEABLE | F.CAP_CHANGEABLE | (F.CAP_NS_SPECIFIC if feat.ns_specific else 0)
            return ok(dw0=caps if fid != 0x07 else F.CAP_SAVEABLE)
        state = {F.SEL_CURRENT: self.features, F.SEL_DEFAULT: None, F.SEL_SAVED: self.saved}[sel]
        value = state[fid] if state is not None else self._feature_defaults(fid)
        if fid == 0x04:     # TMPSEL/THSEL pick the threshold (Figure 326); only the composite
            if cmd.cdw11 >> 16 & 0xF:
                return fail(S.INVALID_FIELD)
            which = "under" if cmd.cdw11 >> 20 & 0x3 else "over"
            return ok(dw0=value[which] | (cmd.cdw11 & 0x3F0000))
        if fid == 0x0E:
            ms = int.from_bytes(value["data"][:6], "little") + int((self.now() - value["at"]) * 1000)
            return ok(ms.to_bytes(6, "little") + value["data"][6:7] + b"\0", dw0=0)
        return ok(value.get("data", b""), dw0=value["value"])

    def set_features(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        fid, save = cmd.cdw10 & 0xFF, bool(cmd.cdw10 >> 31)
        if fid not in self.features:
            return fail(S.INVALID_FIELD)
        value = dict(self.features[fid])
        if fid == 0x07:     # allocation is fixed once queues exist: report what is allocated
            return ok(dw0=value["value"])
        if fid == 0x02 and (cmd.cdw11 & 0x1F) > 2:
            return fail(S.INVALID_FIELD)
        if fid == 0x04:
            if cmd.cdw11 >> 16 & 0xF:
                return fail(S.INVALID_FIELD)
            value["under" if cmd.cdw11 >> 20 & 0x3 else "over"] = cmd.cdw11 & 0xFFFF
            value["value"] = value["over"]
        elif fid in (0x0C, 0x0E):
            need = F.FEATURES[fid].data_len
            if len(data_out) < need:
                return fail(S.DATA_XFER_ERROR)
            value.update(value=cmd.cdw11, data=bytes(data_out[:need]), at=self.now())
        else:
            value["value"] = cmd.cdw11
        self.features[fid] = value
        if save:
            self.saved[fid] = dict(value)
        return ok(dw0=0)

    # ------------------------------------------------------------------ firmware, self-test, format

    def fw_download(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        numd, offset = cmd.cdw10 + 1, cmd.cdw11 * 4
        if len(data_out) != numd * 4:
            return fail(S.INVALID_FIELD)
        if offset == 0:
            self.fw_image = bytearray()
        if offset != len(self.fw_image):
            return fail(S.make_status(S.CMD_SPECIFIC, 0x14, dnr=True))    # overlapping range
        self.fw_image += data_out
        return ok()

    def fw_commit(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        slot, action = cmd.cdw10 & 0x7, cmd.cdw10 >> 3 & 0x7
        slot = slot or 2
        if slot > 3:
            return fail(S.FIRMWARE_SLOT)
        if action in (0, 1, 3) and self.fw_image:
            if len(self.fw_image) < 8:
                return fail(S.FIRMWARE_IMAGE)
            self.firmware[slot] = self.fw_image[:8].decode("ascii", "replace")
            self.fw_image = bytearray()
        elif action in (0, 1):
            return fail(S.FIRMWARE_IMAGE)
        if slot not in self.firmware:
            return fail(S.FIRMWARE_IMAGE)
        if action in (1, 2):
            self.next_slot = slot
        elif action == 3:
            self.active_slot, self.next_slot = slot, 0
        elif action != 0:
            return fail(S.INVALID_FIELD)
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
        self._finish_self_test()
        if code == 0xF:
            if self.test_running:
                self._record_self_test(self.test_running[0], 1, self.test_running[2])  # aborted
            return ok()
        if code not in SELF_TEST_SECONDS:
            return fail(S.INVALID_FIELD)
        if self.test_running:
            return fail(S.SELF_TEST_IN_PROGRESS)
        self.test_running = (code, self.now(), cmd.nsid)
        return ok()

    def format_nvm(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        lbaf = ID.lba_format_index(cmd.cdw10 & 0x7F | (cmd.cdw10 >> 12 & 0x3) << 5)
        targets = list(self.namespaces.values()) if cmd.nsid == L.NSID_ALL else \
            [self.namespaces[cmd.nsid]] if cmd.nsid in self.namespaces else []
        if not targets:
            return fail(S.INVALID_NS)
        if lbaf >= len(LBA_FORMATS):
            return fail(S.INVALID_FORMAT)
        for ns in targets:
            ns.store.zero(0, ns.store.size)
            ns.lbaf = lbaf
            ns.blocks = ns.store.size // ns.block_size
            if ns.nsid not in self.changed_ns:
                self.changed_ns.append(ns.nsid)
        return ok()

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

    def read(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        if data_in_len < length:
            return fail(S.DATA_XFER_ERROR)
        self.counters["reads"] += 1
        self.counters["bytes_read"] += length
        return ok(ns.store.read(offset, length))

    def write(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        if len(data_out) < length:
            return fail(S.DATA_XFER_ERROR)
        ns.store.write(offset, data_out[:length])
        self.counters["writes"] += 1
        self.counters["bytes_written"] += length
        return ok()

    def compare(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        if len(data_out) < length:
            return fail(S.DATA_XFER_ERROR)
        self.counters["reads"] += 1
        self.counters["bytes_read"] += length
        return ok() if ns.store.read(offset, length) == data_out[:length] else fail(S.COMPARE_FAILED)

    def write_zeroes(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns, st, offset, length = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        ns.store.zero(offset, length)
        self.counters["writes"] += 1
        return ok()

    def verify(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns, st, _, _ = self._lba_range(cmd)
        if ns is None:
            return fail(st)
        self.counters["reads"] += 1
        return ok()

    def flush(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        if cmd.nsid not in self.namespaces and cmd.nsid != L.NSID_ALL:
            return fail(S.INVALID_NS)
        return ok()

    def dsm(self, cmd: Command, data_out: bytes, data_in_len: int) -> Result:
        ns = self.namespaces.get(cmd.nsid)
        if ns is None:
            return fail(S.INVALID_NS)
        nr = (cmd.cdw10 & 0xFF) + 1
        if len(data_out) < nr * 16:
            return fail(S.DATA_XFER_ERROR)
        ranges = []
        for i in range(nr):        # Figure 43 (NVM): context attributes, NLB, SLBA
            r = data_out[16 * i: 16 * i + 16]
            nlb, slba = int.from_bytes(r[4:8], "little"), int.from_bytes(r[8:16], "little")
            if slba + nlb > ns.blocks:
                return fail(S.LBA_RANGE)
            ranges.append((slba, nlb))
        if cmd.cdw11 & 0x4:        # AD: deallocate
            for slba, nlb in ranges:
                ns.store.zero(slba * ns.block_size, nlb * ns.block_size)
        return ok()
