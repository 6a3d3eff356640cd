"""passthru/ requests and responses (DESIGN §3, nvmefs(5)): parsing, validation, encoding.

A write carries one or more requests, binary or text, told apart per request:
a text request starts with a lowercase key (`opcode=...`), a binary one is a
64-byte submission queue entry whose bytes 24..39 are nvmefs's transfer
descriptor (data_len, metadata_len, timeout_ms, reserved). Everything is
checked here, before anything can reach a controller; a bad request is a
`RequestError` with a specific errno and the requests before it stand.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

from . import status as S
from .commands import OP_GET_LOG_PAGE, OP_IDENTIFY, log_page_fields, rw_fields
from .identify import IDENTIFY_SIZE
from .logs import CCC, CSE_MASK, CSUPP, LBCC, NCC, NIC
from .opcodes import (
    ADMIN,
    IO,
    XFER_BIDI,
    XFER_FROM_CTRL,
    XFER_NONE,
    XFER_TO_CTRL,
    direction,
    is_vendor,
    lookup,
)
from .queue import CQE_LAYOUT, FUSE_MASK, PSDT_MASK, SQE_SIZE, Command, Completion

POLICIES = ("readonly", "all", "off")
MAX_TIMEOUT_MS = 3_600_000
INTRUSIVE = LBCC | NCC | NIC | CCC | CSE_MASK

# opcode flags cid nsid cdw2 cdw3 mptr data_len metadata_len timeout_ms reserved cdw10..15
_REQ = struct.Struct("<BBHIIIQIIII6I")
assert _REQ.size == SQE_SIZE

# NVM commands whose data length follows from the command (NLB x block size)
_LBA_DATA = {0x01, 0x02, 0x05}          # Write, Read, Compare
_LBA_NO_DATA = {0x04, 0x08, 0x0C}       # Write Uncorrectable, Write Zeroes, Verify


class RequestError(Exception):
    def __init__(self, err: int, message: str, truncated: bool = False):
        super().__init__(message)
        self.errno = err
        self.truncated = truncated      # the write ended inside this request


@dataclass(frozen=True)
class Target:
    """What validation needs to know of the queue a mailbox feeds."""
    queue: str
    policy: str = "readonly"
    max_transfer: int = 0                          # bytes; 0: no limit
    namespaces: Mapping[int, int] | None = None    # active NSID -> block size
    effects: Sequence[int] | None = None           # this queue's effects words, if known


class PassthruRequest(NamedTuple):
    cmd: Command            # the caller's entry: its CID is the caller's tag
    data_len: int
    timeout_ms: int
    data_out: bytes
    text: bool
    data_in_len: int        # data_len for controller-to-host opcodes, else 0


def _request(cmd: Command, data_len: int, timeout_ms: int, data_out: bytes, text: bool) -> PassthruRequest:
    data_in = data_len if direction(cmd.opcode) == XFER_FROM_CTRL else 0
    return PassthruRequest(cmd, data_len, timeout_ms, data_out, text, data_in)


_TEXT_START = frozenset(b"abcdefghijklmnopqrstuvwxyz# \t\r\n")


def is_text(buf: bytes, pos: int) -> bool:
    """Text starts with a lowercase key, '#' or blank space; a binary entry's
    second byte (its flags) is always zero."""
    return buf[pos] in _TEXT_START and (pos + 1 >= len(buf) or buf[pos + 1] != 0)


# ------------------------------------------------------------------ parsing

def parse_binary(buf: bytes, pos: int) -> tuple[PassthruRequest, int]:
    """One binary request at `pos`; returns it and the position after it."""
    if len(buf) - pos < SQE_SIZE:
        raise RequestError(errno.EINVAL, f"truncated entry: {len(buf) - pos} of {SQE_SIZE} bytes",
                           truncated=True)
    (opcode, flags, cid, nsid, cdw2, cdw3, mptr, data_len, md_len, timeout_ms, reserved,
     c10, c11, c12, c13, c14, c15) = _REQ.unpack_from(buf, pos)
    if reserved:
        raise RequestError(errno.EINVAL, "reserved bytes 36..39 are not zero")
    if mptr:
        raise RequestError(errno.EINVAL, "metadata pointer bytes 16..23 are not zero")
    cmd = Command(opcode, nsid, c10, c11, c12, c13, c14, c15, cdw2, cdw3, flags, cid)
    _check_shape(cmd, data_len, md_len)
    end = pos + SQE_SIZE
    data = b""
    if direction(opcode) == XFER_TO_CTRL and data_len:
        if len(buf) - end < data_len:
            raise RequestError(errno.EINVAL, f"truncated data: {len(buf) - end} of {data_len} bytes",
                               truncated=True)
        data = buf[end:end + data_len]
        end += data_len
    return _request(cmd, data_len, timeout_ms, data, False), end


_TEXT_KEYS = {"opcode": 0xFF, "flags": 0xFF, "cid": 0xFFFF, "nsid": 0xFFFFFFFF,
              "cdw2": 0xFFFFFFFF, "cdw3": 0xFFFFFFFF, "data_len": 0xFFFFFFFF,
              "metadata_len": 0xFFFFFFFF, "timeout_ms": 0xFFFFFFFF,
              **{f"cdw{i}": 0xFFFFFFFF for i in range(10, 16)}}


def parse_text_line(line: str) -> PassthruRequest | None:
    """`key=value` words (nvme-cli's passthru option names); None for a blank line."""
    words = line.split("#", 1)[0].split()
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
    opcode = fields["opcode"]
    data_len = fields.get("data_len", len(data) if data is not None else 0)
    if data is not None:
        if direction(opcode) != XFER_TO_CTRL:
            raise RequestError(errno.EINVAL, "data= is for host-to-controller opcodes")
        if len(data) != data_len:
            raise RequestError(errno.EINVAL, f"data= has {len(data)} bytes, data_len={data_len}")
    elif direction(opcode) == XFER_TO_CTRL and data_len:
        raise RequestError(errno.EINVAL, f"data_len={data_len} needs data=<hex>")
    cmd = Command(opcode, fields.get("nsid", 0), *(fields.get(f"cdw{i}", 0) for i in range(10, 16)),
                  cdw2=fields.get("cdw2", 0), cdw3=fields.get("cdw3", 0),
                  flags=fields.get("flags", 0), cid=fields.get("cid", 0))
    _check_shape(cmd, data_len, fields.get("metadata_len", 0))
    return _request(cmd, data_len, fields.get("timeout_ms", 0), data or b"", True)


def _check_shape(cmd: Command, data_len: int, md_len: int) -> None:
    if cmd.flags & FUSE_MASK:
        raise RequestError(errno.EINVAL, "fused operations are not supported (flags bits 1:0)")
    if cmd.flags & PSDT_MASK:
        raise RequestError(errno.EINVAL, "PSDT/SGL selection is not allowed (flags bits 7:6)")
    if cmd.flags:
        raise RequestError(errno.EINVAL, "reserved flags bits 5:2 are set")
    if md_len:
        raise RequestError(errno.EOPNOTSUPP, "metadata buffers are not supported")
    xfer = direction(cmd.opcode)
    if xfer == XFER_BIDI:
        raise RequestError(errno.EINVAL, "bidirectional opcodes (bits 1:0 = 11b) are not supported")
    if xfer == XFER_NONE and data_len:
        raise RequestError(errno.EINVAL, f"opcode {cmd.opcode:#04x} transfers no data, data_len={data_len}")
    if data_len % 4:
        raise RequestError(errno.EINVAL, f"data_len={data_len} is not a multiple of 4")


def parse(buf: bytes, pos: int = 0) -> tuple[PassthruRequest | None, int]:
    """The request starting at `pos` (None for a blank text line) and where the next starts."""
    if not is_text(buf, pos):
        return parse_binary(buf, pos)
    nl = buf.find(b"\n", pos)
    end = len(buf) if nl < 0 else nl + 1
    try:
        line = buf[pos:end].decode("ascii")
    except UnicodeDecodeError:
        raise RequestError(errno.EINVAL, "text request is not ASCII") from None
    return parse_text_line(line), end


def split_write(buf: bytes, target: "Target") -> tuple[list[PassthruRequest], int, RequestError | None]:
    """The valid requests of one write, up to the first bad one: (requests, bytes they
    span, the error that stopped the walk or None)."""
    requests: list[PassthruRequest] = []
    pos = 0
    while pos < len(buf):
        try:
            req, nxt = parse(buf, pos)
            if req is not None:
                validate(req, target)
        except RequestError as e:
            return requests, pos, e
        if req is not None:
            requests.append(req)
        pos = nxt
    return requests, pos, None


# ------------------------------------------------------------------ validation against the target

def validate(req: PassthruRequest, t: Target) -> None:
    """Raise RequestError unless `req` may be sent to the controller behind `t`."""
    op, cmd = req.cmd.opcode, req.cmd
    known = lookup(t.queue, op)
    if known and known.queue_mgmt:
        raise RequestError(errno.EPERM, f"{known.name} belongs to the host's own queues")
    effect = t.effects[op] if t.effects is not None else None
    if known is None and not (effect or 0) & CSUPP:
        raise RequestError(errno.EOPNOTSUPP, f"unknown {t.queue} opcode {op:#04x}")
    check_policy(t.policy, t.queue, op, effect)
    if effect is not None and not effect & CSUPP:
        raise RequestError(errno.EOPNOTSUPP, f"opcode {op:#04x} is not in the controller's effects log")
    if t.max_transfer and req.data_len > t.max_transfer:
        raise RequestError(errno.E2BIG, f"data_len={req.data_len} is above MDTS ({t.max_transfer} bytes)")
    if req.timeout_ms > MAX_TIMEOUT_MS:
        raise RequestError(errno.ERANGE, f"timeout_ms={req.timeout_ms} is above {MAX_TIMEOUT_MS}")
    if t.queue == IO and t.namespaces is not None:
        if cmd.nsid not in t.namespaces:
            raise RequestError(errno.ENXIO, f"nsid={cmd.nsid} is not an active namespace")
        _check_lba_data(req, t.namespaces.get(cmd.nsid, 0))
    if t.queue == ADMIN:
        _check_admin_data(req)


def admits(policy: str, queue: str, op: int, effect: int | None = None) -> bool:
    """readonly admits only known side-effect-free opcodes the effects log (if any)
    marks without LBCC/NCC/NIC/CCC/CSE; all admits everything; off nothing."""
    if policy != "readonly":
        return policy == "all"
    known = lookup(queue, op)
    return known is not None and known.read_only and not is_vendor(queue, op) \
        and not (known.effects & INTRUSIVE) and (effect is None or not effect & INTRUSIVE)


def check_policy(policy: str, queue: str, op: int, effect: int | None = None) -> None:
    """RequestError (EACCES) unless the policy admits the opcode."""
    if not admits(policy, queue, op, effect):
        why = "passthru is off (--passthru=off)" if policy == "off" else \
            f"opcode {op:#04x} has side effects; needs --passthru=all"
        raise RequestError(errno.EACCES, why)


def _check_lba_data(req: PassthruRequest, block: int) -> None:
    op = req.cmd.opcode
    if op in _LBA_DATA and block:
        need = rw_fields(req.cmd)[1] * block
        if req.data_len != need:
            raise RequestError(errno.EINVAL, f"data_len={req.data_len}, but NLB needs {need} bytes")
    elif op in _LBA_NO_DATA and req.data_len:
        raise RequestError(errno.EINVAL, "this command transfers no data")


def _check_admin_data(req: PassthruRequest) -> None:
    op = req.cmd.opcode
    if op == OP_IDENTIFY and req.data_len != IDENTIFY_SIZE:
        raise RequestError(errno.EINVAL, f"Identify returns {IDENTIFY_SIZE} bytes, data_len={req.data_len}")
    if op == OP_GET_LOG_PAGE:
        need = log_page_fields(req.cmd)[2]
        if req.data_len != need:
            raise RequestError(errno.EINVAL, f"data_len={req.data_len}, but NUMD asks {need} bytes")


# ------------------------------------------------------------------ responses

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


def encode_response(req: PassthruRequest, cpl: Completion) -> bytes:
    """The bytes a reader gets for one request: fixed framing whatever the status.
    The CID is the caller's; the phase tag is set."""
    data_in = req.data_in_len
    data = cpl.data
    if len(data) != data_in:
        data = data[:data_in].ljust(data_in, b"\0")
    if req.text:
        cpl = cpl._replace(cid=req.cmd.cid)
        return (status_line(cpl, data_in) + xxd(data) + "\n").encode()
    status_phase = (cpl.status << 1 | 1) & 0xFFFF
    return CQE_LAYOUT.pack(cpl.dw0, cpl.dw1, cpl.sqhd, cpl.sqid, req.cmd.cid, status_phase) + data

