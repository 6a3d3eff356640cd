"""passthru/ requests and answers (DESIGN §3, nvmefs(5)): one request's parsing,
validation and encoding; spec.session cuts a mailbox's byte stream into requests.

A binary request is a 64-byte submission queue entry whose bytes 24..39 are
nvmefs's transfer descriptor (data_len, metadata_len, timeout_ms, reserved),
then data_len bytes for a host-to-controller opcode. A text request is a line
of `key=value` words named as nvme-cli's passthru options. Everything is
checked here, before anything can reach a controller; a bad request is a
`RequestError` with a specific errno.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Mapping, NamedTuple, Sequence

from . import status as S
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
    namespaces: Mapping[int, int] | None = None    # active NSID -> block size
    effects: Sequence[int] | None = None           # this queue's effects words, if known
    # what validate() decides from the opcode alone, per opcode, made on first use
    verdicts: dict[int, "_Verdict"] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def limit(self) -> int:
        """The most data one request may move here."""
        return min(self.max_transfer or MAX_DATA_LEN, MAX_DATA_LEN)


class PassthruRequest(NamedTuple):
    """A parsed request. With `queue` and `timeout` (seconds, None: the queue's
    default) it is also what a backend carries (backends.base.Request's fields)."""
    cmd: Command            # the caller's entry: its CID is the caller's tag
    data_len: int
    timeout_ms: int
    data_out: bytes
    text: bool
    data_in_len: int        # data_len for controller-to-host opcodes, else 0
    metadata_len: int = 0
    queue: str = ""
    timeout: float | None = None

    @property
    def data_out_len(self) -> int:
        """The bytes of data that follow a binary entry."""
        return self.data_len if self.cmd.opcode & 3 == XFER_TO_CTRL else 0


def _request(cmd: Command, data_len: int, timeout_ms: int, data_out: bytes, text: bool,
             metadata_len: int, queue: str) -> PassthruRequest:
    data_in = data_len if cmd.opcode & 3 == XFER_FROM_CTRL else 0
    return from_fields(PassthruRequest, (cmd, data_len, timeout_ms, data_out, text, data_in,
                                  metadata_len, queue, timeout_ms / 1000 if timeout_ms else None))


# ------------------------------------------------------------------ parsing

# the unpacked entry (in _FIELDS order) -> Command's fields, but for prp1 and prp2 (zero)
_TO_COMMAND = itemgetter(*(list(_FIELDS).index(f) for f in Command._fields[:-2]))
_NO_PRPS = (0, 0)
_DATA_LEN, _METADATA_LEN, _TIMEOUT_MS, _RESERVED = (list(_FIELDS).index(f) for f in (
    "data_len", "metadata_len", "timeout_ms", "reserved"))


def parse_header(buf: bytes | bytearray, pos: int, queue: str = "") -> PassthruRequest:
    """The binary entry at `pos` (64 bytes there), for `queue`, without its data."""
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
    data: bytes | None = None
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or (key not in _TEXT_KEYS and key != "data"):
            raise RequestError(errno.EINVAL, f"bad word {word!r}: expected key=value with a key "
                               f"of {', '.join([*_TEXT_KEYS, 'data'])}")
        if key in fields or (key == "data" and data is not None):
            raise RequestError(errno.EINVAL, f"{key} given twice")
        if key == "data":
            try:
                data = bytes.fromhex(value)
            except ValueError:
                raise RequestError(errno.EINVAL, "data is not hex") from None
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
    req = _request(cmd, fields.get("data_len", len(data or b"")), fields.get("timeout_ms", 0),
                   data or b"", True, fields.get("metadata_len", 0), queue)
    if data is not None and req.data_out_len != len(data):
        raise RequestError(errno.EINVAL, f"data= has {len(data)} bytes, for opcode "
                           f"{req.cmd.opcode:#04x} with data_len={req.data_len}")
    if data is None and req.data_out_len:
        raise RequestError(errno.EINVAL, f"data_len={req.data_len} needs data=<hex>")
    return req


def plausible_opcode(t: Target, opcode: int) -> bool:
    """Whether a binary entry for t's queue may start with this byte: nvmefs or the
    effects log knows the opcode (a text start byte that is not one starts text)."""
    return lookup(t.queue, opcode) is not None or \
        (t.effects is not None and bool(t.effects[opcode] & CSUPP))


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


def admits(policy: str, queue: str, op: int, effect: int | None = None) -> bool:
    """off admits nothing; info Identify, Get Log Page, Get Features; readonly the commands
    free of side effects; all everything but queue management."""
    return _RANK[policy] >= _needs(lookup(queue, op), effect)


# ------------------------------------------------------------------ validation against the target

# Checks of the request alone, in order: (is bad, errno, message)
_SHAPE = [
    (lambda r: r.cmd.flags & FUSE_MASK, errno.EINVAL, "fused operations are not supported (flags 1:0)"),
    (lambda r: r.cmd.flags & PSDT_MASK, errno.EINVAL, "PSDT/SGL selection is not allowed (flags 7:6)"),
    (lambda r: r.cmd.flags, errno.EINVAL, "reserved flags bits 5:2 are set"),
    (lambda r: r.cmd.mptr, errno.EINVAL, "metadata pointer bytes 16..23 are not zero"),
    (lambda r: r.metadata_len, errno.EOPNOTSUPP, "metadata buffers are not supported"),
    (lambda r: direction(r.cmd.opcode) == XFER_BIDI, errno.EINVAL,
     "bidirectional opcodes (bits 1:0 = 11b) are not supported"),
    (lambda r: direction(r.cmd.opcode) == XFER_NONE and r.data_len, errno.EINVAL,
     "this opcode transfers no data (bits 1:0 = 00b), but data_len is not 0"),
    (lambda r: r.data_len % 4, errno.EINVAL, "data_len is not a multiple of 4"),
]


class _Verdict(NamedTuple):
    """What the opcode alone decides for a target: the refusal checked before the
    request's shape (queue management), the one checked after it (unknown, not
    admitted by the policy, not in the effects log), and its table row."""
    first: tuple[int, str] | None
    then: tuple[int, str] | None
    row: Opcode | None


def _verdict(t: Target, op: int) -> _Verdict:
    row = lookup(t.queue, op)
    if row is not None and row.queue_mgmt:
        return _Verdict((errno.EPERM, f"{row.name} belongs to the daemon's own queues"), None, row)
    effect = t.effects[op] if t.effects is not None else None
    need = _needs(row, effect)
    then = None
    if row is None and not (effect or 0) & CSUPP:
        then = errno.EOPNOTSUPP, f"unknown {t.queue} opcode {op:#04x}"
    elif _RANK[t.policy] < need:
        then = errno.EACCES, (f"{name_of(t.queue, op)} (opcode {op:#04x}) needs "
                              f"--passthru={POLICIES[need]}; this mailbox has {t.policy}")
    elif effect is not None and not effect & CSUPP:
        then = errno.EOPNOTSUPP, f"opcode {op:#04x} is not in the controller's effects log"
    return _Verdict(None, then, row)


def validate(req: PassthruRequest, t: Target) -> None:
    """Raise RequestError unless `req` may be sent to the controller behind `t`.
    Queue management comes first (EPERM in every policy)."""
    cmd = req.cmd
    op = cmd.opcode
    verdict = t.verdicts.get(op)
    if verdict is None:
        verdict = t.verdicts[op] = _verdict(t, op)
    if verdict.first:
        raise RequestError(*verdict.first)
    data_len = req.data_len
    xfer = op & 3
    # any of _SHAPE's checks may fail: find the first that does
    if cmd.flags or cmd.mptr or req.metadata_len or data_len & 3 or xfer == XFER_BIDI \
            or (xfer == XFER_NONE and data_len):
        for bad, err, message in _SHAPE:
            if bad(req):
                raise RequestError(err, f"opcode {op:#04x} data_len={data_len}: {message}")
    if verdict.then:
        raise RequestError(*verdict.then)
    if data_len > t.limit:
        raise RequestError(errno.E2BIG, f"data_len={data_len} is above {t.limit} bytes "
                           f"(MDTS {t.max_transfer or 'none'}, nvmefs {MAX_DATA_LEN})")
    if req.timeout_ms > MAX_TIMEOUT_MS:
        raise RequestError(errno.ERANGE, f"timeout_ms={req.timeout_ms} is above {MAX_TIMEOUT_MS}")
    block = 0
    if t.namespaces is not None and t.queue == IO:
        block = t.namespaces.get(cmd.nsid)
        if block is None:
            raise RequestError(errno.ENXIO, f"nsid={cmd.nsid} is not an active namespace")
    row = verdict.row
    if row is not None and row.data_len:
        size = row.data_len(cmd, block)
        if size is not None and data_len != size:
            raise RequestError(errno.EINVAL, f"data_len={data_len}, but this {row.name} moves "
                               f"{size} bytes")


# ------------------------------------------------------------------ requests, as a caller writes them

def encode_request(opcode: int, *, data: bytes = b"", text: bool = False, **fields: int) -> bytes:
    """A request, binary (the 64-byte entry, then `data`) or a text line. `fields`:
    nsid cdw2 cdw3 cdw10..cdw15 cid flags data_len (default len(data)) metadata_len
    timeout_ms, and for binary only mptr and reserved. Nothing is checked, so tests
    can make bad requests too."""
    unknown = fields.keys() - _FIELDS.keys()
    if unknown:
        raise TypeError(f"encode_request: no field {', '.join(sorted(unknown))}")
    values = {**dict.fromkeys(_FIELDS, 0), "data_len": len(data), **fields, "opcode": opcode}
    if not text:
        return _REQ.pack(*values.values()) + data
    if values["mptr"] or values["reserved"]:
        raise ValueError("mptr and reserved have no text key")
    defaults = {"data_len": len(data)}      # what the parser assumes for a key left out
    words = [f"{k}={values[k]:{fmt}}" for k, (_, fmt) in _FIELDS.items()
             if fmt and (k == "opcode" or values[k] != defaults.get(k, 0))]
    if data:
        words.append(f"data={data.hex()}")
    return " ".join(words).encode() + b"\n"


# ------------------------------------------------------------------ answers

def xxd(data: bytes) -> str:
    """`xxd` hexdump lines (`xxd -r` gives the bytes back)."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = chunk.hex()
        groups = " ".join(hexes[i:i + 4] for i in range(0, len(hexes), 4))
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{off:08x}: {groups:<39}  {text}\n")
    return "".join(lines)


def status_line(cpl: Completion, data_len: int) -> str:
    return (f"status={cpl.status:#06x} sct={cpl.sct:#x} sc={cpl.sc:#04x} dnr={int(cpl.dnr)} "
            f"more={int(cpl.more)} crd={cpl.crd} result={cpl.dw0:#010x} dw1={cpl.dw1:#010x} "
            f"cid={cpl.cid} data_len={data_len} name={S.describe(cpl.status).name}\n")


def response_parts(req: PassthruRequest, cpl: Completion) -> list[bytes]:
    """The pieces of one request's answer, in order, whatever the status: binary, the
    CQE (the caller's CID, phase tag set) then exactly data_in_len bytes of data (cut or
    zero-filled; not copied when it fits); text, its status line, xxd lines, an empty line."""
    n = req.data_in_len
    data = cpl.data if len(cpl.data) == n else cpl.data[:n].ljust(n, b"\0")
    if req.text:
        cpl = cpl._replace(cid=req.cmd.cid)
        return [(status_line(cpl, n) + xxd(data) + "\n").encode()]
    cqe = cpl.encode(1, req.cmd.cid)
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
    n = req.data_in_len
    if not req.text:
        return CQE_SIZE + n
    line = status_line(Completion(_LONGEST_NAMED, cid=req.cmd.cid), n)
    return len(line) + n + _XXD_LINE * -(-n // 16) + 1
