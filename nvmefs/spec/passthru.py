"""passthru/ requests and answers (DESIGN §3, nvmefs(5)): one request's parsing,
validation and encoding; spec.session cuts a mailbox's byte stream into requests.

A binary request is a 64-byte submission queue entry whose bytes 24..39 are
nvmefs's transfer descriptor (data_len, metadata_len, timeout_ms, reserved),
then, for a host-to-controller opcode, data_len bytes of data and metadata_len
bytes of metadata (the separate buffer MPTR points to, which the daemon
supplies). A text request is a line of `key=value` words named as nvme-cli's
passthru options, with data= and metadata= in hex. An answer is the
completion, then, for a controller-to-host opcode, its data and its metadata.
Everything is checked here, before anything can reach a controller; a bad
request is a `RequestError` with a specific errno.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Mapping, NamedTuple, Sequence

from . import status as S
from .commands import CSI_NVM, NLB, PI_SIZE, PRACT, lba_len
from .identify import DPS_PIT, NsFormat
from .logs import CCC, CSE_MASK, CSUPP, LBCC, NCC, NIC
from .opcodes import (ALL, IO, POLICIES, XFER_BIDI, XFER_FROM_CTRL, XFER_NONE, XFER_TO_CTRL, Opcode,
                      direction, lookup, name_of)
from .queue import CQE_SIZE, FUSE_MASK, PSDT_MASK, SQE_SIZE, Command, Completion, from_fields

MAX_TIMEOUT_MS = 3_600_000
MAX_DATA_LEN = 256 << 20    # bytes: the most one request moves, whatever MDTS (65536 blocks of 4 KiB)
INTRUSIVE = LBCC | NCC | NIC | CCC | CSE_MASK

# The binary request, in order: name -> (struct code, text format; None: binary only)
_FIELDS = {
    "opcode": ("B", "#04x"), "flags": ("B", "d"), "cid": ("H", "d"), "nsid": ("I", "#x"),
    "cdw2": ("I", "#x"), "cdw3": ("I", "#x"), "mptr": ("Q", None), "data_len": ("I", "d"),
    "metadata_len": ("I", "d"), "timeout_ms": ("I", "d"), "reserved": ("I", None),
    **{f"cdw{i}": ("I", "#x") for i in range(10, 16)},
}
_REQ = struct.Struct("<" + "".join(code for code, _ in _FIELDS.values()))
assert _REQ.size == SQE_SIZE
_TEXT_KEYS = {k: (1 << 8 * struct.calcsize(code)) - 1 for k, (code, fmt) in _FIELDS.items() if fmt}
_BLOB_KEYS = ("data", "metadata")      # text keys of hex bytes (KEY_len defaults to their length)
_CMD_KEYS = [k for k in _TEXT_KEYS if k in Command._fields]

TEXT_START = frozenset(b"abcdefghijklmnopqrstuvwxyz# \t\r\n")   # what a text request starts with


class RequestError(Exception):
    """A refused request: `errno` for the write, the message for the log, and
    `start`, the stream offset where the request began."""

    def __init__(self, err: int, message: str, start: int = 0):
        super().__init__(message)
        self.errno = err
        self.start = start


@dataclass(frozen=True)
class Target:
    """What validation needs to know of the queue a mailbox feeds."""
    queue: str
    policy: str = "readonly"
    max_transfer: int = 0                          # bytes; 0: no limit (MAX_DATA_LEN still is)
    namespaces: Mapping[int, NsFormat] | None = None    # active NSID -> its format
    # the effects words, if known: admin, the admin table; io, by CSI the I/O table of
    # each command set's effects log (an I/O command is checked against its namespace's)
    effects: Sequence[int] | Mapping[int, Sequence[int]] | None = None
    metadata_refusal: str = ""      # why the backend has no separate metadata buffer ("": it has)
    # what validate() decides from the opcode and command set alone, per (opcode, CSI),
    # made on first use
    verdicts: dict[tuple[int, int], "_Verdict"] = field(default_factory=dict, compare=False,
                                                        repr=False)

    @cached_property
    def command_sets(self) -> tuple[int, ...]:
        """The CSIs whose commands this queue takes: admin, 0; io, its namespaces'."""
        if self.queue != IO:
            return (CSI_NVM,)
        csis = {fmt.csi for fmt in (self.namespaces or {}).values()}
        return tuple(sorted(csis | set(self.effects or ()) | {CSI_NVM}))

    def effects_of(self, csi: int) -> Sequence[int] | None:
        """The effects words an opcode of command set `csi` is checked against."""
        if self.effects is None or self.queue != IO:
            return self.effects
        return self.effects.get(csi)

    def csi_of(self, nsid: int) -> int:
        """The command set of an I/O request for `nsid` (0 where not known)."""
        fmt = self.namespaces.get(nsid) if self.namespaces is not None else None
        return fmt.csi if fmt is not None and self.queue == IO else CSI_NVM

    @cached_property
    def limit(self) -> int:
        """The most data one request may move here."""
        return min(self.max_transfer or MAX_DATA_LEN, MAX_DATA_LEN)


