"""Fuzz passthru/admin and passthru/io through a real mount (`make fuzz`).

    python -m tests.fuzz.mailbox

Environment: FUZZ_COUNT (requests per policy, default 105000), FUZZ_SEED (default:
random, printed), FUZZ_POLICIES (default "readonly,all,off"), FUZZ_PROBES (0 skips
the deterministic probes), FUZZ_RSS_LIMIT_MB (default 700), FUZZ_HANG (seconds
without progress that count as a hang, default 120), FUZZ_DIR (work directory,
default a new one under /tmp), FUZZ_REPORT (write a JSON summary there).

For each policy the simulated controller gets a file-backed namespace
(sim:size=64M,path=DIR). Requests are made valid with `encode_request`, then
some are broken on purpose (each documented refusal), mutated at random (bit
flips, truncation, splices, random opcodes, huge data_len, junk text...) or are
plain junk; the resulting byte streams are cut at random write boundaries and
written on a few concurrent sessions of `admin`, `io` and private mailboxes,
while answers are read at random moments (sometimes not at all, until the
memory bounds refuse more).

What is checked, as nvmefs(5) states it:

* every write: the bytes it takes and its errno, against a mirror of the stream
  (`spec.session.MailboxSession` frames and validates; the rules of Short writes,
  Memory and Validation decide what the write must return). A write returning
  n < len took only n bytes, and the rest is written again as `cat` does; a
  write that fails took nothing; after a refused request the stream restarts at
  the next request the fuzzer made.
* every refused request's errno is one nvmefs(5) documents for that request
  (an independent reading of PASSTHRU, Validation and Policy: `man_verdict`),
  and every accepted request is one the man page lets through (so `readonly`
  never admits a Write, and so on);
* every accepted request is answered exactly once, in order: its CID, its
  format (16-byte CQE with the phase tag, or the text status line, xxd lines
  and empty line), its data length; a short read never ends inside an answer;
  a session drained to its last answer then reads end of file; Reads return the
  namespace's bytes (readonly), Identify the controller's;
* write-only opens: what a later read-only open gets (the kept answers);
* `off`: no open for writing succeeds (EACCES);
* the daemon stays alive and the mount answers after every phase, its log has
  no traceback, `readonly` never changes a byte of the namespace file, and the
  daemon's peak RSS stays under the limit.

Deterministic probes (their own mounts) check three rules the random streams
reach only by luck: a bad request that straddles the kernel's split of one big
write(2), kept answers giving way to new requests, and the line length bound.

Any violation is printed with enough to reproduce it, and the exit status is 1.
"""

from __future__ import annotations

import bisect
import copy
import errno
import json
import mmap
import os
import random
import re
import select
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from nvmefs.spec import commands as C
from nvmefs.spec import passthru as P
from nvmefs.spec.identify import DPS_PIT, NsFormat
from nvmefs.spec.logs import CCC, CSE_MASK, CSUPP, LBCC, NCC, NIC, effects_tables
from nvmefs.spec.passthru import encode_request
from nvmefs.spec.queue import Command
from nvmefs.spec.session import NEED_DATA, MailboxSession, RequestError

from .harness import Mount, MountError, RssSampler, Watchdog, sha256_file

ADMIN, IO = "admin", "io"
POLICIES = ("readonly", "all", "off")

# ------------------------------------------------------------------ nvmefs(5), read independently

# Validation: EPERM in every policy (Create/Delete I/O SQ and CQ, Abort, AER, Keep Alive,
# Doorbell Buffer Config, Fabrics, Controller Data Queue, Cancel)
QUEUE_MGMT = {ADMIN: frozenset({0x00, 0x01, 0x04, 0x05, 0x08, 0x0C, 0x18, 0x7C, 0x7F, 0x45}),
              IO: frozenset({0x18, 0x7F})}
# Policy: what readonly admits (unless the effects log marks LBCC, NCC, NIC, CCC or CSE)
READONLY_OPS = {ADMIN: frozenset({0x02, 0x06, 0x0A, 0x1A, 0x3E, 0x42, 0x86}),
                IO: frozenset({0x02, 0x05, 0x0C, 0x0E, 0x12, 0x7A})}
INTRUSIVE = LBCC | NCC | NIC | CCC | CSE_MASK
# Short writes: a write ends after Format NVM, Namespace Management, Namespace Attachment
# and any command the effects log marks NCC or NIC
NS_CHANGING = {ADMIN: frozenset({0x80, 0x0D, 0x15}), IO: frozenset()}
# Binary requests / Validation: the sizes the man page names
IDENTIFY_SIZE = 4096
LBA_SIZED = frozenset({0x01, 0x02, 0x05})        # Write, Read, Compare: NLB x block size
MAX_TIMEOUT_MS = 3_600_000
MAX_LINE = 65536                                 # "a text line of more than 65536 bytes: E2BIG"
TEXT_START = frozenset(b"abcdefghijklmnopqrstuvwxyz# \t\r\n")
TEXT_WIDTH = {"opcode": 8, "flags": 8, "cid": 16, **{k: 32 for k in (
    "nsid", "cdw2", "cdw3", "cdw10", "cdw11", "cdw12", "cdw13", "cdw14", "cdw15", "data_len",
    "timeout_ms", "metadata_len")}}
# errnos of a write on a mailbox: Validation, Memory, Waits
WRITE_ERRNOS = frozenset({errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP, errno.ENXIO, errno.ERANGE,
                          errno.EPERM, errno.EACCES, errno.ENOBUFS, errno.EAGAIN, errno.ETIMEDOUT})
# a batch the daemon lost: the read that reaches it (or a write-only open's write) fails so
DYNAMIC = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.ETIMEDOUT})
WAIT_ERRNOS = frozenset({errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR})

HEADER = struct.Struct("<BBHIIIQIIII6I")      # Binary requests, bytes 0..63


def ename(err: int | None) -> str:
    return "ok" if err is None else errno.errorcode.get(err, str(err))


class Verdict(NamedTuple):
    """What nvmefs(5) says of one request: `must` errnos that apply to it (a request
    with any must be refused), `may` errnos it also allows, `kind` of request."""
    must: frozenset
    may: frozenset
    kind: str       # binary, text, blank, overlong, incomplete

    @property
    def allowed(self) -> frozenset:
        return self.must | self.may


@dataclass
class Ctl:
    """What the fuzzer knows of the controller, read from the mount's files."""
    mdts: int                                   # bytes (info: mdts); 0: no limit
    namespaces: dict[int, tuple[int, int]]      # nsid -> (block size, blocks)
    effects: dict[str, list[int]]
    identify: bytes
    features: list[int]
    formats: dict[int, NsFormat] = field(default_factory=dict)     # nsid -> ms, mset, dps

    @classmethod
    def read(cls, root: Path) -> "Ctl":
        info = _keys((root / "info").read_text())
        namespaces, formats = {}, {}
        for nsid in map(int, info.get("namespaces", "").split()):
            ns = _keys((root / "ns" / str(nsid) / "info").read_text())
            namespaces[nsid] = (int(ns["block_size"]), int(ns["blocks"]))
            formats[nsid] = NsFormat(int(ns["block_size"]), int(ns.get("ms", 0)),
                                     bool(int(ns.get("mset", 0))), 0, int(ns.get("dps", 0)))
        admin, io = effects_tables((root / "log" / "effects").read_bytes())
        features = sorted(int(name, 16) for name in os.listdir(root / "features" / "by-id"))
        return cls(int(info["mdts"]), namespaces, {ADMIN: admin, IO: io},
                   (root / "identify").read_bytes(), features, formats)

    def target(self, queue: str, policy: str) -> P.Target:
        effects = self.effects[queue]       # the I/O ones are CSI 0's: NVM namespaces
        return P.Target(queue, policy, self.mdts, self.formats,
                        {0: effects} if queue == IO else effects)

    def changes_namespaces(self, queue: str, opcode: int) -> bool:
        return opcode in NS_CHANGING[queue] or bool(self.effects[queue][opcode] & (NCC | NIC))


