"""Features (NVMe Base 2.0 §5.27.1, Figure 317): the FID table and decoders.

A feature's value is Get Features' CDW0 plus, for some features, a data
buffer. The raw view is CDW0 (4 bytes, little-endian) followed by that buffer;
JSON names each bit field by its spec mnemonic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .commands import FEATURE_DATA

SEL_CURRENT, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED = 0, 1, 2, 3
SEL_NAMES = {SEL_CURRENT: "current", SEL_DEFAULT: "default", SEL_SAVED: "saved",
             SEL_SUPPORTED: "supported capabilities"}

# Supported capabilities bits (SEL 3, Figure 320)
CAP_SAVEABLE, CAP_NS_SPECIFIC, CAP_CHANGEABLE = 1 << 0, 1 << 1, 1 << 2


@dataclass(frozen=True)
class BitField:
    name: str
    lo: int
    width: int

    def get(self, value: int) -> int:
        return value >> self.lo & ((1 << self.width) - 1)


def _bits(spec: str) -> tuple[BitField, ...]:
    """`name:lo:width` words."""
    out = []
    for word in spec.split():
        name, lo, width = word.split(":")
        out.append(BitField(name, int(lo), int(width)))
    return tuple(out)


def _apst(data: bytes) -> dict[str, Any]:
    # Figure 332: 32 entries of 8 bytes, ITPS bits 7:3, ITPT bits 31:8 (ms)
    entries = []
    for i in range(0, min(len(data), 256), 8):
        e = int.from_bytes(data[i:i + 8], "little")
        entries.append({"ps": i // 8, "itps": e >> 3 & 0x1F, "itpt": e >> 8 & 0xFFFFFF})
    return {"entries": entries}


def _timestamp(data: bytes) -> dict[str, Any]:
    # Figure 337: bytes 0..5 milliseconds since the epoch, byte 6: Synch bit 0, origin bits 3:1
    return {"timestamp": int.from_bytes(data[0:6], "little"),
            "synch": data[6] & 1, "origin": data[6] >> 1 & 0x7}


def _hmb(data: bytes) -> dict[str, Any]:
    # Figure 335: Host Memory Buffer attributes
    word = lambda i: int.from_bytes(data[i:i + 4], "little")  # noqa: E731
    return {"hsize": word(0), "hmdlal": word(4), "hmdlau": word(8), "hmdlec": word(12)}


@dataclass(frozen=True)
class Feature:
    fid: int
    name: str                           # file name under features/
    title: str
    fields: tuple[BitField, ...]
    supported: Callable[[Mapping[str, Any]], bool]
    data: Callable[[bytes], dict[str, Any]] | None = None
    ns_specific: bool = False

    @property
    def data_len(self) -> int:
        """The data buffer Get Features returns (spec.commands.FEATURE_DATA)."""
        return FEATURE_DATA.get(self.fid, (0, 0))[0]


def _always(idc: Mapping[str, Any]) -> bool:
    return True


FEATURES: dict[int, Feature] = {f.fid: f for f in [
    Feature(0x01, "arbitration", "Arbitration", _bits("ab:0:3 lpw:8:8 mpw:16:8 hpw:24:8"), _always),
    Feature(0x02, "power-management", "Power Management", _bits("ps:0:5 wh:5:3"), _always),
    Feature(0x04, "temperature-threshold", "Temperature Threshold",
            _bits("tmpth:0:16 tmpsel:16:4 thsel:20:2 tmpthh:22:3"), _always),
    Feature(0x05, "error-recovery", "Error Recovery", _bits("tler:0:16 dulbe:16:1"), _always,
            ns_specific=True),
    Feature(0x06, "volatile-write-cache", "Volatile Write Cache", _bits("wce:0:1"),
            lambda idc: bool(idc["vwc"] & 1)),
    Feature(0x07, "number-of-queues", "Number of Queues", _bits("nsqa:0:16 ncqa:16:16"), _always),
    Feature(0x08, "interrupt-coalescing", "Interrupt Coalescing", _bits("thr:0:8 time:8:8"), _always),
    Feature(0x0B, "async-event-config", "Asynchronous Event Configuration",
            _bits("smart:0:8 nan:8:1 fan:9:1 tln:10:1 anacn:11:1 plealcn:12:1 lsian:13:1 "
                  "egealcn:14:1 nnsshdn:15:1 zdcn:27:1 dlpcn:31:1"), _always),
    Feature(0x0C, "apst", "Autonomous Power State Transition", _bits("apste:0:1"),
            lambda idc: bool(idc["apsta"] & 1), _apst),
    Feature(0x0D, "host-memory-buffer", "Host Memory Buffer", _bits("ehm:0:1 mr:1:1"),
            lambda idc: idc["hmpre"] > 0, _hmb),
    Feature(0x0E, "timestamp", "Timestamp", (), lambda idc: bool(idc["oncs"] >> 6 & 1), _timestamp),
    Feature(0x0F, "keep-alive", "Keep Alive Timer", _bits("kato:0:32"), lambda idc: idc["kas"] > 0),
]}
FEATURE_BY_NAME = {f.name: f for f in FEATURES.values()}


def decode_feature(raw: bytes, ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Decode a feature's raw view; ctx carries `fid` and `sel`."""
    fid = ctx["fid"]
    sel = ctx.get("sel", SEL_CURRENT)
    value = int.from_bytes(raw[:4], "little")
    feat = FEATURES.get(fid)
    out: dict[str, Any] = {"fid": fid, "feature": feat.title if feat else "Unknown",
                           "sel": SEL_NAMES.get(sel, sel), "value": value}
    if sel == SEL_SUPPORTED:
        out.update(saveable=value & CAP_SAVEABLE, ns_specific=value >> 1 & 1,
                   changeable=value >> 2 & 1)
        return out
    if feat:
        out.update((f.name, f.get(value)) for f in feat.fields)
        if feat.data and len(raw) > 4:
            out.update(feat.data(raw[4:]))
    return out


def encode_feature(value: int, data: bytes = b"") -> bytes:
    return value.to_bytes(4, "little") + data