class PassthruRequest(NamedTuple):
    """A parsed request. With `queue`, `timeout` (seconds, None: the queue's
    default) and the metadata fields it is also what a backend carries
    (backends.base.Request's fields)."""
    cmd: Command            # the caller's entry: its CID is the caller's tag
    data_len: int
    timeout_ms: int
    data_out: bytes
    text: bool
    data_in_len: int        # data_len for controller-to-host opcodes, else 0
    metadata_len: int = 0
    queue: str = ""
    timeout: float | None = None
    metadata_out: bytes = b""   # the separate metadata of a host-to-controller opcode
    metadata_in_len: int = 0    # metadata_len for controller-to-host opcodes, else 0

    @property
    def data_out_len(self) -> int:
        """The bytes of data that follow a binary entry."""
        return self.data_len if self.cmd.opcode & 3 == XFER_TO_CTRL else 0

    @property
    def metadata_out_len(self) -> int:
        """The bytes of metadata that follow a binary entry's data."""
        return self.metadata_len if self.cmd.opcode & 3 == XFER_TO_CTRL else 0


def _request(cmd: Command, data_len: int, timeout_ms: int, data_out: bytes, text: bool,
             metadata_len: int, queue: str, metadata_out: bytes = b"") -> PassthruRequest:
    from_ctrl = cmd.opcode & 3 == XFER_FROM_CTRL
    return from_fields(PassthruRequest, (cmd, data_len, timeout_ms, data_out, text,
                                         data_len if from_ctrl else 0, metadata_len, queue,
                                         timeout_ms / 1000 if timeout_ms else None, metadata_out,
                                         metadata_len if from_ctrl else 0))


# ------------------------------------------------------------------ parsing

# the unpacked entry (in _FIELDS order) -> Command's fields, but for prp1 and prp2 (zero)
_TO_COMMAND = itemgetter(*(list(_FIELDS).index(f) for f in Command._fields[:-2]))
_NO_PRPS = (0, 0)
_DATA_LEN, _METADATA_LEN, _TIMEOUT_MS, _RESERVED = (list(_FIELDS).index(f) for f in (
    "data_len", "metadata_len", "timeout_ms", "reserved"))


def parse_header(buf: bytes | bytearray, pos: int, queue: str = "") -> PassthruRequest:
    """The binary entry at `pos` (64 bytes there), for `queue`, without its data and metadata."""
    v = _REQ.unpack_from(buf, pos)
    if v[_RESERVED]:
        raise RequestError(errno.EINVAL, "reserved bytes 36..39 are not zero")
    return _request(from_fields(Command, _TO_COMMAND(v) + _NO_PRPS), v[_DATA_LEN], v[_TIMEOUT_MS],
                    b"", False, v[_METADATA_LEN], queue)


