"""Controllers and namespaces the Linux NVMe driver exposes (/sys/class/nvme*)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

SYS_NVME = "/sys/class/nvme"
SYS_GENERIC = "/sys/class/nvme-generic"
NAME = re.compile(r"nvme(\d+)")
GENERIC = re.compile(r"ng(\d+)n(\d+)")


def read_attr(path: str) -> str:
    """A sysfs attribute, stripped; "" if it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass
class SysController:
    name: str                           # nvme0
    model: str = ""
    serial: str = ""
    firmware: str = ""
    transport: str = ""
    address: str = ""
    state: str = ""
    generic: list[str] = field(default_factory=list)     # ng0n1 ... (per-namespace char devices)

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"

    def max_transfer_kernel(self) -> int:
        """The block layer's limit for one command, in bytes (0 if unknown)."""
        for ng in self.generic:
            kb = read_attr(f"/sys/block/{ng.replace('ng', 'nvme', 1)}/queue/max_hw_sectors_kb")
            if kb.isdigit():
                return int(kb) * 1024
        return 0


def controller(name: str) -> SysController:
    base = os.path.join(SYS_NVME, name)
    if not os.path.isdir(base):
        raise FileNotFoundError(f"no NVMe controller {name} (nothing at {base})")
    c = SysController(name, *(read_attr(os.path.join(base, f)) for f in
                              ("model", "serial", "firmware_rev", "transport", "address", "state")))
    try:
        entries = os.listdir(SYS_GENERIC)
    except OSError:
        entries = []
    for ng in entries:
        owner = os.path.basename(os.path.realpath(os.path.join(SYS_GENERIC, ng, "device")))
        if GENERIC.fullmatch(ng) and owner == name:
            c.generic.append(ng)
    c.generic.sort(key=lambda n: tuple(map(int, GENERIC.fullmatch(n).groups())))
    return c


def controllers() -> list[SysController]:
    """Every controller the driver knows, in number order."""
    try:
        names = [n for n in os.listdir(SYS_NVME) if NAME.fullmatch(n)]
    except OSError:
        return []
    return [controller(n) for n in sorted(names, key=lambda n: int(n[4:]))]
