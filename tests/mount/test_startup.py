"""`nvmefs mount` of several controllers: opened at once, named in the order given;
one that cannot be opened fails the mount with its own message."""

from __future__ import annotations

import time

from .conftest import fuse_device, nvmefs

DELAY = 1.0         # seconds each controller's first Identify is held (its start waits on it)
SERIALS = ["FIRST", "SECOND", "THIRD", "FOURTH"]


def test_controllers_open_at_once_named_in_order(mnt):
    mnt.mkdir()
    start = time.monotonic()
    nvmefs("mount", str(mnt), *(f"sim:serial={s},fault=delay:admin:0x06:1:{DELAY}"
                                for s in SERIALS))
    took = time.monotonic() - start
    try:
        for i, serial in enumerate(SERIALS):
            assert f"serial: {serial}\n" in (mnt / f"nvme{i}" / "info").read_text()
    finally:
        nvmefs("umount", str(mnt))
    assert took < 3 * DELAY         # one delay (and the daemon's start-up), not four


def test_one_that_cannot_open_fails_the_mount(mnt):
    mnt.mkdir()
    bad = "sim:serial=B,fault=status:admin:0x06:1:INVALID_FIELD"
    r = nvmefs("mount", str(mnt), "sim", bad, "sim", check=False)
    assert (r.returncode, r.stderr) == (
        1, f"nvmefs mount: {bad}: Identify Controller failed: INVALID_FIELD\n")
    assert fuse_device(mnt.absolute()) is None