def parse_text_line(line: bytes | bytearray, queue: str = "") -> PassthruRequest | None:
    """`key=value` words (nvme-cli's passthru option names); None for a blank or comment line."""
    try:
        words = line.decode("ascii").split("#", 1)[0].split()
    except UnicodeDecodeError:
        raise RequestError(errno.EINVAL, "text request is not ASCII") from None
    if not words:
        return None
    fields: dict[str, int] = {}
    blobs: dict[str, bytes] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or (key not in _TEXT_KEYS and key not in _BLOB_KEYS):
            raise RequestError(errno.EINVAL, f"bad word {word!r}: expected key=value with a key "
                               f"of {', '.join([*_TEXT_KEYS, *_BLOB_KEYS])}")
        if key in fields or key in blobs:
            raise RequestError(errno.EINVAL, f"{key} given twice")
        if key in _BLOB_KEYS:
            try:
                blobs[key] = bytes.fromhex(value)
            except ValueError:
                raise RequestError(errno.EINVAL, f"{key} is not hex") from None
            continue
        try:
            number = int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
        except ValueError:
            raise RequestError(errno.EINVAL, f"{key}={value!r} is not a number") from None
        if not 0 <= number <= _TEXT_KEYS[key]:
            raise RequestError(errno.EINVAL, f"{key}={value} is out of range")
        fields[key] = number
    if "opcode" not in fields:
        raise RequestError(errno.EINVAL, "no opcode=")
    cmd = Command(**{k: fields.get(k, 0) for k in _CMD_KEYS})
    data, metadata = blobs.get("data"), blobs.get("metadata")
    req = _request(cmd, fields.get("data_len", len(data or b"")), fields.get("timeout_ms", 0),
                   data or b"", True, fields.get("metadata_len", len(metadata or b"")), queue,
                   metadata or b"")
    # each blob is the bytes a host-to-controller opcode sends, and only those
    for key, blob, length, out_len in (("data", data, req.data_len, req.data_out_len),
                                       ("metadata", metadata, req.metadata_len,
                                        req.metadata_out_len)):
        if blob is not None and out_len != len(blob):
            raise RequestError(errno.EINVAL, f"{key}= has {len(blob)} bytes, for opcode "
                               f"{req.cmd.opcode:#04x} with {key}_len={length}")
        if blob is None and out_len:
            raise RequestError(errno.EINVAL, f"{key}_len={length} needs {key}=<hex>")
    return req


def plausible_opcode(t: Target, opcode: int) -> bool:
    """Whether a binary entry for t's queue may start with this byte: nvmefs or the
    effects log knows the opcode, in any command set of the queue (a text start byte
    that is not one starts text)."""
    for csi in t.command_sets:
        effects = t.effects_of(csi)
        if lookup(t.queue, opcode, csi) is not None or \
                (effects is not None and effects[opcode] & CSUPP):
            return True
    return False


# ------------------------------------------------------------------ policies

_RANK = {p: i for i, p in enumerate(POLICIES)}


def weaker(a: str, b: str) -> str:
    """The less powerful of two policies."""
    return min(a, b, key=_RANK.__getitem__)


def _needs(row: Opcode | None, effect: int | None) -> int:
    """Rank of the least policy that admits an opcode (past the last: none does). Opcodes
    nvmefs does not know, and those the table or the effects log mark LBCC, NCC, NIC, CCC
    or CSE, need all."""
    if row is not None and row.queue_mgmt:
        return len(POLICIES)
    if row is None or (row.effects | (effect or 0)) & INTRUSIVE:
        return _RANK[ALL]
    return _RANK[row.policy]


def admits(policy: str, queue: str, op: int, effect: int | None = None,
           csi: int = CSI_NVM) -> bool:
    """off admits nothing; info Identify, Get Log Page, Get Features; readonly the commands
    free of side effects; all everything but queue management."""
    return _RANK[policy] >= _needs(lookup(queue, op, csi), effect)


# ------------------------------------------------------------------ validation against the target

# Checks of the request alone, in order: (is bad, errno, message)
_SHAPE = [
    (lambda r: r.cmd.flags & FUSE_MASK, errno.EINVAL, "fused operations are not supported (flags 1:0)"),
    (lambda r: r.cmd.flags & PSDT_MASK, errno.EINVAL, "PSDT/SGL selection is not allowed (flags 7:6)"),
    (lambda r: r.cmd.flags, errno.EINVAL, "reserved flags bits 5:2 are set"),
    (lambda r: r.cmd.mptr, errno.EINVAL, "metadata pointer bytes 16..23 (MPTR) are not zero: "
     "the daemon supplies the metadata buffer, as it does the data's PRPs (give metadata_len, "
     "and for a write the metadata after the data)"),
    (lambda r: direction(r.cmd.opcode) == XFER_BIDI, errno.EINVAL,
     "bidirectional opcodes (bits 1:0 = 11b) are not supported"),
    (lambda r: direction(r.cmd.opcode) == XFER_NONE and r.data_len, errno.EINVAL,
     "this opcode transfers no data (bits 1:0 = 00b), but data_len is not 0"),
    (lambda r: direction(r.cmd.opcode) == XFER_NONE and r.metadata_len, errno.EINVAL,
     "this opcode transfers no data (bits 1:0 = 00b), but metadata_len is not 0"),
    (lambda r: r.data_len % 4, errno.EINVAL, "data_len is not a multiple of 4"),
]

