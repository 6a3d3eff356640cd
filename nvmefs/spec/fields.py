"""A small declarative layout language for NVMe data structures.

A `Layout` is an ordered list of `Field`s at fixed byte offsets. The order is
the order of nvme-cli's `-o json` output (which is not always offset order), so
one table drives decoding to JSON, the `key : value` text view and encoding
(the simulator builds its structures from the same tables).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

# Value kinds. Integers are little-endian as everywhere in NVMe.
UINT = "uint"      # 1, 2, 4 or 8 bytes -> int
INT = "int"        # 4 bytes -> signed int, as nvme-cli's JSON prints some (all ones: -1)
U128 = "u128"      # 16 bytes -> decimal string (nvme-cli prints 128-bit counters as strings)
ASCII = "ascii"    # space padded text (sn, mn, fr) -> str, cut at the first NUL
NQN = "nqn"        # NUL padded text (subnqn) -> str
HEX = "hex"        # opaque bytes (eui64, nguid) -> lowercase hex string
UUID = "uuid"      # 16 bytes -> 8-4-4-4-12 string
IEEE = "ieee"      # 3-byte OUI, least significant byte first -> int


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    kind: str = UINT
    text: str | Callable[[Any], str] = "d"   # text view: "d", "x" (C's %#x) or a function
    when: Callable[[Mapping[str, Any]], bool] | None = None   # shown only if true of all values


def u(name: str, offset: int, size: int, text="d", when=None) -> Field:
    return Field(name, offset, size, UINT, text, when)


def s32(name: str, offset: int) -> Field:
    """A 4-byte field nvme-cli's JSON prints as a signed int (json_object_add_value_int)
    and its text view in hex, as the unsigned value."""
    return Field(name, offset, 4, INT, "x")


def x(name: str, offset: int, size: int, when=None) -> Field:
    """An unsigned field that nvme-cli's text view prints in hex (bit fields)."""
    return Field(name, offset, size, UINT, "x", when)


def decode_value(f: Field, buf: bytes | memoryview) -> Any:
    raw = bytes(buf[f.offset:f.offset + f.size])
    if f.kind == UINT or f.kind == IEEE:
        return int.from_bytes(raw, "little")
    if f.kind == INT:
        return int.from_bytes(raw, "little", signed=True)
    if f.kind == U128:
        return str(int.from_bytes(raw, "little"))
    if f.kind in (ASCII, NQN):
        return raw.split(b"\0", 1)[0].decode("latin-1")
    if f.kind == HEX:
        return raw.hex()
    if f.kind == UUID:
        return str(uuid.UUID(bytes=raw))
    raise ValueError(f"unknown field kind {f.kind!r}")


def encode_value(f: Field, value: Any, buf: bytearray) -> None:
    if f.kind in (UINT, IEEE, U128):
        raw = int(value).to_bytes(f.size, "little")
    elif f.kind == INT:
        raw = int(value).to_bytes(f.size, "little", signed=True)
    elif f.kind in (ASCII, NQN):
        pad = b" " if f.kind == ASCII else b"\0"
        raw = str(value).encode("latin-1")[:f.size].ljust(f.size, pad)
    elif f.kind == HEX:
        raw = bytes.fromhex(value)
    elif f.kind == UUID:
        raw = uuid.UUID(value).bytes
    else:
        raise ValueError(f"unknown field kind {f.kind!r}")
    if len(raw) != f.size:
        raise ValueError(f"{f.name}: {len(raw)} bytes for a {f.size}-byte field")
    buf[f.offset:f.offset + f.size] = raw


def text_value(f: Field, value: Any) -> str:
    if callable(f.text):
        return f.text(value)
    if f.kind == IEEE:
        return f"{value:06x}"
    if f.text == "x" and isinstance(value, int):
        return hex(value % (1 << 8 * f.size)) if value else "0"
    return str(value)


class Layout:
    """An ordered field table for one structure of `size` bytes."""

    def __init__(self, name: str, size: int, fields: Iterable[Field]):
        self.name = name
        self.size = size
        self.fields = tuple(fields)
        self.by_name = {f.name: f for f in self.fields}
        for f in self.fields:
            if f.offset + f.size > size:
                raise ValueError(f"{name}.{f.name} lies outside {size} bytes")

    def decode(self, buf: bytes | memoryview) -> dict[str, Any]:
        """Decode into a dict in nvme-cli key order; conditional fields honoured."""
        if len(buf) < self.size:
            raise ValueError(f"{self.name}: need {self.size} bytes, got {len(buf)}")
        out = {f.name: decode_value(f, buf) for f in self.fields}
        return {f.name: out[f.name] for f in self.fields if f.when is None or f.when(out)}

    def text_lines(self, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(f.name, text_value(f, values[f.name])) for f in self.fields
                if f.name in values]

    def encode(self, values: Mapping[str, Any], buf: bytearray | None = None) -> bytearray:
        """Encode `values` (missing fields stay zero) into a new or given buffer."""
        out = bytearray(self.size) if buf is None else buf
        unknown = set(values) - set(self.by_name)
        if unknown:
            raise KeyError(f"{self.name}: no field(s) {sorted(unknown)}")
        for name, value in values.items():
            encode_value(self.by_name[name], value, out)
        return out


def kv_text(pairs: Iterable[tuple[str, str]]) -> str:
    """Render `key : value` lines, keys padded to a common width."""
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    return "".join(f"{k:<{width}} : {v}\n" for k, v in pairs)