def _keys(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def lba_lengths(fmt: NsFormat, cdw12: int) -> tuple[int, tuple[int, ...]]:
    """Binary requests, metadata: the data_len and the metadata_len values a Read, Write
    or Compare of this format takes: extended LBAs, block+ms each in the data; separate,
    ms each in metadata_len; PRACT with 8-byte protection information, none moved."""
    n = (cdw12 & 0xFFFF) + 1
    strip = bool(cdw12 >> 29 & 1 and fmt.dps & DPS_PIT and fmt.ms == 8)
    if not fmt.ms or (strip and fmt.extended):
        return n * fmt.block, (0,)
    if fmt.extended:
        return n * (fmt.block + fmt.ms), (0,)
    return n * fmt.block, (0, n * fmt.ms) if strip else (n * fmt.ms,)


def field_verdict(queue: str, policy: str, ctl: Ctl, op: int, flags: int, nsid: int, mptr: int,
                  dlen: int, mlen: int, tmo: int, rsvd: int, cdw10: int, cdw11: int,
                  cdw12: int) -> tuple[set, set]:
    must: set[int] = set()
    may: set[int] = set()
    direction = op & 3
    if flags or mptr or rsvd:
        must.add(errno.EINVAL)
    if mlen and not (queue == IO and op in LBA_SIZED):
        must.add(errno.EINVAL)             # only Read, Write, Compare move metadata
    if mlen and direction == 0:
        must.add(errno.EINVAL)
    if ctl.mdts and mlen > ctl.mdts:
        must.add(errno.E2BIG)
    if direction == 3:
        must.add(errno.EINVAL)
    if direction == 0 and dlen:
        must.add(errno.EINVAL)
    if dlen % 4:
        must.add(errno.EINVAL)
    if op in QUEUE_MGMT[queue]:
        must.add(errno.EPERM)
    effect = ctl.effects[queue][op]
    if not effect & CSUPP:                 # neither known nor supported, or not supported
        must.add(errno.EOPNOTSUPP)
    if policy == "readonly" and (op not in READONLY_OPS[queue] or effect & INTRUSIVE):
        must.add(errno.EACCES)
    if ctl.mdts and dlen > ctl.mdts:
        must.add(errno.E2BIG)
    if tmo > MAX_TIMEOUT_MS:
        must.add(errno.ERANGE)
    if queue == IO and nsid not in ctl.namespaces:
        must.add(errno.ENXIO)
    if queue == ADMIN and op == 0x06 and dlen != IDENTIFY_SIZE:
        must.add(errno.EINVAL)
    if queue == ADMIN and op == 0x02:
        numd = cdw10 >> 16 | (cdw11 & 0xFFFF) << 16
        if dlen != (numd + 1) * 4:
            must.add(errno.EINVAL)
    if queue == IO and op in LBA_SIZED and nsid in ctl.formats:
        data, metadata = lba_lengths(ctl.formats[nsid], cdw12)
        if dlen != data or mlen not in metadata:
            must.add(errno.EINVAL)
    if queue == ADMIN and op == 0x11 and dlen != (cdw10 + 1) * 4:      # Firmware Image Download
        must.add(errno.EINVAL)
    if queue == IO and op == 0x09 and dlen != ((cdw10 & 0xFF) + 1) * 16:   # Dataset Management
        must.add(errno.EINVAL)
    if (queue == ADMIN and op in (0x09, 0x0A)) or (queue == IO and op == 0x7D):
        may.add(errno.EINVAL)              # "data_len not the size the command moves"
    return must, may


_STRICT_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


def text_verdict(line: bytes, queue: str, policy: str, ctl: Ctl) -> Verdict:
    """One text line (with its newline), as Text requests describes it."""
    bad = Verdict(frozenset({errno.EINVAL}), frozenset(), "text")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return bad
    words = text.split("#", 1)[0].split()
    if not words:
        return Verdict(frozenset(), frozenset(), "blank")
    fields: dict[str, int] = {}
    blobs: dict[str, bytes] = {}
    lenient = False
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or (key not in TEXT_WIDTH and key not in ("data", "metadata")) \
                or key in fields or key in blobs:
            return bad
        if key in ("data", "metadata"):
            if len(value) % 2 or not all(c in "0123456789abcdefABCDEF" for c in value):
                return bad
            blobs[key] = bytes.fromhex(value)
            continue
        if _STRICT_NUMBER.fullmatch(value):
            if value[:2].lower() != "0x" and len(value) > sys.get_int_max_str_digits():
                return bad              # the daemon's int() refuses it, as any reader might
            number = int(value, 16) if value[:2].lower() == "0x" else int(value)
        else:
            # forms the man page does not name but Python's int() reads ("+5", "1_0")
            try:
                number = int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
            except ValueError:
                return bad
            lenient = True
        if not 0 <= number < 1 << TEXT_WIDTH[key]:
            return bad
        fields[key] = number
    if "opcode" not in fields:
        return bad
    op = fields["opcode"]
    lengths = {k: fields.get(f"{k}_len", len(blobs[k]) if k in blobs else 0)
               for k in ("data", "metadata")}
    must, may = field_verdict(queue, policy, ctl, op, fields.get("flags", 0), fields.get("nsid", 0),
                              0, lengths["data"], lengths["metadata"], fields.get("timeout_ms", 0),
                              0, fields.get("cdw10", 0), fields.get("cdw11", 0),
                              fields.get("cdw12", 0))
    for key, length in lengths.items():     # data= and metadata= (hex): what a write sends
        blob = blobs.get(key)
        if op & 3 == 1:
            if (blob is None and length) or (blob is not None and len(blob) != length):
                must.add(errno.EINVAL)
        elif blob:
            must.add(errno.EINVAL)
        elif blob is not None:
            may.add(errno.EINVAL)          # an empty one on a command without data out
    if lenient:
        may.add(errno.EINVAL)
    return Verdict(frozenset(must), frozenset(may), "text")


def binary_verdict(entry: bytes, queue: str, policy: str, ctl: Ctl) -> Verdict:
    (op, flags, _cid, nsid, _cdw2, _cdw3, mptr, dlen, mlen, tmo, rsvd,
     cdw10, cdw11, cdw12, *_rest) = HEADER.unpack_from(entry)
    must, may = field_verdict(queue, policy, ctl, op, flags, nsid, mptr, dlen, mlen, tmo, rsvd,
                              cdw10, cdw11, cdw12)
    return Verdict(frozenset(must), frozenset(may), "binary")


def man_verdicts(buf: bytes, queue: str, policy: str, ctl: Ctl) -> list[Verdict]:
    """What nvmefs(5) says of the request that starts `buf` (the bytes the daemon had
    from its first byte on): one verdict per way the man page lets it be read. Text
    when the first byte is a lowercase letter, '#' or blank space and the second is not
    zero; with a zero second byte the man page says binary, while a byte that is no
    opcode nvmefs or the effects log knows is read as text: both are allowed."""
    if not buf:
        return [Verdict(frozenset(), frozenset(), "incomplete")]
    kinds = ["binary"]
    if buf[0] in TEXT_START:
        if len(buf) < 2:
            return [Verdict(frozenset(), frozenset(), "incomplete")]
        kinds = ["text"] if buf[1] else ["binary", "text"]
    out = []
    for kind in kinds:
        if kind == "binary":
            out.append(binary_verdict(buf, queue, policy, ctl) if len(buf) >= 64 else
                       Verdict(frozenset(), frozenset(), "incomplete"))
            continue
        nl = buf.find(b"\n", 0, MAX_LINE)
        if nl >= 0:
            out.append(text_verdict(buf[:nl + 1], queue, policy, ctl))
        elif len(buf) >= MAX_LINE:
            out.append(Verdict(frozenset({errno.E2BIG}), frozenset(), "overlong"))
        else:
            out.append(Verdict(frozenset(), frozenset(), "incomplete"))
    return out


# ------------------------------------------------------------------ requests

@dataclass
class Req:
    opcode: int
    fields: dict = field(default_factory=dict)
    data: bytes = b""
    binary_only: bool = False

    def data_len(self) -> int:
        return self.fields.get("data_len", len(self.data))


LOG_SIZES = {0x00: 1024, 0x01: 4096, 0x02: 512, 0x03: 512, 0x04: 4096, 0x05: 4096, 0x06: 564,
             0x07: 512, 0x08: 512, 0x09: 512, 0x0C: 4096, 0x81: 512}
TEXT_DATA_OUT = 30_000          # a text line carries its data in hex: keep it under the line bound
TEXT_DATA_IN = 32 << 10         # text answers are xxd lines: keep them reasonable
BAD_NUMBERS = ["", "0x", "0xg1", "1e3", "-1", "0b101", "12a", "1.5", "0x-1", "x10", "--1", "0xx1",
               "99999999999999999999", "0x1ffffffff"]
JUNK_KEYS = ["foo=1", "opcode1=2", "OPCODE=6", "mptr=1", "reserved=0", "prp1=0", "cdw16=1",
             "cdw1=0", "=5", "opcode", "data_len", "nsid==1", "cid:4", "Nsid=1", "data=0x12"]


class Generator:
    """Requests for one session's stream: valid ones (encode_request), ones broken on
    purpose, mutants and junk."""

    def __init__(self, rng: random.Random, queue: str, policy: str, phase: "Phase"):
        self.rng, self.queue, self.policy, self.phase = rng, queue, policy, phase
        self.cid = rng.randrange(1 << 16)
        self.fw_offset = 0

    @property
    def ctl(self) -> Ctl:
        return self.phase.ctl

    def next_cid(self) -> int:
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    # ---------------------------------------------------------------- units

    def unit(self) -> tuple[bytes, str]:
        r = self.rng.random()
        if r < 0.55:
            return self.encode(self.valid()), "valid"
        if r < 0.75:
            return self.invalid(), "invalid"
        if r < 0.95:
            return self.mutant(), "mutant"
        if r < 0.98:
            return self.junk(), "junk"
        return self.blank(), "blank"

    def flood(self) -> list[bytes]:
        """Valid requests with the largest answers: more than a session may hold."""
        rng, ctl = self.rng, self.ctl
        out = []
        for _ in range(rng.randrange(100, 170)):
            if self.queue == IO and 1 in ctl.namespaces:
                bs, blocks = ctl.namespaces[1]
                nlb = max(1, min(ctl.mdts // bs if ctl.mdts else 1024, 65536, blocks))
                slba = rng.randrange(blocks - nlb + 1)
                out.append(encode_request(0x02, nsid=1, cid=self.next_cid(), cdw10=slba & 0xFFFFFFFF,
                                          cdw11=slba >> 32, cdw12=nlb - 1, data_len=nlb * bs))
            else:
                size = min(ctl.mdts or 1 << 19, 1 << 19)
                numd = size // 4 - 1
                out.append(encode_request(0x02, nsid=0xFFFFFFFF, cid=self.next_cid(),
                                          cdw10=0x07 | 1 << 15 | (numd & 0xFFFF) << 16,
                                          cdw11=numd >> 16, data_len=size))
        return out

    def encode(self, req: Req, text: bool | None = None) -> bytes:
        rng = self.rng
        if text is None:
            text = (not req.binary_only and rng.random() < 0.35
                    and len(req.data) <= TEXT_DATA_OUT
                    and (req.opcode & 3 != 2 or req.data_len() <= TEXT_DATA_IN))
        fields = dict(req.fields)
        fields.setdefault("cid", self.next_cid())
        if not text:
            return encode_request(req.opcode, data=req.data, **fields)
        if fields.get("mptr") or fields.get("reserved"):
            return encode_request(req.opcode, data=req.data, **fields)
        fields.pop("mptr", None)
        fields.pop("reserved", None)
        return self.text_line(req.opcode, fields, req.data)

    def text_line(self, opcode: int, fields: dict, data: bytes) -> bytes:
        """A text request with its words in random order and numbers in random forms."""
        rng = self.rng

        def number(v: int) -> str:
            return rng.choice((f"{v}", f"{v:#x}", f"0X{v:X}", f"{v:#010x}"))

        words = [("opcode", opcode)] + [(k, v) for k, v in fields.items()
                                         if v or rng.random() < 0.1]
        if data and "data_len" in fields and rng.random() < 0.5:
            words = [(k, v) for k, v in words if k != "data_len" or v != len(data)]
        rng.shuffle(words)
        parts = [f"{k}={number(v)}" for k, v in words]
        if data or rng.random() < 0.02 and opcode & 3 != 1:
            hexed = data.hex()
            parts.insert(rng.randrange(len(parts) + 1),
                         "data=" + (hexed.upper() if rng.random() < 0.2 else hexed))
        sep = rng.choice((" ", " ", " ", "  ", "\t", " \t "))
        lead = rng.choice(("",) * 12 + (" ", "\t"))
        tail = rng.choice(("",) * 10 + (" ", "\r", " # a comment", "\t#x", "   "))
        return (lead + sep.join(parts) + tail + "\n").encode()

    # ---------------------------------------------------------------- valid requests

    def valid(self, policy: str | None = None) -> Req:
        policy = policy or self.policy
        rng = self.rng
        if self.queue == ADMIN:
            table = [(self.identify, 4), (self.get_log, 5), (self.get_features, 3)]
            if policy in ("all", "off"):
                table += [(self.set_features, 3), (self.fw_download, 1), (self.fw_commit, 0.3),
                          (self.self_test, 0.5), (self.format_nvm, 0.01)]
        else:
            table = [(self.read, 6), (self.compare, 1), (self.verify, 1)]
            if policy in ("all", "off"):
                table += [(self.write, 5), (self.write_zeroes, 1), (self.flush, 1), (self.dsm, 1)]
        builders, weights = zip(*table)
        req = rng.choices(builders, weights)[0]()
        r = rng.random()
        if r < 0.08:
            req.fields["timeout_ms"] = rng.randrange(1000, MAX_TIMEOUT_MS + 1)
        elif r < 0.1:
            req.fields["timeout_ms"] = MAX_TIMEOUT_MS
        elif r < 0.102:
            req.fields["timeout_ms"] = rng.randrange(1, 20)     # may time out: answered 0x371
        if rng.random() < 0.05:
            for k in rng.sample(("cdw2", "cdw3", "cdw14", "cdw15"), 2):
                req.fields[k] = rng.randrange(1 << 32)
        return req

    def not_readonly(self) -> Req:
        """A well-formed request the readonly policy refuses."""
        rng = self.rng
        if self.queue == ADMIN:
            return rng.choice((self.set_features, self.fw_download, self.fw_commit, self.self_test,
                               self.format_nvm))()
        return rng.choice((self.write, self.write_zeroes, self.flush, self.dsm))()

    def _lba(self, max_nlb: int | None = None) -> tuple[int, int, int, int]:
        """(nsid, slba, nlb, block size) within namespace 1, now and then out of range."""
        rng, ctl = self.rng, self.ctl
        nsid = 1 if 1 in ctl.namespaces else next(iter(ctl.namespaces), 1)
        bs, blocks = ctl.namespaces.get(nsid, (512, 1))
        cap = max_nlb or max(1, min(ctl.mdts // bs if ctl.mdts else 1024, 65536))
        r = rng.random()
        nlb = 1 if r < 0.4 else rng.randint(2, min(16, cap)) if r < 0.75 else \
            rng.randint(1, min(128, cap)) if r < 0.95 else rng.randint(1, cap)
        nlb = min(nlb, cap)
        if rng.random() < 0.03:
            slba = rng.choice((blocks - nlb + 1, blocks, rng.randrange(blocks, 1 << 64)))
        else:
            slba = rng.randrange(max(1, blocks - nlb + 1))
        return nsid, slba & ((1 << 64) - 1), nlb, bs

    def _rw(self, opcode: int, data: bool, max_nlb: int | None = None, sized: bool = True) -> Req:
        nsid, slba, nlb, bs = self._lba(max_nlb)
        cdw12 = nlb - 1
        if self.rng.random() < 0.05:
            cdw12 |= self.rng.choice((1 << 30, 1 << 31, 0xF << 20))     # FUA, LR, DTYPE bits
        fields = dict(nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32, cdw12=cdw12)
        if data:
            return Req(opcode, fields, self.rng.randbytes(nlb * bs))
        if sized:
            fields["data_len"] = nlb * bs
        return Req(opcode, fields)

    def read(self) -> Req:
        return self._rw(0x02, data=False)

    def compare(self) -> Req:
        req = self._rw(0x05, data=True, max_nlb=64)
        if self.policy != "all" and self.rng.random() < 0.5:     # the namespace's own bytes
            bs = self.ctl.namespaces.get(req.fields["nsid"], (512, 0))[0]
            slba = req.fields["cdw10"] | req.fields["cdw11"] << 32
            req.data = self.phase.backing_bytes(slba * bs, len(req.data)) or req.data
        return req

    def verify(self) -> Req:
        return self._rw(0x0C, data=False, max_nlb=65536, sized=False)

    def write(self) -> Req:
        return self._rw(0x01, data=True)

    def write_zeroes(self) -> Req:
        return self._rw(0x08, data=False, max_nlb=65536, sized=False)

    def flush(self) -> Req:
        return Req(0x00, dict(nsid=1))

    def dsm(self) -> Req:
        rng = self.rng
        bs, blocks = self.ctl.namespaces.get(1, (512, 1))
        nr = rng.randrange(4)
        ranges = b""
        for _ in range(nr + 1):
            nlb = rng.randint(1, 256)
            slba = rng.randrange(max(1, blocks - nlb))
            ranges += struct.pack("<IIQ", 0, nlb, slba)
        return Req(0x09, dict(nsid=1, cdw10=nr, cdw11=rng.choice((0, 1 << 2))), ranges)

    def identify(self) -> Req:
        rng = self.rng
        cns = rng.choice((0, 1, 1, 2, 3)) if rng.random() < 0.97 else rng.randrange(256)
        nsid = {0: rng.choice((1, 1, 2, 0xFFFFFFFF)), 1: 0, 2: rng.randrange(4),
                3: rng.choice((1, 2))}.get(cns, rng.randrange(3))
        return Req(0x06, dict(nsid=nsid, cdw10=cns, data_len=IDENTIFY_SIZE))

    def get_log(self) -> Req:
        rng, ctl = self.rng, self.ctl
        lid = rng.choice(list(LOG_SIZES) + [0xC0, rng.randrange(256)])
        mdts = ctl.mdts or 1 << 20
        r = rng.random()
        if r < 0.6:
            size = LOG_SIZES.get(lid, 512)
        elif r < 0.95:
            size = 4 * rng.randint(1, min(mdts, 16 << 10) // 4)
        else:
            size = 4 * rng.randint(1, mdts // 4)
        if lid == 0x07 and rng.random() < 0.3:
            size = min(mdts, 512 * rng.randint(1, 64))
        size = min(size, mdts)
        offset = 0
        if rng.random() < 0.2:
            offset = 4 * rng.randrange(1 << 18) if rng.random() < 0.9 else rng.randrange(1 << 20)
        numd = size // 4 - 1
        lsp = 1 if lid == 0x07 and rng.random() < 0.2 else 0
        rae = rng.randrange(2)
        return Req(0x02, dict(nsid=rng.choice((0xFFFFFFFF, 0xFFFFFFFF, 0, 1)),
                              cdw10=lid | lsp << 8 | rae << 15 | (numd & 0xFFFF) << 16,
                              cdw11=numd >> 16, cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32,
                              data_len=size))

    def _fid(self) -> int:
        rng = self.rng
        if rng.random() < 0.9 and self.ctl.features:
            return rng.choice(self.ctl.features)
        return rng.choice((0x03, 0x0D, 0x0F, 0x81, rng.randrange(256)))

    def get_features(self) -> Req:
        rng = self.rng
        fid = self._fid()
        sel = rng.randrange(4) if rng.random() < 0.97 else rng.randrange(8)
        cdw11 = rng.choice((0, 0, 0, 1 << 20, rng.randrange(1 << 32)))
        cmd = Command(0x0A, cdw10=fid | sel << 8, cdw11=cdw11)
        return Req(0x0A, dict(nsid=rng.choice((0, 0, 0, 1, 0xFFFFFFFF)), cdw10=fid | sel << 8,
                              cdw11=cdw11, data_len=C.feature_len(cmd) or 0))

    def set_features(self) -> Req:
        rng = self.rng
        fid = self._fid()
        save = rng.random() < 0.2
        cdw11 = rng.choice((0, 1, rng.randrange(256), rng.randrange(1 << 16), rng.randrange(1 << 32)))
        cmd = Command(0x09, cdw10=fid | save << 31, cdw11=cdw11)
        size = C.feature_len(cmd) or 0
        data = rng.choice((bytes(size), rng.randbytes(size)))
        return Req(0x09, dict(nsid=rng.choice((0, 0, 0, 1, 0xFFFFFFFF)), cdw10=fid | save << 31,
                              cdw11=cdw11), data)

    def fw_download(self) -> Req:
        rng = self.rng
        n = rng.choice((4, 64, 512, 4096))
        if self.fw_offset == 0 or self.fw_offset > 1 << 20 or rng.random() < 0.2:
            self.fw_offset = 0
            data = f"FZ{rng.randrange(10 ** 6):06d}".encode() + rng.randbytes(max(0, n - 8))
            data = data[:n]
        else:
            data = rng.randbytes(n)
        req = Req(0x11, dict(cdw10=n // 4 - 1, cdw11=self.fw_offset // 4), data)
        self.fw_offset += n
        return req

    def fw_commit(self) -> Req:
        rng = self.rng
        return Req(0x10, dict(cdw10=rng.choice((0, 1, 2, 3, 7)) | rng.choice((0, 1, 2, 3, 5)) << 3))

    def self_test(self) -> Req:
        rng = self.rng
        return Req(0x14, dict(nsid=rng.choice((0, 1, 0xFFFFFFFF)), cdw10=rng.choice((1, 2, 0xF, 3))))

    def format_nvm(self) -> Req:
        rng = self.rng
        return Req(0x80, dict(nsid=rng.choice((1, 0xFFFFFFFF)),
                              cdw10=rng.choice((0, 0, 1, 2)) | rng.choice((0, 0, 1)) << 9))

    # ---------------------------------------------------------------- broken on purpose

    def invalid(self) -> bytes:
        rng = self.rng
        text = rng.random() < 0.35
        base = self.valid()
        if text:
            base.data = base.data[:TEXT_DATA_OUT]
            how = rng.choice(("flags", "metadata_len", "timeout", "dlen_mod4", "dlen_size",
                              "dlen_huge", "dir0_data", "bidi", "nsid", "qmgmt", "unknown", "policy",
                              "junk_key", "no_opcode", "dup", "bad_number", "data_bad",
                              "data_mismatch", "data_on_read", "nonascii", "nul", "overlong"))
        else:
            how = rng.choice(("flags", "metadata_len", "timeout", "dlen_mod4", "dlen_size",
                              "dlen_huge", "dir0_data", "bidi", "nsid", "qmgmt", "unknown",
                              "policy", "mptr", "reserved", "truncated_data"))
        if how in ("overlong",) and rng.random() < 0.8:
            how = "junk_key"                # a 64 KiB line is expensive: keep it rare
        return self._break(base, how, text)

    def _break(self, req: Req, how: str, text: bool) -> bytes:
        rng, ctl, f = self.rng, self.ctl, req.fields
        if how == "flags":
            f["flags"] = rng.randrange(1, 256)
        elif how == "metadata_len":
            f["metadata_len"] = rng.choice((4, 512, rng.randrange(1, 1 << 32)))
        elif how == "timeout":
            f["timeout_ms"] = rng.choice((MAX_TIMEOUT_MS + 1, rng.randrange(MAX_TIMEOUT_MS + 1, 1 << 32)))
        elif how == "dlen_mod4":
            k = rng.choice((1, 2, 3))
            f["data_len"] = req.data_len() + k
            if req.opcode & 3 == 1:
                req.data += bytes(k)
        elif how == "dlen_size":
            if self.queue == ADMIN:
                req = Req(rng.choice((0x06, 0x02)), dict(nsid=0xFFFFFFFF, cdw10=0x02 | 127 << 16))
                f = req.fields
                f["data_len"] = rng.choice((4096 - 4, 4096 + 4, 8, 1024)) if req.opcode == 0x06 \
                    else rng.choice((4, 508, 516, 4096))
            else:
                req = self._rw(rng.choice((0x01, 0x02, 0x05)), data=False)
                f = req.fields
                bs = ctl.namespaces.get(f["nsid"], (512, 0))[0]
                right = ((f["cdw12"] & 0xFFFF) + 1) * bs
                f["data_len"] = max(4, right + rng.choice((-4, 4, -bs, bs, 4 * bs)))
                if f["data_len"] == right:
                    f["data_len"] += 4
                if req.opcode & 3 == 1:
                    req.data = rng.randbytes(min(f["data_len"], TEXT_DATA_OUT if text else 1 << 20))
        elif how == "dlen_huge":
            f["data_len"] = rng.choice(((ctl.mdts or 1 << 28) + 4, 1 << 24, 0xFFFFFFFC, 1 << 28))
            req.data = b""
        elif how == "dir0_data":
            op = rng.choice((0x10, 0x14, 0x80, 0x0C) if self.queue == ADMIN else (0x00, 0x08, 0x04))
            req = Req(op, dict(nsid=1, data_len=4 * rng.randint(1, 1024)))
        elif how == "bidi":
            req = Req(rng.randrange(64) << 2 | 3, dict(nsid=1, data_len=4 * rng.randint(0, 64)))
        elif how == "nsid" and self.queue == IO:
            f["nsid"] = rng.choice((0, 2, 31, 32, 0xFFFFFFFF, rng.randrange(2, 1 << 32)))
        elif how == "qmgmt" or how == "nsid":
            op = rng.choice(sorted(QUEUE_MGMT[self.queue]))
            fields = dict(nsid=rng.choice((0, 1)), cdw10=rng.randrange(1 << 32),
                          cdw11=rng.randrange(1 << 32))
            if op & 3 == 2:
                fields["data_len"] = 4 * rng.randint(1, 16)
            req = Req(op, fields, rng.randbytes(4 * rng.randint(1, 16)) if op & 3 == 1 else b"")
            if op == 0x7F:              # Fabrics: bits 1:0 = 11b, FCTYPE in CDW10 7:0
                req.fields["cdw10"] = rng.choice((0x00, 0x01, 0x04, 0x05, 0x06))
                req.fields["data_len"] = rng.choice((0, 1024))
        elif how == "unknown":
            effects = ctl.effects[self.queue]
            choices = [op for op in range(256) if not effects[op] & CSUPP
                       and op not in QUEUE_MGMT[self.queue] and op & 3 != 3]
            op = rng.choice(choices)
            fields = dict(nsid=1, cdw10=rng.randrange(1 << 32))
            data = b""
            if op & 3 == 2:
                fields["data_len"] = 4 * rng.randint(1, 1024)
            elif op & 3 == 1:
                data = rng.randbytes(4 * rng.randint(1, 256))
            req = Req(op, fields, data)
        elif how == "policy":
            req = self.not_readonly() if self.policy == "readonly" else \
                Req(rng.choice(sorted(QUEUE_MGMT[self.queue])), dict(cdw10=1))
        elif how == "mptr":
            f["mptr"] = rng.randrange(1, 1 << 64)
            req.binary_only = True
        elif how == "reserved":
            f["reserved"] = rng.randrange(1, 1 << 32)
            req.binary_only = True
        elif how == "truncated_data" and req.data:
            # a binary Write whose data ends early: the next request's bytes complete it
            out = self.encode(req, text=False)
            return out[:rng.randrange(64, len(out))]
        text = text and not req.binary_only and len(req.data) <= TEXT_DATA_OUT
        if text and how not in ("flags", "metadata_len", "timeout", "dlen_mod4", "dlen_size",
                                "dlen_huge", "dir0_data", "bidi", "nsid", "qmgmt", "unknown",
                                "policy"):
            return self._break_text(req, how)
        return self.encode(req, text=text)

    def _break_text(self, req: Req, how: str) -> bytes:
        rng = self.rng
        line = self.encode(req, text=True).rstrip(b"\n")
        words = line.split(b" ") if b" " in line else [line]
        if how == "junk_key":
            words.insert(rng.randrange(len(words) + 1), rng.choice(JUNK_KEYS).encode())
        elif how == "no_opcode":
            words = [w for w in words if not w.lstrip().startswith(b"opcode=")] or [b"nsid=1"]
        elif how == "dup":
            words.append(rng.choice(words).strip() or b"opcode=6")
        elif how == "bad_number":
            key = rng.choice(("nsid", "cdw10", "cid", "opcode", "data_len", "timeout_ms", "cdw15"))
            value = rng.choice(BAD_NUMBERS + ["65536" if key == "cid" else "256" if key == "opcode"
                                              else "0x100000000"])
            words = [w for w in words if not w.lstrip().startswith(key.encode() + b"=")]
            words.append(f"{key}={value}".encode())
        elif how == "data_bad":
            words.append(rng.choice((b"data=zz", b"data=abc", b"data=0x1234", b"data=12 34"[:7],
                                     b"data=g0")))
        elif how == "data_mismatch":
            n = 4 * rng.randint(1, 32)
            words = [w for w in words if not w.lstrip().startswith((b"data=", b"data_len="))]
            words.append(b"data=" + rng.randbytes(n).hex().encode())
            words.append(b"data_len=%d" % (n + 4 * rng.randint(1, 8)))
        elif how == "data_on_read":
            words.append(b"data=" + rng.randbytes(4 * rng.randint(1, 8)).hex().encode())
        elif how == "nonascii":
            words.insert(rng.randrange(len(words) + 1), bytes([rng.randrange(0x80, 0x100)]) + b"=1")
        elif how == "nul":
            pos = rng.randrange(1, len(line) + 1) if line else 0
            return line[:pos] + b"\0" + line[pos:] + b"\n"
        elif how == "overlong":
            pad = rng.randint(MAX_LINE + 1, MAX_LINE + 4096) - len(line) - 1
            return line + b" " * max(pad, 1) + b"\n"
        return b" ".join(words) + b"\n"

    # ---------------------------------------------------------------- mutants and junk

    def mutant(self) -> bytes:
        rng = self.rng
        base = bytearray(self.encode(self.valid(policy=rng.choice((self.policy, "all")))))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            self._mutate(base)
        return bytes(base) or b"\n"

    def _mutate(self, b: bytearray) -> None:
        rng = self.rng
        n = len(b)
        how = rng.randrange(12)
        is_text = bool(b) and b[0] in TEXT_START and len(b) > 1 and b[1] != 0
        if not b:
            b += rng.randbytes(rng.randint(1, 64))
        elif how == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif how == 1:
            b[rng.randrange(n)] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x20, 0x23, 0x3D,
                                              rng.randrange(256)))
        elif how == 2:
            del b[rng.randrange(n):]
        elif how == 3:
            i = rng.randrange(n + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif how == 4:
            i = rng.randrange(n)
            del b[i:i + rng.randint(1, 32)]
        elif how == 5:
            i = rng.randrange(n)
            b[i:i] = b[i:i + rng.randint(1, 64)]
        elif how == 6:
            other = self.encode(self.valid(policy="all"))
            b[rng.randrange(n + 1):] = other[rng.randrange(len(other)):]
        elif how == 7:                  # a random opcode, queue management and Fabrics included
            op = rng.choice((rng.randrange(256), 0x7F, 0x7C, 0x18, 0x0C, 0x08, 0x01, 0x05, 0x45))
            if is_text:
                b[:] = re.sub(rb"opcode=\S+", b"opcode=%#x" % op, bytes(b), count=1)
            else:
                b[0] = op
        elif how == 8:                  # a huge or odd data_len
            value = rng.choice((0xFFFFFFFF, 1 << 31, 1 << 20, 1 << 19, rng.randrange(1 << 32),
                                rng.randrange(1 << 12)))
            if is_text:
                b[:] = re.sub(rb"data_len=\S+", b"data_len=%d" % value, bytes(b), count=1)
                if b"data_len=" not in b:
                    b[-1:-1] = b" data_len=%d" % value
            elif n >= 28:
                b[24:28] = struct.pack("<I", value)
        elif how == 9:
            b.insert(rng.randrange(n + 1), 0x0A)
        elif how == 10 and n >= 64 and not is_text:
            k = rng.randrange(16)
            b[4 * k:4 * k + 4] = rng.randbytes(4)
        else:
            i = rng.randrange(n)
            b[i:i + 1] = rng.choice((b"\r", b"\t", b"#", b"=", b"==", b" ", b"\x00", b"0x"))

    def junk(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return rng.randbytes(rng.randint(1, 128))
        if r < 0.8:
            alphabet = "abcdefghijklmnopqrstuvwxyz0123456789=x #\t_"
            return ("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) + "\n").encode()
        return bytes(rng.randint(1, 200))

    def blank(self) -> bytes:
        return self.rng.choice((b"\n", b"   \n", b"# a comment\n", b"\t# x\n", b"\r\n", b"#\n"))


# ------------------------------------------------------------------ answers

STATUS_LINE = re.compile(rb"status=0x([0-9a-f]{4}) sct=0x([0-7]) sc=0x([0-9a-f]{2}) dnr=([01]) "
                         rb"more=([01]) crd=([0-3]) result=0x[0-9a-f]{8} dw1=0x[0-9a-f]{8} "
                         rb"cid=(\d+) data_len=(\d+) name=(\S+)")


class Expected(NamedTuple):
    text: bool
    cid: int
    data_len: int                   # bytes of data in the answer
    verify: tuple | None            # ("read", offset) or ("identify",): what the data must be
    what: str                       # for messages


# ------------------------------------------------------------------ sessions

class Lost(Exception):
    """The session's stream can no longer be followed: close it."""


class Answers:
    """The answers due on one open file, in order, and the bytes read of them."""

    def __init__(self, phase: "Phase", name: str, expected=(), count: bool = True):
        self.phase, self.name, self.count = phase, name, count
        self.expected: deque[Expected] = deque(expected)
        self.buf = bytearray()

    def feed(self, chunk: bytes, asked: int) -> None:
        """Check the answers in `chunk` (a read of `asked` bytes returned it)."""
        self.buf += chunk
        buf, pos, phase = self.buf, 0, self.phase
        while self.expected:
            e = self.expected[0]
            end = self._text(pos, e) if e.text else self._binary(pos, e)
            if end is None:
                break
            pos = end
            self.expected.popleft()
            phase.stats.answers += self.count
        del buf[:pos]
        if len(chunk) < asked and buf:
            phase.violation("answer-torn", f"{self.name}: a read of {asked} bytes returned "
                            f"{len(chunk)}, ending {len(buf)} bytes into the answer to "
                            f"{self.expected[0].what if self.expected else '(none due)'}")
            raise Lost("torn answer")
        if not self.expected and buf:
            phase.violation("answer-extra", f"{self.name}: {len(buf)} byte(s) after the last "
                            f"answer due (duplicated or unasked): {bytes(buf[:80])!r}")
            raise Lost("extra answers")

    def _binary(self, pos: int, e: Expected) -> int | None:
        buf = self.buf
        end = pos + 16 + e.data_len
        if len(buf) < end:
            return None
        cid, word = struct.unpack_from("<HH", buf, pos + 12)
        if cid != e.cid or not word & 1:
            self.phase.violation("answer-mismatch", f"{self.name}: expected the answer to "
                                 f"{e.what}, got a CQE with cid {cid}, status word {word:#06x} "
                                 f"(the phase tag must be set): {bytes(buf[pos:pos + 16]).hex()}")
            raise Lost("answer mismatch")
        if e.verify and word >> 1 == 0:
            self._verify(e, bytes(buf[pos + 16:end]))
        return end

    def _text(self, pos: int, e: Expected) -> int | None:
        """A status line, ceil(data_len / 16) xxd lines, an empty line."""
        buf = self.buf
        rows = -(-e.data_len // 16)
        ends = []
        at = pos
        for _ in range(rows + 2):
            nl = buf.find(b"\n", at)
            if nl < 0:
                return None
            ends.append(nl)
            at = nl + 1
        line = bytes(buf[pos:ends[0]])
        m = STATUS_LINE.fullmatch(line)
        bad = None
        status = -1
        if m is None:
            bad = "malformed status line"
        else:
            status, sct, sc, dnr, more, crd = (int(m[1], 16), int(m[2], 16), int(m[3], 16),
                                               int(m[4]), int(m[5]), int(m[6]))
            if (sc, sct, crd, more, dnr) != (status & 0xFF, status >> 8 & 7, status >> 11 & 3,
                                             status >> 13 & 1, status >> 14 & 1):
                bad = "its fields disagree with status"
            elif int(m[7]) != e.cid or int(m[8]) != e.data_len:
                bad = f"cid={m[7].decode()} data_len={m[8].decode()}"
        data = bytearray()
        for i in range(rows):
            if bad is not None:
                break
            row = bytes(buf[ends[i] + 1:ends[i + 1]])
            try:
                if row[:10] != b"%08x: " % (16 * i):
                    raise ValueError("bad offset")
                part = bytes.fromhex(row[10:49].decode("ascii").replace(" ", ""))
                if len(part) != min(16, e.data_len - 16 * i):
                    raise ValueError("bad length")
            except ValueError as x:
                bad = f"xxd line {i} ({x}): {row!r}"
                break
            data += part
        if bad is None and ends[rows + 1] != ends[rows] + 1:
            bad = f"no empty line after the data: {bytes(buf[ends[rows] + 1:ends[rows + 1]])[:80]!r}"
        if bad is not None:
            self.phase.violation("answer-mismatch", f"{self.name}: the answer to {e.what}: {bad}; "
                                 f"status line {line[:200]!r}")
            raise Lost("answer mismatch")
        if e.verify and status == 0:
            self._verify(e, bytes(data))
        return ends[rows + 1] + 1

    def _verify(self, e: Expected, data: bytes) -> None:
        phase = self.phase
        if e.verify[0] == "read":
            want = phase.backing_bytes(e.verify[1], len(data))
            what = f"the namespace file's bytes at {e.verify[1]}"
        else:
            want, what = phase.ctl.identify, "nvme0/identify"
        phase.stats.verified += 1
        if want is not None and data != want:
            first = next((i for i, (a, b) in enumerate(zip(data, want)) if a != b), -1)
            phase.violation("answer-data", f"{self.name}: {e.what}: the data differs from {what} "
                            f"(first difference at byte {first})")


class Session:
    """One open mailbox: its request stream, a mirror of what the daemon holds of it,
    and the answers still due, in order."""

    READ_SIZE = 1 << 20

    def __init__(self, phase: "Phase", queue: str, name: str, flags: int, lazy: int):
        self.phase, self.queue, self.name = phase, queue, name
        self.path = phase.mount.root / "passthru" / name
        self.fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
        self.write_only = flags & os.O_ACCMODE == os.O_WRONLY
        self.gen = Generator(phase.rng, queue, phase.policy, phase)
        self.mirror = MailboxSession()
        self.stream = bytearray()       # the local stream from position sbase on
        self.sbase = 0
        self.pos = 0                    # the next byte to write
        self.gen_end = 0                # bytes generated so far
        self.starts: list[int] = []     # where each generated unit begins (ascending)
        self.units: deque[tuple[int, str]] = deque()    # units not yet attempted: (start, category)
        self.answers = Answers(phase, name)
        self.due = 0                    # approximate bytes of answers not yet read
        self.lazy = lazy                # read only once this many answer bytes are due
        self.kept: list[Expected] = []  # write-only: every answer, for the kept-answers check
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        self.flood_next = False

    # ---------------------------------------------------------------- the stream

    def _generate(self, need_end: int) -> None:
        while self.gen_end < need_end:
            data, category = self.gen.unit()
            self._append(data, category)

    def _append(self, data: bytes, category: str) -> None:
        self.starts.append(self.gen_end)
        self.units.append((self.gen_end, category))
        self.stream += data
        self.gen_end += len(data)

    def _next_start(self, after: int) -> int:
        """The first unit start after local position `after` (generating it if need be)."""
        self._generate(after + 1)
        i = bisect.bisect_right(self.starts, after)
        if i == len(self.starts):
            self._generate(self.gen_end + 1)
        return self.starts[i]

    def _bytes(self, a: int, b: int) -> bytes:
        return bytes(self.stream[a - self.sbase:b - self.sbase])

    def _attempted(self, end: int) -> None:
        stats = self.phase.stats
        while self.units and self.units[0][0] < end:
            stats.sent[self.units.popleft()[1]] += 1

    def _trim(self, keep_from: int) -> None:
        if keep_from - self.sbase > 1 << 20:
            del self.stream[:keep_from - self.sbase]
            self.sbase = keep_from
            i = bisect.bisect_left(self.starts, keep_from)
            if i > 1000:
                del self.starts[:i - 1]

    def step(self) -> None:
        """One write of a random length: a cut anywhere in the stream."""
        rng = self.phase.rng
        if self.flood_next and self.pos == self.gen_end:
            self.flood_next = False
            for data in self.gen.flood():
                self._append(data, "valid")
            length = self.gen_end - self.pos
        elif self.flood_next:
            length = self.gen_end - self.pos        # what is generated first, then the flood
        else:
            r = rng.random()
            if r < 0.3:
                length = rng.randint(1, 80)
            elif r < 0.6:
                length = rng.randint(1, 4096)
            elif r < 0.85:                      # up to the next request's start
                length = self._next_start(self.pos) - self.pos
            else:
                length = rng.randint(4096, 64 << 10)
        self._generate(self.pos + length)
        self.write(self.pos, self._bytes(self.pos, self.pos + length))

    def write(self, pos: int, data: bytes, retry: int = 0) -> None:
        """Write `data` (the stream from `pos`) and check what the write took."""
        if self.fd < 0:
            raise Lost("closed")
        phase = self.phase
        stats = phase.stats
        target = phase.ctl.target(self.queue, phase.policy)
        start = self.mirror.received
        pred = copy.deepcopy(self.mirror)
        pred.receive_data(data)
        reqs: list[tuple[P.PassthruRequest, int, int]] = []
        failure: RequestError | None = None
        cut = None
        while True:
            event = pred.next_request(target)
            if event is NEED_DATA:
                break
            if isinstance(event, RequestError):
                failure, cut = event, event.start
                break
            reqs.append((event, pred.last_start, pred.consumed))
            if phase.ctl.changes_namespaces(self.queue, event.cmd.opcode) and pred.buffered:
                cut = pred.consumed         # Short writes: the rest is checked after the change
                break
        taken = len(data) if cut is None else cut - start
        phase.watchdog.kick(f"write of {len(data)} bytes on {self.name}")
        try:
            n, err = os.write(self.fd, data), None
        except OSError as e:
            n, err = 0, e.errno
        phase.watchdog.kick()
        stats.writes += 1
        where = (f"{self.name} (--passthru {phase.policy}): a write of {len(data)} bytes at "
                 f"stream offset {start}")

        if err is None and n == taken and n > 0:
            if cut is not None:
                pred.rewind(cut)            # the caller writes the rest again
                stats.short_writes += 1
            self._attempted(pos + n)
            self._commit(pred, reqs, start, pos)
            self.pos = pos + n
            return
        if err is not None and failure is not None and taken <= 0 and err == failure.errno:
            pred.discard()                  # the bad request and everything after it
            self._refused(failure, start, pos, data, err)
            self.mirror = pred
            if failure.start < start:
                self._out_of_step(err)
                return
            self._attempted(pos + failure.start - start + 1)
            self._skip_after(pos + failure.start - start)
            return
        first_fails = failure is not None and taken <= 0
        if err == errno.ENOBUFS and reqs and not first_fails:
            # Memory: the write's first request does not fit; nothing of it was taken
            stats.refused[ename(err)] += 1
            if retry == 0:
                self.drain(full=True)
            elif retry == 1:
                phase.drain_all()
            else:
                phase.violation("enobufs-stuck",
                                f"{where}: ENOBUFS again after every session's answers were read "
                                f"(Memory: read the answers, then write it again); its first "
                                f"request: {reqs[0][0].cmd}")
                raise Lost("ENOBUFS persists")
            self.write(pos, data, retry + 1)
            return
        if err is None and 0 < n < taken and n in {s - start for _, s, _ in reqs[1:]}:
            # Memory: a short write that ends before a request that does not fit
            stats.short_writes += 1
            stats.memory_short += 1
            replay = copy.deepcopy(self.mirror)
            replay.receive_data(data[:n])
            got = []
            while (event := replay.next_request(target)) is not NEED_DATA:
                assert not isinstance(event, RequestError), "a taken prefix holds a bad request"
                got.append((event, replay.last_start, replay.consumed))
            self._attempted(pos + n)
            self._commit(replay, got, start, pos)
            self.pos = pos + n
            return
        if err in (errno.EAGAIN, errno.ETIMEDOUT) and retry < 3:
            stats.refused[ename(err)] += 1      # Waits: nothing was taken; try again
            time.sleep(0.05)
            self.write(pos, data, retry + 1)
            return
        expected = f"{taken} bytes" if taken > 0 else ename(failure.errno if failure else None)
        detail = f"; the refused request at offset {failure.start}: {failure}" if failure else ""
        kind = "write-errno" if err is not None and err not in WRITE_ERRNOS else "write-result"
        phase.violation(kind, f"{where}: returned {n if err is None else ename(err)}, expected "
                              f"{expected} ({len(reqs)} whole request(s) before){detail}; "
                              f"the write's first bytes: {data[:96]!r}")
        raise Lost("write result")

    def _commit(self, mirror: MailboxSession, reqs, start: int, pos: int) -> None:
        """The daemon took these requests: each must be one nvmefs(5) lets through, and
        is answered in turn."""
        phase = self.phase
        stats = phase.stats
        changed = False
        for req, s_off, e_off in reqs:
            local = pos + (s_off - start)
            head = self._bytes(local, min(pos + (e_off - start), local + MAX_LINE + 1))
            verdicts = man_verdicts(head, self.queue, phase.policy, phase.ctl)
            if not any(not v.must and v.kind in ("binary", "text") for v in verdicts):
                why = "; ".join(f"{v.kind}: {'/'.join(sorted(map(ename, v.must))) or '-'}"
                                for v in verdicts)
                phase.violation("accepted-refusable",
                                f"{self.name} (--passthru {phase.policy}): the daemon accepted a "
                                f"request nvmefs(5) refuses ({why}): {head[:160]!r}")
            stats.accepted += 1
            self._expect(req)
            changed = changed or phase.ctl.changes_namespaces(self.queue, req.cmd.opcode)
        self.mirror = mirror
        self._trim(pos + (mirror.consumed - start))
        if changed:
            stats.ns_changes += 1
            if not self.write_only:
                self.drain(full=True)
            phase.refresh_ctl()

    def _expect(self, req: P.PassthruRequest) -> None:
        phase = self.phase
        cmd = req.cmd
        verify = None
        if phase.policy != "all" and self.queue == IO and cmd.opcode == 0x02 \
                and cmd.nsid in phase.ctl.namespaces:
            verify = ("read", (cmd.cdw10 | cmd.cdw11 << 32) * phase.ctl.namespaces[cmd.nsid][0])
        elif phase.policy == "readonly" and self.queue == ADMIN and cmd.opcode == 0x06 \
                and cmd.cdw10 == 1:
            verify = ("identify",)
        e = Expected(req.text, cmd.cid, req.data_in_len, verify,
                     f"{'text' if req.text else 'binary'} opcode {cmd.opcode:#04x} cid {cmd.cid}")
        if self.write_only:
            self.kept.append(e)             # answered before the write returned; kept for a reader
        else:
            self.answers.expected.append(e)
            self.due += _answer_bytes(e)

    def _refused(self, failure: RequestError, start: int, pos: int, data: bytes, err: int) -> None:
        phase = self.phase
        phase.stats.refused[ename(err)] += 1
        local = pos + (failure.start - start)
        had = self._bytes(local, pos + len(data))       # what the daemon had of the request
        verdicts = man_verdicts(had, self.queue, phase.policy, phase.ctl)
        allowed = frozenset().union(*(v.allowed for v in verdicts))
        if err not in allowed:
            says = ", ".join(f"{v.kind}: {'/'.join(sorted(map(ename, v.allowed))) or 'valid'}"
                             for v in verdicts)
            kinds = [v.kind for v in verdicts]
            phase.violation(f"errno:{ename(err)}:{'overlong' if 'overlong' in kinds else '/'.join(kinds)}",
                            f"{self.name} (--passthru {phase.policy}): refused with {ename(err)}; "
                            f"nvmefs(5) says {says}; the request ({len(had)} bytes): "
                            f"{had[:160]!r}{'...' if len(had) > 160 else ''}; the daemon's "
                            f"reason: {failure}")

    def _out_of_step(self, err: int) -> None:
        """Short writes: a bad request begun in an earlier write leaves the session out
        of step; every later write fails with its errno: open the mailbox again."""
        phase = self.phase
        phase.stats.out_of_step += 1
        try:
            os.write(self.fd, b"\n")
            got = 0
        except OSError as e:
            got = e.errno
        if got != err:
            phase.violation("out-of-step", f"{self.name}: after a bad request begun in an "
                                           f"earlier write, the next write gave "
                                           f"{ename(got) if got else 'success'}, not {ename(err)}")
        phase.retire(self)

    def _skip_after(self, local_error: int) -> None:
        """After a refused request the daemon forgets the stream: go on at the next request."""
        nxt = max(self._next_start(local_error), self.pos)
        self.phase.stats.skipped_bytes += nxt - self.pos
        self.pos = nxt
        self._trim(self.pos)

    # ---------------------------------------------------------------- answers

    @property
    def expected(self) -> deque:
        return self.answers.expected

    def drain(self, full: bool) -> None:
        """Read answers: those available now, or (full) every one due, then end of file."""
        if self.write_only:
            return
        rng = self.phase.read_rng
        while self.expected:
            if not full and not self.poller.poll(0):
                return
            size = self.READ_SIZE if rng.random() < 0.9 else rng.randint(1, 4096)
            chunk = self._read(size)
            if not chunk:
                self.phase.violation("answer-lost", f"{self.name}: end of file with "
                                     f"{len(self.expected)} answer(s) due, the next: "
                                     f"{self.expected[0].what}")
                raise Lost("answers lost")
            before = len(self.expected)
            self.answers.feed(chunk, size)
            self.due = sum(map(_answer_bytes, self.expected)) if before - len(self.expected) > 64 \
                or not self.expected else max(0, self.due - len(chunk))
        if full:
            chunk = self._read(self.READ_SIZE)
            if chunk:
                self.phase.violation("answer-extra", f"{self.name}: {len(chunk)} byte(s) after "
                                     f"the last answer due (duplicated or unasked): {chunk[:80]!r}")
                raise Lost("extra answers")

    def _read(self, size: int) -> bytes:
        phase = self.phase
        phase.watchdog.kick(f"read on {self.name}")
        try:
            chunk = os.read(self.fd, size)
        except OSError as e:
            kind = "read-wait" if e.errno in WAIT_ERRNOS else "read-errno"
            phase.violation(kind, f"{self.name}: a read failed with {ename(e.errno)} "
                            f"({len(self.expected)} answers due; the sim has no faults armed, so "
                            f"no batch may be lost)")
            raise Lost("read failed") from None
        phase.watchdog.kick()
        phase.stats.reads += 1
        return chunk

    def close(self, drain: bool) -> None:
        if drain and not self.write_only:
            try:
                self.drain(full=True)
            except Lost:
                pass
        self.phase.stats.abandoned += len(self.expected)
        os.close(self.fd)
        self.fd = -1


def _answer_bytes(e: Expected) -> int:
    return 16 + e.data_len if not e.text else 160 + e.data_len * 5


# ------------------------------------------------------------------ a phase: one policy, one mount

@dataclass
class Stats:
    policy: str
    sent: Counter = field(default_factory=Counter)        # requests (units) by category
    accepted: int = 0
    refused: Counter = field(default_factory=Counter)     # by errno name
    answers: int = 0
    abandoned: int = 0          # answers due on sessions closed without reading them
    verified: int = 0           # answers whose data was compared (Read, Identify)
    writes: int = 0
    reads: int = 0
    short_writes: int = 0
    memory_short: int = 0       # of which before a request that did not fit
    skipped_bytes: int = 0
    sessions: int = 0
    lost_sessions: int = 0
    out_of_step: int = 0        # sessions ended by a bad request begun in an earlier write
    ns_changes: int = 0
    kept_checks: int = 0
    notes: Counter = field(default_factory=Counter)
    peak_rss_kib: int = 0
    elapsed: float = 0.0

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    def line(self) -> str:
        refused = sum(self.refused.values())
        by = ", ".join(f"{k} {v}" for k, v in self.refused.most_common())
        cats = ", ".join(f"{k} {v}" for k, v in sorted(self.sent.items()))
        return (f"{self.policy:>8}: {self.total_sent} requests sent ({cats}); "
                f"{self.accepted} accepted; {refused} refused ({by or '-'}); "
                f"{self.answers} answers ({self.abandoned} abandoned unread, {self.verified} "
                f"data-checked); {self.writes} writes ({self.short_writes} short, "
                f"{self.memory_short} for memory); {self.sessions} sessions ({self.out_of_step} out "
                f"of step, {self.kept_checks} "
                f"kept-answer checks, {self.ns_changes} namespace changes); peak RSS "
                f"{self.peak_rss_kib / 1024:.1f} MiB; {self.elapsed:.1f} s")


class Phase:
    def __init__(self, fuzz: "Fuzz", policy: str, mount: Mount, count: int, seed: int):
        self.fuzz, self.policy, self.mount, self.count = fuzz, policy, mount, count
        self.rng = random.Random(seed)
        # when to read and how much: timing decides what is there to read, so these
        # choices have their own generator and the requests stay the same for a seed
        self.read_rng = random.Random(seed + 1)
        self.stats = Stats(policy)
        self.ctl = Ctl.read(mount.root)
        self.watchdog = fuzz.watchdog
        self.sessions: list[Session] = []
        self.private = 0
        self._backing = None

    def violation(self, kind: str, message: str) -> None:
        self.fuzz.violation(self.policy, kind, message)

    def refresh_ctl(self) -> None:
        self.watchdog.kick("refresh after a namespace change")
        self.ctl = Ctl.read(self.mount.root)

    def backing_bytes(self, offset: int, length: int) -> bytes | None:
        if self._backing is None:
            self._backing = open(self.mount.backing(), "rb")
        if offset < 0 or offset + length > os.fstat(self._backing.fileno()).st_size:
            return None
        data = os.pread(self._backing.fileno(), length, offset)
        return data if len(data) == length else None

    def drain_all(self) -> None:
        for s in list(self.sessions):
            try:
                s.drain(full=True)
            except Lost:
                self.drop(s)

    def retire(self, s: Session) -> None:
        """Close a session as a user would, reading what it is owed (its owner
        removes a private mailbox)."""
        if s in self.sessions:
            self.sessions.remove(s)
        s.close(drain=True)

    def drop(self, s: Session) -> None:
        """Close a session whose stream can no longer be followed (once)."""
        if s.fd < 0:
            return
        self.stats.lost_sessions += 1
        if s in self.sessions:
            self.sessions.remove(s)
        s.close(drain=False)
        self._unlink(s)

    def _unlink(self, s: Session) -> None:
        if s.name not in (ADMIN, IO):
            try:
                os.unlink(s.path)
            except OSError as e:
                self.violation("unlink", f"rm {s.name}: {ename(e.errno)}")

    def open_session(self, write_only: bool = False) -> Session:
        rng = self.rng
        queue = IO if rng.random() < 0.55 else ADMIN
        if write_only or rng.random() < 0.2:
            self.private += 1
            name = f"{queue}.fz{self.private}"
            flags = (os.O_WRONLY if write_only else os.O_RDWR) | os.O_CREAT
        else:
            name, flags = queue, os.O_RDWR
        r = rng.random()
        lazy = 0 if r < 0.6 else rng.choice((256 << 10, 4 << 20, 32 << 20)) if r < 0.95 else 96 << 20
        self.watchdog.kick(f"open {name}")
        s = Session(self, queue, name, flags, lazy)
        self.stats.sessions += 1
        return s

    def run(self) -> None:
        if self.policy == "off":
            self.run_off()
            return
        rng = self.rng
        stats = self.stats
        lost = 0
        while stats.total_sent < self.count:
            if self.watchdog.fired or not self.mount.alive():
                break
            try:
                if not self.sessions or (len(self.sessions) < 3 and rng.random() < 0.01):
                    self.sessions.append(self.open_session())
                if rng.random() < 0.0015:
                    self.write_only_session()
                    continue
                s = rng.choice(self.sessions)
                if rng.random() < 0.002:
                    self.sessions.remove(s)
                    s.close(drain=rng.random() < 0.8)
                    self._unlink(s)
                    continue
                if s.queue == IO or rng.random() < 0.5:
                    if rng.random() < 0.0007:
                        s.flood_next = True
                s.step()
                if s.fd < 0:                # retired by the step
                    self._unlink(s)
                    continue
                if s.due > s.lazy:
                    r = self.read_rng.random()
                    if r < 0.5:
                        s.drain(full=False)
                    elif r < 0.6 or s.due > 48 << 20:
                        s.drain(full=True)
            except Lost:
                lost += 1
                self.drop(s)
                if lost > 20:
                    self.violation("phase", "more than 20 sessions lost: phase ended early")
                    break
            except OSError as e:
                if self.watchdog.fired or not self.mount.alive():
                    break
                self.violation("oserror", f"{type(e).__name__}: {e}")
                lost += 1
                if lost > 20:
                    break
        for s in list(self.sessions):
            if self.watchdog.fired or not self.mount.alive():
                break
            try:
                s.close(drain=True)
                self._unlink(s)
            except OSError as e:
                self.violation("oserror", f"closing {s.name}: {e}")
        self.sessions.clear()

    def write_only_session(self) -> None:
        """O_WRONLY on a private mailbox: each write returns once its requests are
        answered; then stat gives the size of the kept answers and a read-only open
        reads them: this open's answers, in order (Sessions)."""
        rng = self.rng
        s = self.open_session(write_only=True)
        try:
            for _ in range(rng.randint(1, 30)):
                s.step()
                if s.fd < 0:
                    break                   # retired: out of step
            if s.fd >= 0:
                s.close(drain=False)
            self.watchdog.kick(f"kept answers of {s.name}")
            size = os.stat(s.path).st_size
            fd = os.open(s.path, os.O_RDONLY | os.O_CLOEXEC)
            kept = bytearray()
            try:
                while chunk := os.read(fd, 1 << 20):
                    kept += chunk
            finally:
                os.close(fd)
            self.stats.kept_checks += 1
            if size != len(kept):
                self.violation("kept", f"{s.name}: stat gives {size} bytes, a read-only open "
                               f"reads {len(kept)}")
            reader = Answers(self, f"{s.name} (kept answers)", s.kept, count=False)
            if kept:
                reader.feed(bytes(kept), 1 << 40)
                if reader.expected:
                    self.stats.notes["kept answers shorter than the session's"] += 1
            elif s.kept:
                self.stats.notes["kept answers dropped"] += 1
        except Lost:
            self.stats.lost_sessions += 1
        finally:
            if s.fd >= 0:
                os.close(s.fd)
            self._unlink(s)

    def run_off(self) -> None:
        """--passthru off: no open for writing succeeds (EACCES); reading finds nothing."""
        rng, stats = self.rng, self.stats
        gen = {q: Generator(rng, q, "all", self) for q in (ADMIN, IO)}
        root = self.mount.root
        n = 0
        while stats.total_sent < self.count:
            if self.watchdog.fired or not self.mount.alive():
                break
            queue = rng.choice((ADMIN, IO))
            n += 1
            name = rng.choice((queue, queue, f"{queue}.off{n}"))
            flags = rng.choice((os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                                os.O_WRONLY | os.O_TRUNC)) | (os.O_CREAT if "." in name else 0)
            units = rng.randint(1, 200)
            for _ in range(units):
                _, category = gen[queue].unit()
                stats.sent[category] += 1
            self.watchdog.kick(f"open {name}")
            stats.sessions += 1
            try:
                fd = os.open(root / "passthru" / name, flags | os.O_CLOEXEC, 0o600)
            except OSError as e:
                stats.refused[ename(e.errno)] += units
                if e.errno != errno.EACCES:
                    self.violation(f"errno:{ename(e.errno)}:open", f"--passthru off: opening "
                                   f"{name} for writing failed with {ename(e.errno)}, not EACCES")
            else:
                os.close(fd)
                self.violation("off-open", f"--passthru off: opening {name} with flags {flags:#o} "
                               f"for writing succeeded")
            if "." in name and os.path.exists(root / "passthru" / name):
                os.unlink(root / "passthru" / name)
            if n % 50 == 0:
                fd = os.open(root / "passthru" / queue, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if os.read(fd, 4096):
                        self.violation("off-read", f"--passthru off: {queue} has answers to read")
                finally:
                    os.close(fd)
                for path, text in (("reset", b"1\n"), ("features/volatile-write-cache", b"0\n")):
                    try:
                        with open(root / path, "wb", buffering=0) as f:
                            f.write(text)
                        self.violation("off-open", f"--passthru off: writing {path} succeeded")
                    except OSError as e:
                        if e.errno != errno.EACCES:
                            self.violation(f"errno:{ename(e.errno)}:open",
                                           f"--passthru off: writing {path}: {ename(e.errno)}")


# ------------------------------------------------------------------ the run

class Fuzz:
    def __init__(self, count: int, seed: int, policies: list[str], workdir: Path,
                 rss_limit_mib: int, hang: float, probes: bool):
        self.count, self.seed, self.policies = count, seed, policies
        self.workdir, self.rss_limit_mib, self.hang, self.probes = workdir, rss_limit_mib, hang, probes
        self.violations: list[tuple[str, str, str]] = []
        self.stats: list[Stats] = []
        self.watchdog: Watchdog | None = None
        self.probe_results: list[str] = []

    def violation(self, policy: str, kind: str, message: str) -> None:
        self.violations.append((policy, kind, message))
        if sum(1 for v in self.violations if v[1] == kind) <= 3:
            print(f"VIOLATION [{policy}] {kind}: {message}", flush=True)

    def run(self) -> int:
        t0 = time.monotonic()
        print(f"nvmefs passthru fuzz: seed {self.seed} (FUZZ_SEED={self.seed} repeats it), "
              f"{self.count} requests per policy, policies {','.join(self.policies)}", flush=True)
        for i, policy in enumerate(self.policies):
            self.run_phase(policy, self.seed * 1000 + i)
        if self.probes:
            self.run_probes()
        return self.report(time.monotonic() - t0)

    def _prepare_namespace(self, mount: Mount, seed: int) -> None:
        """A backing file with random bytes where Reads will look (the sim keeps a file
        that is already there)."""
        rng = random.Random(seed)
        mount.nsdir.mkdir(parents=True, exist_ok=True)
        with open(mount.backing(), "wb") as f:
            f.truncate(64 << 20)
            f.write(rng.randbytes(4 << 20))
            for _ in range(64):
                f.seek(rng.randrange(64 << 20) & ~0xFFFF)
                f.write(rng.randbytes(64 << 10))
            f.truncate(64 << 20)

    def run_phase(self, policy: str, seed: int) -> None:
        workdir = self.workdir / policy
        shutil.rmtree(workdir, ignore_errors=True)
        mount = Mount(workdir, policy)
        self._prepare_namespace(mount, seed)
        before = sha256_file(mount.backing())
        t0 = time.monotonic()
        stats = Stats(policy)
        try:
            with mount:
                self.watchdog = Watchdog(mount.device, self.hang)
                self.watchdog.start()
                sampler = RssSampler(mount.pid)
                sampler.start()
                try:
                    phase = Phase(self, policy, mount, self.count, seed)
                    stats = phase.stats
                    try:
                        phase.run()
                    finally:
                        if phase._backing is not None:
                            phase._backing.close()
                        for s in phase.sessions:
                            if s.fd >= 0:
                                os.close(s.fd)
                finally:
                    stats.peak_rss_kib = sampler.stop()
                    self.watchdog.stop()
                if self.watchdog.fired:
                    self.violation(policy, "hang", self.watchdog.fired)
                problem = mount.answering()
                if problem is not None:
                    self.violation(policy, "daemon-death", f"after the phase: {problem}")
                elif mount.died:
                    self.violation(policy, "daemon-death", mount.died)
        except MountError as e:
            self.violation(policy, "mount", str(e))
        except Exception:
            self.violation(policy, "fuzzer-error", traceback.format_exc())
        stats.elapsed = time.monotonic() - t0
        self._after_mount(policy, mount)
        if policy == "readonly" and mount.backing().exists():
            after = sha256_file(mount.backing())
            if after != before:
                self.violation(policy, "readonly-changed",
                               f"the namespace file changed: sha256 {before[:16]}... -> "
                               f"{after[:16]}...")
        if stats.peak_rss_kib > self.rss_limit_mib * 1024:
            self.violation(policy, "rss", f"daemon peak RSS {stats.peak_rss_kib / 1024:.1f} MiB "
                           f"> {self.rss_limit_mib} MiB")
        if policy != "off" and stats.accepted == 0:
            self.violation(policy, "nothing", "no request was accepted: the fuzzer is broken")
        self.stats.append(stats)
        print(stats.line(), flush=True)

    def _after_mount(self, policy: str, mount: Mount) -> None:
        if mount.exit_code not in (0, None) or mount.teardown:
            self.violation(policy, "daemon-exit", f"daemon exit code {mount.exit_code}; teardown: "
                           f"{'; '.join(mount.teardown) or '-'}")
        text = mount.log_text()
        if "Traceback" in text:
            i = text.index("Traceback")
            self.violation(policy, "daemon-exception",
                           f"the daemon logged an exception ({text.count('Traceback')} in all; "
                           f"log {mount.log_path}): {text[max(0, i - 300):i + 1500]}")

    # ---------------------------------------------------------------- probes

    def run_probes(self) -> None:
        try:
            self._run_probes()
        except Exception:
            self.violation("probes", "fuzzer-error", traceback.format_exc())

    def _run_probes(self) -> None:
        """Deterministic checks of rules random streams reach only by luck."""
        t0 = time.monotonic()
        workdir = self.workdir / "probes"
        shutil.rmtree(workdir, ignore_errors=True)
        self._probe_mount(Mount(workdir / "split", "readonly"), self.probe_split_write,
                          self.probe_line_bound, self.probe_kept_whole)
        self._probe_mount(Mount(workdir / "kept", "readonly", args=("--max-buffer", "1M")),
                          self.probe_kept_gives_way)
        print(f"  probes: {'; '.join(self.probe_results)} ({time.monotonic() - t0:.1f} s)",
              flush=True)

    def _probe_mount(self, mount: Mount, *probes) -> None:
        """Run `probes` on one mount under the watchdog; the daemon must live through them."""
        try:
            with mount:
                self.watchdog = Watchdog(mount.device, self.hang)
                self.watchdog.start()
                try:
                    for probe in probes:
                        probe(mount)
                finally:
                    self.watchdog.stop()
                if self.watchdog.fired:
                    self.violation("probes", "hang", self.watchdog.fired)
                if (problem := mount.answering()) is not None:
                    self.violation("probes", "daemon-death", problem)
        except MountError as e:
            self.violation("probes", "mount", str(e))
        self._after_mount("probes", mount)

    @staticmethod
    def _cat(fd: int, blob: bytes) -> list:
        """Write `blob` as cat does (the rest again after a short write, stop at an
        error), from a page-aligned buffer so the kernel splits it at max_write."""
        buf = mmap.mmap(-1, len(blob))
        buf[:] = blob
        results: list = []
        pos = 0
        try:
            with memoryview(buf) as view:
                while pos < len(blob):
                    try:
                        n = os.write(fd, view[pos:])
                    except OSError as e:
                        results.append(ename(e.errno))
                        break
                    results.append(n)
                    pos += n
        finally:
            buf.close()
        return results

    @staticmethod
    def _read_all(fd: int) -> bytes:
        out = bytearray()
        while chunk := os.read(fd, 1 << 20):
            out += chunk
        return bytes(out)

    def probe_split_write(self, mount: Mount) -> None:
        """Short writes: a write ends before a bad request and the next write, which
        starts with it, fails; nothing after the bad request is sent. Here the bad text
        line straddles a point where the kernel may split one big write(2) into FUSE
        writes; its tail is a valid request that must not run: either the write is cut
        before the line, or (the line began in a FUSE write already taken) the session
        is out of step and the rest, written again, fails."""
        marker = 4242
        bad = b"bogus=1 opcode=0x0c nsid=1 cid=%d\n" % marker
        found = []
        for boundary in (128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20):
            lead = boundary - 8             # the bad line starts 8 bytes before the boundary
            filler = (b"#" * 1023 + b"\n") * (lead // 1024) + b"#" * (lead % 1024 - 1) + b"\n"
            blob = filler + bad + b"# end\n"
            self.watchdog.kick(f"split probe {boundary}")
            fd = os.open(mount.root / "passthru" / IO, os.O_RDWR | os.O_CLOEXEC)
            try:
                results = self._cat(fd, blob)
                answers = self._read_all(fd)
            finally:
                os.close(fd)
            ran = b"cid=%d " % marker in answers
            ok = results[-1:] == ["EINVAL"] and results[:-1] in ([lead], [boundary]) and not ran
            if not ok:
                found.append(boundary)
                self.violation("probes", "split-write",
                               f"one write(2) of {len(blob)} bytes (page-aligned) whose bad text "
                               f"line {bad!r} starts at byte {lead}: cat-like writes returned "
                               f"{results} (nvmefs(5) Short writes: {lead} or {boundary}, then EINVAL); the "
                               f"line's tail {bad[8:]!r} was {'run' if ran else 'not run'}"
                               f"{': ' + answers[:120].decode(errors='replace').strip() if ran else ''}")
        self.probe_results.append("split write: " + (f"FAIL at {', '.join(map(str, found))}"
                                                     if found else "ok"))

    def probe_line_bound(self, mount: Mount) -> None:
        """A text line of 65536 bytes (newline included) is taken; one byte more
        fails with EINVAL (Short writes)."""
        head = b"opcode=0x06 cdw10=1 data_len=4096 cid=7"
        results = {}
        for length in (MAX_LINE, MAX_LINE + 1):
            line = head + b" " * (length - len(head) - 1) + b"\n"
            self.watchdog.kick(f"line probe {length}")
            fd = os.open(mount.root / "passthru" / ADMIN, os.O_RDWR | os.O_CLOEXEC)
            try:
                results[length] = self._cat(fd, line)
                self._read_all(fd)
            finally:
                os.close(fd)
        ok = results[MAX_LINE] == [MAX_LINE] and results[MAX_LINE + 1] == ["E2BIG"]
        if not ok:
            self.violation("probes", f"errno:{results[MAX_LINE + 1][-1]}:overlong",
                           f"text lines of {MAX_LINE} and {MAX_LINE + 1} bytes: writes returned "
                           f"{results[MAX_LINE]} and {results[MAX_LINE + 1]} (nvmefs(5) Short "
                           f"writes: taken, then EINVAL)")
        self.probe_results.append(f"line bound: {'ok' if ok else 'FAIL'}")

    def probe_kept_whole(self, mount: Mount) -> None:
        """Sessions: a read-only open starts with the answers of the last open that
        wrote (up to 64 MiB, the latest) -- whole answers, never a torn one (Sessions:
        a read never returns part of an answer). 140 Reads of 512 KiB: 70 MiB of answers."""
        passthru = mount.root / "passthru"
        size = 512 << 10
        count = 140
        blob = b"".join(encode_request(0x02, nsid=1, cid=i, cdw10=i * 1024, cdw12=1023,
                                       data_len=size) for i in range(count))
        self.watchdog.kick("kept-whole probe")
        fd = os.open(passthru / "io.big", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            results = self._cat(fd, blob)
        finally:
            os.close(fd)
        stat_size = os.stat(passthru / "io.big").st_size
        fd = os.open(passthru / "io.big", os.O_RDONLY | os.O_CLOEXEC)
        try:
            first = os.read(fd, 16)
            rest = self._read_all(fd)
        finally:
            os.close(fd)
        os.unlink(passthru / "io.big")
        kept = len(first) + len(rest)
        answer = 16 + size
        cid = struct.unpack_from("<H", first, 12)[0] if len(first) == 16 else None
        whole = kept % answer == 0 and cid == count - kept // answer
        if not whole:
            self.violation("probes", "kept-torn",
                           f"{count} Reads of {size} bytes on a write-only open of io.big (writes "
                           f"returned {results}): a read-only open then reads {kept} bytes (stat: "
                           f"{stat_size}), {kept / answer:.3f} answers of {answer} bytes: the "
                           f"first starts mid-answer (its first 16 bytes: {first.hex()}), so no "
                           f"reader can frame them")
        self.probe_results.append(f"kept answers whole: {'ok' if whole else 'FAIL'}")

    def probe_kept_gives_way(self, mount: Mount) -> None:
        """Sessions / Memory: kept answers are dropped, oldest first, when the mount
        needs their memory for new ones; ENOBUFS means "read the answers, then write
        again". With --max-buffer 1M, a write-only open's kept answers fill most of it;
        then a Read of 128 KiB on another mailbox, with nothing pending anywhere."""
        passthru = mount.root / "passthru"
        self.watchdog.kick("kept probe")
        fd = os.open(passthru / "io.kept", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # each write returns once answered; 36 keep 950,400 bytes, short of the 1M, so
            # none of them has to make room
            for i in range(36):
                os.write(fd, b"".join(encode_request(0x02, nsid=1, cid=j, cdw10=j, data_len=512)
                                      for j in range(50)))
        finally:
            os.close(fd)
        kept = os.stat(passthru / "io.kept").st_size
        big = encode_request(0x02, nsid=1, cid=9, cdw12=255, data_len=128 << 10)
        fd = os.open(passthru / IO, os.O_RDWR | os.O_CLOEXEC)
        results = []
        try:
            for _ in range(3):
                try:
                    results.append(os.write(fd, big))
                    self._read_all(fd)
                    break
                except OSError as e:
                    results.append(ename(e.errno))
                    self._read_all(fd)          # nothing is pending: end of file at once
        finally:
            os.close(fd)
        os.unlink(passthru / "io.kept")
        fd = os.open(passthru / IO, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                after = os.write(fd, big)
                self._read_all(fd)
            except OSError as e:
                after = ename(e.errno)
        finally:
            os.close(fd)
        ok = kept > 1 << 19 and results and results[-1] == len(big)
        if not ok:
            self.violation("probes", "kept-not-dropped",
                           f"--max-buffer 1M: io.kept keeps {kept} bytes of answers; a 128 KiB "
                           f"Read on io, nothing pending anywhere, three times: {results} (the "
                           f"man page: kept answers are dropped when the mount needs their "
                           f"memory); after rm io.kept: {after}")
        self.probe_results.append(f"kept answers give way: {'ok' if ok else 'FAIL'}")

    # ---------------------------------------------------------------- report

    def report(self, elapsed: float) -> int:
        print(f"== seed {self.seed}; {sum(s.total_sent for s in self.stats)} requests in all; "
              f"{elapsed:.1f} s", flush=True)
        for s in self.stats:
            print(s.line())
            if s.notes:
                print("          notes: " + "; ".join(f"{k}: {v}" for k, v in s.notes.items()))
        kinds = Counter((p, k) for p, k, _ in self.violations)
        if kinds:
            print(f"== {len(self.violations)} VIOLATION(S):")
            for (policy, kind), n in kinds.most_common():
                first = next(m for p, k, m in self.violations if (p, k) == (policy, kind))
                print(f"  [{policy}] {kind} x{n}: {first[:1500]}")
        else:
            print("== no violations")
        path = os.environ.get("FUZZ_REPORT")
        if path:
            Path(path).write_text(json.dumps({
                "seed": self.seed, "count": self.count, "elapsed": elapsed,
                "policies": {s.policy: {
                    "sent": s.total_sent, "by_category": dict(s.sent), "accepted": s.accepted,
                    "refused": dict(s.refused), "answers": s.answers, "abandoned": s.abandoned,
                    "verified": s.verified, "writes": s.writes, "short_writes": s.short_writes,
                    "sessions": s.sessions, "kept_checks": s.kept_checks,
                    "peak_rss_mib": round(s.peak_rss_kib / 1024, 1),
                    "elapsed": round(s.elapsed, 1), "notes": dict(s.notes)} for s in self.stats},
                "probes": self.probe_results,
                "violations": [{"policy": p, "kind": k, "message": m} for p, k, m in self.violations],
            }, indent=1))
        return 1 if self.violations else 0


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    count = int(env.get("FUZZ_COUNT", "105000"))
    seed = int(env["FUZZ_SEED"]) if env.get("FUZZ_SEED") else random.SystemRandom().randrange(1 << 32)
    policies = [p for p in env.get("FUZZ_POLICIES", ",".join(POLICIES)).split(",") if p]
    for p in policies:
        if p not in POLICIES:
            print(f"FUZZ_POLICIES: unknown policy {p!r} (known: {', '.join(POLICIES)})",
                  file=sys.stderr)
            return 2
    keep = bool(env.get("FUZZ_DIR"))
    workdir = Path(env.get("FUZZ_DIR") or tempfile.mkdtemp(prefix="nvmefs-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    fuzz = Fuzz(count, seed, policies, workdir, int(env.get("FUZZ_RSS_LIMIT_MB", "700")),
                float(env.get("FUZZ_HANG", "120")), env.get("FUZZ_PROBES", "1") != "0")
    try:
        code = fuzz.run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if keep:
        print(f"work directory: {workdir}")
    elif code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:       # keep the daemons' logs, not the namespace images
        for image in workdir.glob("**/ns/*.img"):
            image.unlink()
        print(f"daemon logs: {workdir}/*/daemon.log")
    return code


if __name__ == "__main__":
    sys.exit(main())