# Why a command that moves no LBAs takes no metadata: admin (None), or an I/O opcode
# nvmefs knows (True) or not (False)
_NO_METADATA = {
    None: "admin commands have no metadata buffer: metadata_len must be 0",
    True: "{name} moves no metadata: metadata_len must be 0 (Read, Write, Compare and "
          "Zone Append of a namespace formatted with separate metadata move some)",
    False: "nvmefs does not know what metadata opcode {op:#04x} moves: metadata_len must be 0",
}


class _LbaLayout(NamedTuple):
    """How the blocks of an LBA-moving command (Read, Write, Compare, Zone Append...)
    travel for one kind of namespace format: whether each block's metadata follows its
    data in the data buffer (extended LBAs), the separate metadata buffer's length
    allowed, in metadata sizes (ms) per block, and the words that explain both."""
    in_data: bool
    separate: tuple[int, ...]
    data_why: str
    metadata_why: str


_PI_ACTION = "PRACT: the controller strips or inserts the 8-byte protection information"
# (the format has metadata, extended LBAs, PRACT with PI of exactly ms bytes) -> layout
_LBA_LAYOUTS = {
    (False, False, False): _LbaLayout(False, (0,), "{n} blocks of {block}",
                                      "the namespace's LBA format has no metadata"),
    (False, True, False): _LbaLayout(False, (0,), "{n} blocks of {block}",
                                     "the namespace's LBA format has no metadata"),
    (True, True, False): _LbaLayout(True, (0,), "{n} blocks of {block}+{ms}, extended LBA",
                                    "extended LBA: each block's {ms} bytes of metadata are in "
                                    "the data, data_len {n} x {block}+{ms}"),
    (True, False, False): _LbaLayout(False, (1,), "{n} blocks of {block}; their metadata goes "
                                     "in metadata_len, separate metadata",
                                     "{n} blocks x {ms}, separate metadata"),
    (True, True, True): _LbaLayout(False, (0,), "{n} blocks of {block}, extended LBA; "
                                   + _PI_ACTION, _PI_ACTION),
    (True, False, True): _LbaLayout(False, (0, 1), "{n} blocks of {block}",
                                    _PI_ACTION + ", so none is needed, or {n} blocks x {ms} "
                                    "of separate metadata"),
}


def _check_lba(req: PassthruRequest, name: str, fmt: NsFormat, t: Target) -> None:
    """The data and metadata lengths of an LBA-moving command on a namespace of format
    `fmt` (protection information fields pass as they are)."""
    cmd = req.cmd
    pract = PRACT.get(cmd)
    layout = _LBA_LAYOUTS[fmt.ms > 0, fmt.extended,
                          bool(pract and fmt.dps & DPS_PIT and fmt.ms == PI_SIZE)]
    n = NLB.get(cmd) + 1
    words = {"n": n, "block": fmt.block, "ms": fmt.ms}
    size = n * (fmt.block + fmt.ms if layout.in_data else fmt.block)
    if req.data_len != size:
        raise RequestError(errno.EINVAL, f"data_len={req.data_len}, but this {name} moves "
                           f"{size} bytes ({layout.data_why.format(**words)})")
    metadata_len = req.metadata_len
    if t.metadata_refusal and max(layout.separate) and \
            (metadata_len > 0 or 0 not in layout.separate):
        raise RequestError(errno.EOPNOTSUPP, f"this {name} needs a separate metadata buffer "
                           f"({n} blocks x {fmt.ms}): {t.metadata_refusal}")
    allowed = [n * fmt.ms * k for k in layout.separate]
    if metadata_len not in allowed:
        moves = " or ".join(map(str, allowed))
        raise RequestError(errno.EINVAL, f"metadata_len={metadata_len}, but this {name} moves "
                           f"{moves} bytes of metadata ({layout.metadata_why.format(**words)})")


class _Verdict(NamedTuple):
    """What the opcode alone decides for a target: the refusal checked before the
    request's shape (queue management), the one checked after it (unknown, not
    admitted by the policy, not in the effects log), and its table row."""
    first: tuple[int, str] | None
    then: tuple[int, str] | None
    row: Opcode | None


