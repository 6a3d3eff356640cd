"""nvmefs against the floor: do-nothing FUSE servers, the same client code for all.

Servers, each mounted in turn (foreground, under a temporary directory):
  nvmefs sim     `nvmefs mount -f MNT sim`
  nvmefs null    `nvmefs mount -f MNT sim:null=1` (I/O commands complete at once,
                 reads return zeros, no storage: what is left is nvmefs's own cost)
  pyfuse3 peer   bench/floor/nothing.py: trio + pyfuse3, the same tree, no work
  C peer         bench/floor/nothing.c: libfuse3 low-level API, fuse_session_loop
                 (one thread), built into build/floor/nothing
The peers serve nvme0/identify (4096 fixed bytes), nvme0/identify.json (fixed
bytes, as many as nvmefs's) and nvme0/passthru/io (each write of k x 64 bytes
answered by k x 4112 zero bytes), with nvmefs's modes, timeouts and direct_io.

ROUNDS rounds, each mounting every server in turn; each figure is the median of
the rounds (this machine's neighbours make single figures wander by 10-20 %).

Operations (SECONDS each, after a short warm-up):
  open+read+close of identify and of identify.json (ops/s, µs/op);
  the io mailbox, 4 KiB Reads in batches of 32 and 128: one write of the batch,
  then reads until every answer is in, on one fd kept open (commands/s).
During the batch-128 run the daemon's CPU (utime+stime of /proc/PID/stat) and
the client's own are taken: a daemon near 100 % (one core) is the bottleneck.

Ratios: nvmefs ÷ each peer (time for files, commands/s for the mailbox), beside
the issue's targets (printed, not asserted): null ÷ pyfuse3 at batch 128 >= 0.25;
sim at batch 32 >= 60,000 cmd/s; identify <= 1.1 x and identify.json <= 1.3 x the
pyfuse3 peer's time.

Run: .venv/bin/python bench/floor.py (or `make bench`). Every mount is unmounted
on the way out (fusermount3 -u, then -u -z); every server is ended by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nvmefs.spec.passthru import encode_request

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NVMEFS = str(Path(sys.executable).parent / "nvmefs")
PEER_PY = HERE / "floor" / "nothing.py"
PEER_C_SRC = HERE / "floor" / "nothing.c"
PEER_C = ROOT / "build" / "floor" / "nothing"
PREFIX = "nvmefs-floor-"            # + the run's pid: a killed run's leftovers are found by it

SECONDS = 1.5
WARMUP = 0.3
ROUNDS = 3
BATCHES = (32, 128)
CPU_BATCH = 128
ANSWER = 16 + 4096                  # CQE + the 4 KiB of a Read
MOUNT_TIMEOUT = 60.0
SERVER_LIMIT = 180.0                # seconds one server may take in all (else killed: reads fail)
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

TARGETS = dict(identify=1.1, json=1.3, null_b128=0.25, sim_b32=60_000)


def read_sqe(i: int) -> bytes:
    """4 KiB Read of LBA 8*i (512-byte blocks of the sim's 1 GiB namespace)."""
    return encode_request(0x02, nsid=1, cdw10=8 * i, cdw12=7, data_len=4096, cid=i)


# ------------------------------------------------------------------ processes and mounts

def run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def mountpoints() -> set[bytes]:
    with open("/proc/self/mountinfo", "rb") as f:
        return {line.split(b" ")[4] for line in f}


def mounted(mnt: str) -> bool:
    return os.fsencode(mnt) in mountpoints()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of the server and of this client."""
    mine = os.times()
    return cpu_seconds(pid), mine.user + mine.system


def detach(mnt: str) -> None:
    """fusermount3 -u, then -u -z (lazy) if it is still mounted."""
    for cmd in (["fusermount3", "-u", mnt], ["fusermount3", "-u", "-z", mnt]):
        if not mounted(mnt):
            return
        try:
            run(cmd, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass


def end(proc: subprocess.Popen, grace: float = 15) -> None:
    """Wait for a server to exit after its unmount; SIGTERM, then SIGKILL, by its pid."""
    for sig, wait in ((None, grace), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if sig is not None and proc.poll() is None:
            print(f"note: pid {proc.pid} still running: {sig.name}", file=sys.stderr)
            proc.send_signal(sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def alive_run(pid: int) -> bool:
    """Whether pid is a live run of this benchmark (its temporary directory is in use)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid != os.getpid() and b"floor" in f.read()
    except OSError:
        return False


def clean_leftovers() -> None:
    """What a killed earlier run left (temporary directories named after its pid, when
    that run is gone): detach its mounts, end their servers (found by the mountpoint in
    their command line), remove the directory."""
    base = tempfile.gettempdir()
    for name in sorted(os.listdir(base)):
        pid = name.removeprefix(PREFIX).partition("-")[0]
        if not name.startswith(PREFIX) or not pid.isdigit() or alive_run(int(pid)):
            continue
        tmp = os.fsencode(os.path.join(base, name)) + b"/"
        for mp in sorted(m for m in mountpoints() if m.startswith(tmp)):
            print(f"note: detaching {os.fsdecode(mp)}, left by an earlier run", file=sys.stderr)
            pids = []
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) != os.getpid():
                    try:
                        with open(f"/proc/{entry}/cmdline", "rb") as f:
                            if mp in f.read().split(b"\0"):
                                pids.append(int(entry))
                    except OSError:
                        continue
            detach(os.fsdecode(mp))
            for server in pids:
                try:
                    os.kill(server, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if not any(m.startswith(tmp) for m in mountpoints()):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


@dataclass
class Server:
    label: str
    argv: Callable[[str, int], list[str]]       # (mountpoint, identify.json size) -> command
    rounds: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def results(self) -> dict:
        """Each figure's median over the rounds."""
        keys = {k for r in self.rounds for k in r}
        out = {}
        for k in keys:
            values = [r[k] for r in self.rounds if k in r]
            if isinstance(values[0], tuple):
                out[k] = tuple(statistics.median(v) for v in zip(*values))
            else:
                out[k] = statistics.median(values)
        return out


class Mounted:
    """One server mounted at `mnt` (a context manager): started in the foreground, ready
    once its tree answers, unmounted and ended on the way out whatever happened."""

    def __init__(self, server: Server, mnt: str, log: str, json_size: int):
        self.server, self.mnt, self.log, self.json_size = server, mnt, log, json_size
        self.proc: subprocess.Popen | None = None
        self.watchdog: threading.Timer | None = None

    def __enter__(self) -> "Mounted":
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.server.argv(self.mnt, self.json_size),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # a server that hangs would hold the client in a read: kill it, the reads fail
            self.watchdog = threading.Timer(SERVER_LIMIT, self._overdue)
            self.watchdog.daemon = True
            self.watchdog.start()
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while not (mounted(self.mnt) and os.path.exists(self.path("identify"))):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"exited ({self.proc.returncode}) before mounting: "
                                       f"{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not mounted after {MOUNT_TIMEOUT:.0f} s: "
                                       f"{self.log_tail()}")
                time.sleep(0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            detach(self.mnt)
        finally:
            if self.proc is not None:
                end(self.proc)
            if self.watchdog is not None:
                self.watchdog.cancel()

    def _overdue(self) -> None:
        print(f"note: {self.server.label} took over {SERVER_LIMIT:.0f} s: killing pid "
              f"{self.proc.pid}", file=sys.stderr)
        self.proc.kill()
        detach(self.mnt)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def path(self, *parts: str) -> str:
        return os.path.join(self.mnt, "nvme0", *parts)

    def log_tail(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-1500:].strip()
        except OSError:
            return ""


# ------------------------------------------------------------------ the client (the same for all)

def timed(op: Callable[[], None], sample: Callable[[], object] = lambda: None,
          seconds: float = SECONDS) -> tuple[int, float, object, object]:
    """Calls of op over `seconds` after a warm-up: (calls, elapsed seconds, and what
    `sample` gave when the measured calls began and when they ended)."""
    end_at = time.perf_counter() + WARMUP
    while time.perf_counter() < end_at:
        op()
    first = sample()
    n, start = 0, time.perf_counter()
    end_at = start + seconds
    while True:
        op()
        n += 1
        now = time.perf_counter()
        if now >= end_at:
            return n, now - start, first, sample()


def whole_file(path: str) -> Callable[[], None]:
    buf = bytearray(65536)

    def op() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.readv(fd, [buf]):
                pass
        finally:
            os.close(fd)
    return op


def mailbox(fd: int, batch: int) -> tuple[Callable[[], None], memoryview]:
    """One write of `batch` Reads, then reads until all answers are in; the buffer they land in."""
    requests = b"".join(read_sqe(i) for i in range(batch))
    need = batch * ANSWER
    view = memoryview(bytearray(need))

    def op() -> None:
        sent = 0
        while sent < len(requests):
            sent += os.write(fd, requests[sent:])
        got = 0
        while got < need:
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise RuntimeError(f"the mailbox ended after {got} of {need} bytes")
            got += n
    return op, view


def statuses_ok(view: memoryview, batch: int) -> bool:
    """Every CQE's status (dword 3, bits 31:17) is zero."""
    return all(struct.unpack_from("<I", view, i * ANSWER + 12)[0] >> 17 == 0
               for i in range(batch))


def measure(m: Mounted) -> dict:
    out: dict = {}
    for key, name in (("identify", "identify"), ("json", "identify.json")):
        n, secs, _, _ = timed(whole_file(m.path(name)))
        out[key] = (n / secs, secs / n * 1e6)
    fd = os.open(m.path("passthru", "io"), os.O_RDWR)
    try:
        for batch in BATCHES:
            op, view = mailbox(fd, batch)
            op()
            if not statuses_ok(view, batch):
                raise RuntimeError(f"batch {batch}: a command did not succeed")
            n, secs, (daemon0, client0), (daemon1, client1) = timed(op, lambda: cpu(m.pid))
            out[f"b{batch}"] = (n * batch / secs, secs / (n * batch) * 1e6)
            if batch == CPU_BATCH:
                out["cpu_daemon"] = (daemon1 - daemon0) / secs * 100
                out["cpu_client"] = (client1 - client0) / secs * 100
    finally:
        os.close(fd)
    return out


# ------------------------------------------------------------------ servers

def build_c_peer() -> str:
    """build/floor/nothing from nothing.c (unless up to date); '' if it cannot be built."""
    if PEER_C.exists() and PEER_C.stat().st_mtime >= PEER_C_SRC.stat().st_mtime:
        return str(PEER_C)
    try:
        flags = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.decode().split()
        PEER_C.parent.mkdir(parents=True, exist_ok=True)
        r = run(["gcc", "-O2", "-Wall", "-Wextra", "-o", str(PEER_C), str(PEER_C_SRC), *flags],
                timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"note: cannot build the C peer: {e}", file=sys.stderr)
        return ""
    if r.returncode:
        print(f"note: cannot build the C peer:\n{r.stderr.decode(errors='replace')}",
              file=sys.stderr)
        return ""
    return str(PEER_C)


def servers(c_peer: str) -> list[Server]:
    out = [
        Server("nvmefs sim", lambda mnt, _: [NVMEFS, "mount", "-f", mnt, "sim"]),
        Server("nvmefs null", lambda mnt, _: [NVMEFS, "mount", "-f", mnt, "sim:null=1"]),
        Server("pyfuse3 peer", lambda mnt, size: [sys.executable, str(PEER_PY), mnt,
                                                   "--json-size", str(size)]),
        Server("C peer", lambda mnt, size: [c_peer, mnt, str(size)]),
    ]
    if not c_peer:
        out[-1].error = "not built"
    return out


# ------------------------------------------------------------------ report

def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(all_servers: list[Server]) -> None:
    by = {s.label: s.results for s in all_servers}
    labels = [s.label for s in all_servers]
    W = 13

    def row(title: str, unit: str, key: str, index: int | None, spec: str) -> None:
        cells = []
        for label in labels:
            value = by[label].get(key)
            if value is not None and index is not None:
                value = value[index]
            cells.append(fmt(value, spec).rjust(W))
        print(f"{title:<24}{unit:>8}" + "".join(cells))

    print(f"floor: {SECONDS} s per figure, median of {ROUNDS} rounds, {NCPU} CPUs, one client "
          "process (the same code for every server)")
    print(f"{'':<24}{'':>8}" + "".join(label.rjust(W) for label in labels))
    for key, title in (("identify", "identify open+read+close"),
                       ("json", "identify.json o+r+close")):
        row(title, "µs/op", key, 1, ".1f")
        row("", "ops/s", key, 0, ".0f")
    for batch in BATCHES:
        row(f"io 4K Read batch {batch}", "cmd/s", f"b{batch}", 0, ".0f")
        row("", "µs/cmd", f"b{batch}", 1, ".2f")
    row(f"daemon CPU (batch {CPU_BATCH})", "%", "cpu_daemon", None, ".0f")
    row(f"client CPU (batch {CPU_BATCH})", "%", "cpu_client", None, ".0f")
    for s in all_servers:
        if s.error:
            print(f"  {s.label}: {s.error}")

    def get(label: str, key: str, index: int) -> float | None:
        value = by.get(label, {}).get(key)
        return None if value is None else value[index]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    def verdict(value: float | None, limit: float, at_least: bool) -> str:
        if value is None:
            return "n/a"
        return "met" if (value >= limit if at_least else value <= limit) else "MISSED"

    sim, null, py, c = "nvmefs sim", "nvmefs null", "pyfuse3 peer", "C peer"
    print()
    print(f"{'ratio (nvmefs ÷ peer)':<30}{'sim/py':>8}{'sim/C':>8}{'null/py':>8}{'null/C':>8}"
          "   target")
    lines = []
    for key, name, target in (("identify", "identify time", TARGETS["identify"]),
                              ("json", "identify.json time", TARGETS["json"])):
        r = [ratio(get(n, key, 1), get(p, key, 1)) for n in (sim, null) for p in (py, c)]
        lines.append((name, r, f"sim/py <= {target}: {verdict(r[0], target, False)}"))
    for batch in BATCHES:
        r = [ratio(get(n, f"b{batch}", 0), get(p, f"b{batch}", 0))
             for n in (sim, null) for p in (py, c)]
        if batch == 128:
            note = f"null/py >= {TARGETS['null_b128']}: " \
                f"{verdict(r[2], TARGETS['null_b128'], True)}"
        elif batch == 32:
            note = f"sim >= {TARGETS['sim_b32']} cmd/s ({fmt(get(sim, 'b32', 0), '.0f')}): " \
                f"{verdict(get(sim, 'b32', 0), TARGETS['sim_b32'], True)}"
        else:
            note = ""
        lines.append((f"io batch {batch} cmd/s", r, note))
    for name, r, note in lines:
        print(f"{name:<30}" + "".join(fmt(v, ".2f").rjust(8) for v in r) + f"   {note}")


# ------------------------------------------------------------------ main

def main() -> None:
    # SIGTERM unwinds like Ctrl-C, through every unmount
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        clean_leftovers()
        all_servers = servers(build_c_peer())
        json_size = 2735
        tmp = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        try:
            for round_ in range(ROUNDS):
                for i, server in enumerate(all_servers):
                    if server.error:
                        continue
                    mnt = os.path.join(tmp, f"mnt{round_}-{i}")
                    os.mkdir(mnt)
                    try:
                        with Mounted(server, mnt, os.path.join(tmp, f"server{i}.log"),
                                     json_size) as m:
                            if i == 0:      # the peers serve as many bytes as nvmefs does
                                with open(m.path("identify.json"), "rb") as f:
                                    json_size = len(f.read())
                            server.rounds.append(measure(m))
                    except (OSError, RuntimeError) as e:
                        server.error = f"failed: {e}"
                        print(f"note: {server.label} {server.error}", file=sys.stderr)
        finally:
            if any(os.fsencode(tmp) in mp for mp in mountpoints()):
                print(f"note: {tmp} still has a mount; left in place", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        report(all_servers)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
