"""`sim` URIs: `sim` or `sim:key=value,key=value`.

Keys: namespaces (count), size (per namespace, with K/M/G/T suffix), lba (512
or 4096), ms (metadata bytes per block: 0, 8, 16 or 64), mset (1: extended LBAs,
each block's metadata at the end of its data; 0: a separate buffer), model, serial, firmware, mdts (0: no transfer limit), path (a
directory for sparse backing files; default: memory), temperature (kelvin),
io_latency (milliseconds every I/O command takes), command_log (keep the last N
commands for tests; default 0), fault (a fault rule, `faults.parse_fault`; the
key may be repeated), null (1: every I/O command completes successfully at once,
Reads with zeros, without touching any storage, to measure nvmefs itself; admin
commands behave as usual), zoned (a zone size, K/M/G suffix: the namespaces are
zoned, of the Zoned Namespace Command Set), zoned_ns (the zoned ones, NSIDs joined
by ':'; default all). Unknown keys and bad values are errors, so a typo never
silently mounts something else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .faults import parse_fault

MAX_COMMAND_LOG = 1_000_000
METADATA_SIZES = (0, 8, 16, 64)     # ms of the LBA formats, with each data size
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _SUFFIX else ""
    number = t[:-1] if unit else t
    if not number.isdigit():
        raise ValueError(f"bad size {text!r} (expected e.g. 512M, 1G)")
    return int(number) * _SUFFIX[unit]


@dataclass(frozen=True)
class SimConfig:
    namespaces: int = 1
    size: int = 1 << 30
    lba: int = 512
    ms: int = 0                     # metadata bytes per block of the LBA format in use
    mset: int = 0                   # 1: extended LBAs (FLBAS bit 4); 0: separate metadata
    model: str = "nvmefs simulated controller"
    serial: str = ""
    firmware: str = "1.0"
    mdts: int = 7
    path: str = ""
    temperature: int = 313
    io_latency: int = 0
    command_log: int = 0
    null: int = 0                   # 1: I/O commands succeed without media (reads: zeros)
    fault: tuple[str, ...] = ()     # rules as written; repeatable in the URI
    zoned: int = 0                  # zone size in bytes: zoned namespaces (0: none)
    zoned_ns: str = ""              # which namespaces are zoned, NSIDs joined by ':' ("": all)

    def validate(self) -> "SimConfig":
        if not 1 <= self.namespaces <= 32:
            raise ValueError("namespaces must be 1..32")
        if self.lba not in (512, 4096):
            raise ValueError("lba must be 512 or 4096")
        if self.size < self.lba or self.size % self.lba:
            raise ValueError(f"size must be a positive multiple of lba ({self.lba})")
        if self.ms not in METADATA_SIZES:
            raise ValueError(f"ms must be one of {', '.join(map(str, METADATA_SIZES))}")
        if self.mset not in (0, 1):
            raise ValueError("mset must be 0 (separate metadata) or 1 (extended LBAs)")
        if not 0 <= self.mdts <= 10:
            raise ValueError("mdts must be 0..10")
        if not 200 <= self.temperature <= 400:
            raise ValueError("temperature must be 200..400 K")
        if not 0 <= self.io_latency <= 3_600_000:
            raise ValueError("io_latency must be 0..3600000 ms")
        if not 0 <= self.command_log <= MAX_COMMAND_LOG:
            raise ValueError(f"command_log must be 0..{MAX_COMMAND_LOG}")
        if self.null not in (0, 1):
            raise ValueError("null must be 0 or 1")
        if self.null and self.path:
            raise ValueError("null=1 keeps no data, so it takes no path")
        for rule in self.fault:
            parse_fault(rule)       # FaultError (a ValueError) says what is wrong
        if self.zoned and (self.zoned % 4096 or self.zoned > self.size):
            raise ValueError("zoned (the zone size) must be a multiple of 4K, at most size")
        if self.zoned_ns and not self.zoned:
            raise ValueError("zoned_ns needs zoned (the zone size)")
        self.zoned_nsids()          # ValueError if zoned_ns is not a list of active NSIDs
        for name, limit in (("model", 40), ("serial", 20), ("firmware", 8)):
            value = getattr(self, name)
            if len(value) > limit or not value.isascii():
                raise ValueError(f"{name} must be at most {limit} ASCII characters")
        return self


    def zoned_nsids(self) -> frozenset[int]:
        """The NSIDs of the zoned namespaces (sim:zoned, sim:zoned_ns)."""
        if not self.zoned:
            return frozenset()
        if not self.zoned_ns:
            return frozenset(range(1, self.namespaces + 1))
        try:
            nsids = frozenset(int(n) for n in self.zoned_ns.split(":"))
        except ValueError:
            raise ValueError(f"zoned_ns must be NSIDs joined by ':', got {self.zoned_ns!r}") \
                from None
        if not nsids <= set(range(1, self.namespaces + 1)):
            raise ValueError(f"zoned_ns names a namespace beyond namespaces={self.namespaces}")
        return nsids


def parse_uri(uri: str, index: int = 0) -> SimConfig:
    """Parse a sim URI; `index` makes the default serial unique per controller."""
    scheme, _, rest = uri.partition(":")
    if scheme != "sim":
        raise ValueError(f"not a sim URI: {uri!r}")
    types = {f.name: f.type for f in fields(SimConfig)}
    values: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in types:
            raise ValueError(f"bad sim option {item!r}; known: {', '.join(types)}")
        if key in ("size", "zoned"):
            values[key] = parse_size(value)
        elif key == "fault":
            values[key] = (*values.get(key, ()), value)     # type: ignore[misc]
        elif types[key] == "int":
            try:
                values[key] = int(value, 0)
            except ValueError:
                raise ValueError(f"sim option {key} needs a number, got {value!r}") from None
        else:
            values[key] = value
    values.setdefault("serial", f"NVMEFSSIM{index:04d}")
    return SimConfig(**values).validate()   # type: ignore[arg-type]
