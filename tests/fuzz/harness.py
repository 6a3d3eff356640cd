"""A real nvmefs mount for the fuzzers: the daemon as a child process, its memory,
its health, and a way out of every hang.

Nothing here may hang the caller: every child gets stdin=DEVNULL and a timeout;
checks that touch the mount run in a child process (a stuck daemon blocks that
child, not us); a watchdog aborts the FUSE connection of a mount that stops
making progress, which fails every operation stuck in it (ENOTCONN); and the
mount is always taken down (`nvmefs umount`, then `fusermount3 -u -z`, then the
daemon is killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

NVMEFS = os.environ.get("NVMEFS") or str(Path(sys.executable).parent / "nvmefs")
FUSECTL = Path("/sys/fs/fuse/connections")
MOUNT_TIMEOUT = 60.0        # seconds for the daemon to mount
STOP_TIMEOUT = 20.0         # seconds for each step of taking a mount down


class MountError(Exception):
    pass


def run(cmd: list[str], timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with no stdin and a bound; a child still there at `timeout`
    is killed and subprocess.TimeoutExpired raised."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(cmd, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _unescape(field: bytes) -> bytes:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field)


def fuse_device(path: Path) -> str | None:
    """"major:minor" of the FUSE mount at `path` (from /proc/self/mountinfo; the
    mount itself is not asked), None if there is none."""
    target = os.fsencode(os.path.abspath(path))
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.partition(b" - ")
            fields = left.split(b" ")
            if len(fields) > 4 and _unescape(fields[4]) == target and right.startswith(b"fuse"):
                return fields[2].decode()
    return None


def abort_connection(device: str | None) -> bool:
    """Abort a FUSE connection: every request in it fails at once (ENOTCONN)."""
    if not device:
        return False
    if not FUSECTL.is_dir() or not any(FUSECTL.iterdir()):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)], timeout=10)
    try:
        (FUSECTL / device.split(":")[1] / "abort").write_text("1")
        return True
    except OSError:
        return False


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `interval` seconds; `peak_kib` is the largest
    sample or the kernel's high-water mark (VmHWM), whichever is larger."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        rss, hwm = memory_kib(self.pid)
        if rss or hwm:
            self.samples += 1
            self.peak_kib = max(self.peak_kib, rss, hwm)

    def stop(self) -> int:
        self._halt.set()
        if self.is_alive():
            self.join(5)
        self.sample()
        return self.peak_kib


class Watchdog(threading.Thread):
    """Aborts the FUSE connection of `device` when nobody called `kick()` for
    `timeout` seconds: whatever is stuck in the mount then fails with ENOTCONN
    and the fuzzer reports the hang instead of hanging."""

    def __init__(self, device: str | None, timeout: float):
        super().__init__(daemon=True, name="watchdog")
        self.device, self.timeout = device, timeout
        self.fired: str | None = None
        self.what = "start"
        self._last = time.monotonic()
        self._halt = threading.Event()

    def kick(self, what: str | None = None) -> None:
        self._last = time.monotonic()
        if what is not None:
            self.what = what

    def run(self) -> None:
        while not self._halt.wait(1.0):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                self.fired = (f"no progress for {idle:.0f} s (last: {self.what}); "
                              f"FUSE connection aborted: {abort_connection(self.device)}")
                return

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)


class Mount:
    """`nvmefs mount --foreground --passthru POLICY MNT sim:size=SIZE,path=NSDIR` in
    `workdir`, the daemon a child of this process (its log in workdir/daemon.log).
    Use as a context manager: the mount is taken down whatever happens."""

    def __init__(self, workdir: Path, policy: str, size: str = "64M", args: tuple[str, ...] = ()):
        self.workdir = Path(os.path.abspath(workdir))
        self.policy, self.size, self.args = policy, size, tuple(args)
        self.mnt = self.workdir / "mnt"
        self.nsdir = self.workdir / "ns"
        self.log_path = self.workdir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.device: str | None = None
        self.exit_code: int | None = None
        self.died: str | None = None        # set when the daemon was found dead before stop()
        self.teardown: list[str] = []       # what taking the mount down took, beyond umount

    @property
    def uri(self) -> str:
        return f"sim:size={self.size},path={self.nsdir}"

    @property
    def root(self) -> Path:
        return self.mnt / "nvme0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def backing(self, nsid: int = 1) -> Path:
        """The sim's backing file of namespace `nsid` (storage: nvmefs-sim<index>-ns<nsid>.img)."""
        return self.nsdir / f"nvmefs-sim0-ns{nsid}.img"

    def start(self) -> "Mount":
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.nsdir.mkdir(parents=True, exist_ok=True)
        if fuse_device(self.mnt):
            raise MountError(f"{self.mnt} is already a FUSE mount")
        cmd = [NVMEFS, "mount", "--foreground", "--passthru", self.policy, *self.args,
               str(self.mnt), self.uri]
        with open(self.log_path, "ab") as log:
            log.write(f"=== {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not fuse_device(self.mnt):
            if self.proc.poll() is not None:
                raise MountError(f"nvmefs exited {self.proc.returncode} before mounting:\n"
                                 f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise MountError(f"no mount at {self.mnt} after {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.02)
        self.device = fuse_device(self.mnt)
        # the tree appears once the daemon serves: wait for it in a child (bounded)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while (problem := self.answering(timeout=10)) is not None:
            if time.monotonic() > deadline:
                raise MountError(f"the mount does not answer: {problem}")
            time.sleep(0.1)
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None and self.died is None:
                self.died = f"daemon exited with {self.proc.returncode}"
            return False
        return True

    def answering(self, timeout: float = 15.0) -> str | None:
        """None if the mount serves (a child reads nvme0/info within `timeout`), else why not."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"daemon exited with {self.proc.returncode}"
        try:
            r = run(["cat", str(self.root / "info")], timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"reading {self.root / 'info'} took more than {timeout:.0f} s"
        if r.returncode != 0 or b"state: live" not in r.stdout:
            return (f"cat {self.root / 'info'} exited {r.returncode}: "
                    f"{r.stderr.decode(errors='replace').strip() or r.stdout[:200]!r}")
        return None

    def stop(self) -> int | None:
        """Unmount and wait for the daemon; its exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        proc = self.proc
        if fuse_device(self.mnt):
            try:
                r = run([NVMEFS, "umount", str(self.mnt)], timeout=STOP_TIMEOUT)
                if r.returncode:
                    self.teardown.append(f"nvmefs umount exited {r.returncode}: "
                                         f"{r.stderr.decode(errors='replace').strip()}")
            except subprocess.TimeoutExpired:
                self.teardown.append(f"nvmefs umount took more than {STOP_TIMEOUT:.0f} s")
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.teardown.append("daemon still running after umount: SIGTERM")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.teardown.append(f"daemon still running after SIGTERM: connection aborted "
                                     f"({abort_connection(self.device)}), SIGKILL")
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=STOP_TIMEOUT)
        if fuse_device(self.mnt):
            self.teardown.append("mount left behind: fusermount3 -u -z")
            for cmd in (["fusermount3", "-u", "-z", str(self.mnt)], ["umount", "-l", str(self.mnt)]):
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    if run(cmd, timeout=STOP_TIMEOUT).returncode == 0:
                        break
        self.exit_code = proc.returncode
        return self.exit_code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def __enter__(self) -> "Mount":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
