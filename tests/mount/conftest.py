"""Real FUSE mounts of the `nvmefs` command, driven by shell tools."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

NVMEFS = str(Path(sys.executable).parent / "nvmefs")


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("fusermount3"):
        return "no fusermount3 (Debian package fuse3)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible to this user"
    return None


def pytest_collection_modifyitems(config, items):
    reason = fuse_missing()
    for item in items:
        if "tests/mount/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.mount)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"mount tests need FUSE: {reason}"))


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def sh(cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run `cmd` with bash (dash reports every failed write as "I/O error")."""
    r = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, timeout=60,
                       executable="/bin/bash")
    if check and r.returncode:
        raise AssertionError(f"{cmd!r} failed ({r.returncode}): {r.stderr.decode()}")
    return r


def nvmefs(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run([NVMEFS, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise AssertionError(f"nvmefs {' '.join(args)} failed: {r.stderr}")
    return r


@contextlib.contextmanager
def foreground(mnt: Path, *devices: str, args: tuple[str, ...] = (), default=("sim",)):
    """`nvmefs mount -f` as a child process; unmounted (and waited for) afterwards.
    No devices: `default` (pass () to mount every local controller)."""
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([NVMEFS, "mount", "-f", *args, str(mnt), *(devices or default)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 30, "mount")
        if proc.poll() is not None:
            raise AssertionError(f"nvmefs exited {proc.returncode}: {proc.stderr.read()}")
        yield proc
    finally:
        if proc.poll() is None and is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


@pytest.fixture
def mnt(tmp_path):
    return tmp_path / "mnt"
