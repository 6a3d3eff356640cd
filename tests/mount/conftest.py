"""Real FUSE mounts of the `nvmefs` command, driven by shell tools.

Robust by construction: CI runs with no stdin and must never hang. So every
child gets stdin=DEVNULL and every wait has a timeout; the daemon logs to a
file (a pipe nobody reads would block it), printed when its test fails; and
when a mount is torn down, nothing stays stuck in it: children of the test
still alive are killed, the daemon is stopped (SIGTERM, then the FUSE
connection is aborted and it is killed), a mount left behind is detached.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

NVMEFS = str(Path(sys.executable).parent / "nvmefs")
FUSECTL = Path("/sys/fs/fuse/connections")
STOP_TIMEOUT = 10.0         # seconds a daemon gets to exit after SIGTERM (and again after abort)
LOG_TAIL = 20_000           # characters of a daemon's log shown when its test fails

# mount point -> ("major:minor" of its FUSE connection, daemon pid) of every foreground mount up
_live: dict[Path, tuple[str, int]] = {}


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


def _unescape(field: bytes) -> bytes:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field)


def fuse_device(path: Path) -> str | None:
    """"major:minor" of the FUSE mount at `path` (an absolute path, taken as it is:
    nothing here asks the mount, whose daemon may hang), None if none is."""
    target = os.fsencode(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.partition(b" - ")
            fields = left.split(b" ")
            if _unescape(fields[4]) == target and right.startswith(b"fuse"):
                return fields[2].decode()
    return None


def is_mounted(path: Path) -> bool:
    target = os.fsencode(path)
    with open("/proc/self/mountinfo", "rb") as f:
        return any(_unescape(line.split(b" ")[4]) == target for line in f)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def abort_connection(device: str | None) -> bool:
    """Abort a FUSE connection (/sys/fs/fuse/connections/MINOR/abort): every request
    in it fails at once and its daemon's reads of /dev/fuse end."""
    if not device:
        return False
    if not (FUSECTL / "version").exists() and not any(FUSECTL.glob("*")) and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    try:
        (FUSECTL / device.split(":")[1] / "abort").write_text("1")
        return True
    except OSError:
        return False


def _abort_all() -> None:
    for device, _ in list(_live.values()):
        abort_connection(device)


def run(cmd, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that cannot hang: a child still there at `timeout` is killed,
    and if it cannot die (stuck in a mount whose daemon does not answer) the test
    mounts' connections are aborted. Raises subprocess.TimeoutExpired then."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            _abort_all()
            out, err = proc.communicate(timeout=10)
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def sh(cmd: str, cwd: Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `cmd` with bash (dash reports every failed write as "I/O error")."""
    r = run(["/bin/bash", "-c", cmd], cwd=cwd, timeout=timeout)
    if check and r.returncode:
        raise AssertionError(f"{cmd!r} failed ({r.returncode}): {r.stderr.decode()}")
    return r


def nvmefs(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = run([NVMEFS, *args], timeout=timeout, text=True)
    if check and r.returncode:
        raise AssertionError(f"nvmefs {' '.join(args)} failed: {r.stderr}")
    return r


def _children() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += map(int, f.read().split())
        except OSError:
            pass
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def kill_children() -> list[int]:
    """SIGKILL this test process's children but the daemons of live mounts; the pids killed."""
    spare = {pid for _, pid in _live.values()}
    killed = []
    for pid in _children():
        if pid not in spare and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def stop(proc: subprocess.Popen, mnt: Path, device: str | None) -> list[str]:
    """Stop a foreground daemon and leave nothing stuck in its mount; what it took."""
    steps = []
    killed = kill_children()
    if killed:
        steps.append(f"killed leftover children {killed}")
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            steps.append(f"daemon still running {STOP_TIMEOUT:.0f} s after SIGTERM: "
                         f"aborted the FUSE connection ({abort_connection(device)}) and killed it")
            proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                steps.append("daemon could not be killed")
    if is_mounted(mnt):
        steps.append("mount left behind: detached")
        for cmd in (["fusermount3", "-u", "-z", str(mnt)], ["umount", "-l", str(mnt)]):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                if run(cmd, timeout=10).returncode == 0:
                    break
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(map(_alive, killed)), 5, "children")
    if any(map(_alive, killed)):
        abort_connection(device)
        steps.append("children stuck in the mount: aborted the FUSE connection")
    return steps


@contextlib.contextmanager
def foreground(mnt: Path, *devices: str, args: tuple[str, ...] = (), default=("sim",)):
    """`nvmefs mount -f` as a child process; stopped (and waited for) afterwards.
    No devices: `default` (pass () to mount every local controller). The daemon's
    log is printed if the body fails or the daemon did not end cleanly."""
    mnt.mkdir(exist_ok=True)
    mnt = Path(os.path.abspath(mnt))
    log = tempfile.NamedTemporaryFile(prefix="nvmefs-daemon-", suffix=".log", delete=False)
    proc = subprocess.Popen([NVMEFS, "mount", "-f", *args, str(mnt), *(devices or default)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    device = None
    failed = True
    try:
        wait_for(lambda: fuse_device(mnt) or proc.poll() is not None, 30, "mount")
        if proc.poll() is not None:
            log.flush()
            raise AssertionError(f"nvmefs exited {proc.returncode}: "
                                 f"{Path(log.name).read_text(errors='replace')[-LOG_TAIL:]}")
        device = fuse_device(mnt)
        _live[mnt] = (device, proc.pid)
        yield proc
        failed = False
    finally:
        steps = stop(proc, mnt, device)
        _live.pop(mnt, None)
        log.close()
        if failed or steps or proc.returncode not in (0, -signal.SIGKILL):
            text = Path(log.name).read_text(errors="replace")
            print(f"--- nvmefs daemon log ({log.name}, exit {proc.returncode}) ---")
            for step in steps:
                print(f"teardown: {step}")
            print(text[-LOG_TAIL:] if len(text) > LOG_TAIL else text)
        os.unlink(log.name)


@pytest.fixture
def mnt(tmp_path):
    path = tmp_path / "mnt"
    yield path
    # a mount the test left (daemon mode): abort it, detach it, end its daemon
    device = fuse_device(Path(os.path.abspath(path)))
    if device:
        abort_connection(device)
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            run(["fusermount3", "-u", "-z", str(path)], timeout=10)
    kill_children()
