"""Controllers, subsystems and namespaces the Linux NVMe driver exposes (/sys/class/nvme*).

Where a namespace's I/O goes depends on how the kernel named it (drivers/nvme/host
core.c nvme_alloc_ns, multipath.c):
- without native multipath, or on a subsystem of one controller, each controller has
  its own generic node `ngXnY` (X: the controller's instance), its child in sysfs;
- with native multipath on a subsystem that may have several controllers (CMIC bit 1),
  every namespace gets a head (`nvmeSnY` and `ngSnY`, S: the subsystem's instance,
  children of nvme-subsysS) and each controller a hidden path disk `nvmeScXnY` with no
  node: I/O to the head goes down a path the kernel picks (its iopolicy).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

SYS = "/sys"                            # tests point this at a tree of their own
NAME = re.compile(r"nvme(\d+)")
GENERIC = re.compile(r"ng(\d+)n(\d+)")
PATH_DISK = re.compile(r"nvme(\d+)c(\d+)n(\d+)")
SUBSYSTEM = re.compile(r"nvme-subsys(\d+)")


def sysclass(kind: str, *parts: str) -> str:
    """A path under /sys/class/KIND (under SYS, which tests move)."""
    return os.path.join(SYS, "class", kind, *parts)


def read_attr(path: str) -> str:
    """A sysfs attribute, stripped; "" if it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _number_order(names: list[str], pattern: re.Pattern) -> list[str]:
    return sorted(names, key=lambda n: tuple(map(int, pattern.fullmatch(n).groups())))


@dataclass
class SysPath:
    """The kernel's path from one controller to one of its namespaces (multipath)."""
    disk: str                           # nvme0c1n2: the hidden path disk
    head: str                           # ng0n2: the head's generic node
    nsid: int
    ana_state: str = ""                 # optimized, non-optimized, ...; "" where no ANA


@dataclass
class SysController:
    name: str                           # nvme0
    model: str = ""
    serial: str = ""
    firmware: str = ""
    transport: str = ""
    address: str = ""
    state: str = ""
    cntlid: str = ""
    subsysnqn: str = ""
    subsystem: str = ""                 # nvme-subsys0
    iopolicy: str = ""                  # how the kernel picks a path for a head's I/O
    generic: list[str] = field(default_factory=list)    # its own ngXnY nodes
    paths: list[SysPath] = field(default_factory=list)  # namespaces reached through a head

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"

    def max_transfer_kernel(self) -> int:
        """The block layer's limit for one command, in bytes (0 if unknown)."""
        disks = [ng.replace("ng", "nvme", 1) for ng in self.generic] + [p.disk for p in self.paths]
        for disk in disks:
            kb = read_attr(os.path.join(SYS, "block", disk, "queue", "max_hw_sectors_kb"))
            if kb.isdigit():
                return int(kb) * 1024
        return 0


def _subsystem_of(name: str) -> str:
    for subsys in _listdir(sysclass("nvme-subsystem")):
        if os.path.exists(sysclass("nvme-subsystem", subsys, name)):
            return subsys
    return ""


def controller(name: str) -> SysController:
    base = sysclass("nvme", name)
    if not os.path.isdir(base):
        raise FileNotFoundError(f"no NVMe controller {name} (nothing at {base})")
    c = SysController(name, *(read_attr(os.path.join(base, f)) for f in (
        "model", "serial", "firmware_rev", "transport", "address", "state", "cntlid",
        "subsysnqn")))
    c.subsystem = _subsystem_of(name)
    if c.subsystem:
        c.iopolicy = read_attr(sysclass("nvme-subsystem", c.subsystem, "iopolicy"))
    children = _listdir(base)
    c.generic = _number_order([n for n in children if GENERIC.fullmatch(n)], GENERIC)
    for disk in _number_order([n for n in children if PATH_DISK.fullmatch(n)], PATH_DISK):
        subsys, _, head = PATH_DISK.fullmatch(disk).groups()
        nsid = read_attr(os.path.join(base, disk, "nsid"))
        if nsid.isdigit():
            c.paths.append(SysPath(disk, f"ng{subsys}n{head}", int(nsid),
                                   read_attr(os.path.join(base, disk, "ana_state"))))
    return c


def controllers() -> list[SysController]:
    """Every controller the driver knows, in number order."""
    names = [n for n in _listdir(sysclass("nvme")) if NAME.fullmatch(n)]
    return [controller(n) for n in _number_order(names, NAME)]


def subsystems(ctrls: list[SysController]) -> dict[str, list[SysController]]:
    """The controllers by subsystem NQN, in order of first appearance."""
    out: dict[str, list[SysController]] = {}
    for c in ctrls:
        out.setdefault(c.subsysnqn or c.name, []).append(c)
    return out