def _verdict(t: Target, op: int, csi: int = CSI_NVM) -> _Verdict:
    """The verdict on opcode `op` of command set `csi` (I/O: its namespace's): its row in
    that set's table, its effects in that set's effects log."""
    row = lookup(t.queue, op, csi)
    if row is not None and row.queue_mgmt:
        return _Verdict((errno.EPERM, f"{row.name} belongs to the daemon's own queues"), None, row)
    effects = t.effects_of(csi)
    effect = effects[op] if effects is not None else None
    need = _needs(row, effect)
    then = None
    where = f" of command set {csi}" if t.queue == IO else ""
    if row is None and not (effect or 0) & CSUPP:
        then = errno.EOPNOTSUPP, f"unknown {t.queue} opcode {op:#04x}{where}"
    elif _RANK[t.policy] < need:
        then = errno.EACCES, (f"{name_of(t.queue, op, csi)} (opcode {op:#04x}) needs "
                              f"--passthru={POLICIES[need]}; this mailbox has {t.policy}")
    elif effect is not None and not effect & CSUPP:
        then = errno.EOPNOTSUPP, (f"opcode {op:#04x} is not in the controller's effects "
                                  f"log{where}")
    return _Verdict(None, then, row)


def validate(req: PassthruRequest, t: Target) -> None:
    """Raise RequestError unless `req` may be sent to the controller behind `t`.
    Queue management comes first (EPERM in every policy)."""
    cmd = req.cmd
    op = cmd.opcode
    csi = t.csi_of(cmd.nsid)
    verdict = t.verdicts.get((op, csi))
    if verdict is None:
        verdict = t.verdicts[op, csi] = _verdict(t, op, csi)
    if verdict.first:
        raise RequestError(*verdict.first)
    data_len = req.data_len
    xfer = op & 3
    # any of _SHAPE's checks may fail: find the first that does
    if cmd.flags or cmd.mptr or data_len & 3 or xfer == XFER_BIDI \
            or (xfer == XFER_NONE and (data_len or req.metadata_len)):
        for bad, err, message in _SHAPE:
            if bad(req):
                raise RequestError(err, f"opcode {op:#04x} data_len={data_len}: {message}")
    if verdict.then:
        raise RequestError(*verdict.then)
    if data_len > t.limit or req.metadata_len > t.limit:
        key, value = ("data_len", data_len) if data_len > t.limit else \
            ("metadata_len", req.metadata_len)
        raise RequestError(errno.E2BIG, f"{key}={value} is above {t.limit} bytes "
                           f"(MDTS {t.max_transfer or 'none'}, nvmefs {MAX_DATA_LEN})")
    if req.timeout_ms > MAX_TIMEOUT_MS:
        raise RequestError(errno.ERANGE, f"timeout_ms={req.timeout_ms} is above {MAX_TIMEOUT_MS}")
    block, fmt = 0, None
    if t.namespaces is not None and t.queue == IO:
        fmt = t.namespaces.get(cmd.nsid)
        if fmt is None:
            raise RequestError(errno.ENXIO, f"nsid={cmd.nsid} is not an active namespace")
        block = fmt.block
    row = verdict.row
    rule = row.data_len if row is not None else None
    if rule is lba_len and fmt is not None:
        # blocks, with metadata in the data or beside it, by the namespace's format
        if fmt.ms or req.metadata_len or data_len != lba_len(cmd, block):
            _check_lba(req, row.name, fmt, t)
    else:
        if rule is not None:
            size = rule(cmd, block)
            if size is not None and data_len != size:
                raise RequestError(errno.EINVAL, f"data_len={data_len}, but this {row.name} "
                                   f"moves {size} bytes")
        if req.metadata_len and rule is not lba_len:
            why = _NO_METADATA[row is not None if t.queue == IO else None]
            raise RequestError(errno.EINVAL, f"opcode {op:#04x} metadata_len={req.metadata_len}: "
                               + why.format(name=row.name if row else "", op=op))


# ------------------------------------------------------------------ requests, as a caller writes them

