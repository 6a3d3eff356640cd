"""Tests on the controller shapes of tests/vm/shapes.py, through the Linux NVMe driver.

They write to the devices, so they run only in the throwaway QEMU guest of tests/vm
booted with those shapes (VM_GUEST=1 and the multipath subsystem present)."""

import os
import re

import pytest

from ..vm.shapes import MULTIPATH_NQN

SUBSYSTEMS = "/sys/class/nvme-subsystem"


def booted_with_shapes() -> bool:
    try:
        nqns = [open(f"{SUBSYSTEMS}/{s}/subsysnqn").read().strip() for s in os.listdir(SUBSYSTEMS)]
    except OSError:
        return False
    return os.environ.get("VM_GUEST") == "1" and MULTIPATH_NQN in nqns


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    if booted_with_shapes():
        return
    skip = pytest.mark.skip(reason="needs the QEMU guest of tests/vm booted with tests/vm/shapes.py")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


ROLES = {"nvmefs-mp": "mp{cntlid}", "nvmefs-gaps": "gaps", "nvmefs-zns": "zns"}


@pytest.fixture(scope="session")
def ctrl():
    """The kernel's name of each controller of the shapes, by role: mp0 and mp1 (the
    subsystem's ports, by controller ID), gaps, zns. The driver probes controllers
    asynchronously, so nvmeN and nvme-subsysN numbers differ from boot to boot."""
    from nvmefs.backends import sysfs
    return {ROLES[c.serial].format(cntlid=c.cntlid): c.name for c in sysfs.controllers()
            if c.serial in ROLES}


def nodes(ctrl_name: str, nsid: int) -> tuple[str, str]:
    """(block disk, generic node) the kernel gave namespace `nsid` of a controller: its
    own, or its multipath head's."""
    from nvmefs.backends import sysfs
    base = f"/sys/class/nvme/{ctrl_name}"
    for child in os.listdir(base):
        m = re.fullmatch(r"nvme(\d+)(c\d+)?n(\d+)", child)
        if m and sysfs.read_attr(f"{base}/{child}/nsid") == str(nsid):
            own = f"ng{ctrl_name[4:]}n{m[3]}"      # its own node, else the head's
            return f"nvme{m[1]}n{m[3]}", own if os.path.exists(f"{base}/{own}") else f"ng{m[1]}n{m[3]}"
    raise LookupError(f"{ctrl_name} has no namespace {nsid}")