def encode_request(opcode: int, *, data: bytes = b"", metadata: bytes = b"", text: bool = False,
                   **fields: int) -> bytes:
    """A request, binary (the 64-byte entry, then `data`, then `metadata`) or a text
    line. `fields`: nsid cdw2 cdw3 cdw10..cdw15 cid flags data_len (default len(data))
    metadata_len (default len(metadata)) timeout_ms, and for binary only mptr and
    reserved. Nothing is checked, so tests can make bad requests too."""
    unknown = fields.keys() - _FIELDS.keys()
    if unknown:
        raise TypeError(f"encode_request: no field {', '.join(sorted(unknown))}")
    defaults = {"data_len": len(data), "metadata_len": len(metadata)}   # the parser's, too
    values = {**dict.fromkeys(_FIELDS, 0), **defaults, **fields, "opcode": opcode}
    if not text:
        return _REQ.pack(*values.values()) + data + metadata
    if values["mptr"] or values["reserved"]:
        raise ValueError("mptr and reserved have no text key")
    words = [f"{k}={values[k]:{fmt}}" for k, (_, fmt) in _FIELDS.items()
             if fmt and (k == "opcode" or values[k] != defaults.get(k, 0))]
    words += [f"{k}={blob.hex()}" for k, blob in zip(_BLOB_KEYS, (data, metadata)) if blob]
    return " ".join(words).encode() + b"\n"


# ------------------------------------------------------------------ answers

def xxd(data: bytes, start: int = 0) -> str:
    """`xxd` hexdump lines, offsets from `start` (`xxd -r` gives the bytes back)."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = chunk.hex()
        groups = " ".join(hexes[i:i + 4] for i in range(0, len(hexes), 4))
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{start + off:08x}: {groups:<39}  {text}\n")
    return "".join(lines)


def status_line(cpl: Completion, data_len: int, metadata_len: int = 0) -> str:
    metadata = f" metadata_len={metadata_len}" if metadata_len else ""
    return (f"status={cpl.status:#06x} sct={cpl.sct:#x} sc={cpl.sc:#04x} dnr={int(cpl.dnr)} "
            f"more={int(cpl.more)} crd={cpl.crd} result={cpl.dw0:#010x} dw1={cpl.dw1:#010x} "
            f"cid={cpl.cid} data_len={data_len}{metadata} name={S.describe(cpl.status).name}\n")


# The line between a text answer's data and its metadata: no hex digit in it, so that
# `xxd -r` reads past it (the metadata's offsets go on from the data's)
METADATA_MARK = "mptr:\n"


def _exactly(got: bytes, n: int) -> bytes:
    return got if len(got) == n else got[:n].ljust(n, b"\0")


def response_parts(req: PassthruRequest, cpl: Completion) -> list[bytes]:
    """The pieces of one request's answer, in order, whatever the status: binary, the
    CQE (the caller's CID, phase tag set) then exactly data_in_len bytes of data and
    metadata_in_len bytes of metadata (cut or zero-filled; not copied when they fit);
    text, its status line, xxd lines of the data, for metadata the METADATA_MARK line and
    its xxd lines (offsets going on from the data's), an empty line."""
    n, m = req.data_in_len, req.metadata_in_len
    data = _exactly(cpl.data, n)
    if req.text:
        cpl = cpl._replace(cid=req.cmd.cid)
        text = status_line(cpl, n, m) + xxd(data)
        if m:
            text += METADATA_MARK + xxd(_exactly(cpl.metadata, m), n)
        return [(text + "\n").encode()]
    cqe = cpl.encode(1, req.cmd.cid)
    if m:
        return [cqe, data, _exactly(cpl.metadata, m)] if n else [cqe, _exactly(cpl.metadata, m)]
    return [cqe, data] if n else [cqe]


def encode_response(req: PassthruRequest, cpl: Completion) -> bytes:
    return b"".join(response_parts(req, cpl))


_XXD_LINE = len(xxd(bytes(16))) - 16       # an xxd line less its 16 characters of text
# the status with the longest name (SCT and SC decide it; DNR, More and CRD do not)
_LONGEST_NAMED = max(range(S.CODE_MASK + 1),
                     key=lambda status: len(S.describe(status).name))


def answer_size(req: PassthruRequest) -> int:
    """The bytes of this request's answer: exact for binary; for text, exact but for the
    status name, counted at its longest (so never less than the answer takes)."""
    n, m = req.data_in_len, req.metadata_in_len
    if not req.text:
        return CQE_SIZE + n + m
    line = status_line(Completion(_LONGEST_NAMED, cid=req.cmd.cid), n, m)
    size = len(line) + n + _XXD_LINE * -(-n // 16) + 1
    return size + len(METADATA_MARK) + m + _XXD_LINE * -(-m // 16) if m else size
