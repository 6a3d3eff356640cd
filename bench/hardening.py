"""Hardening of the daemon, measured on real mounts of the sim.

1. Memory attacks on passthru/ (default readonly policy): the daemon's RSS
   (VmRSS before, peak VmHWM, VmRSS after closing) against the answer bytes it
   admitted, for (a) one 128 KiB write of 2048 Reads of 512 KiB, (b) one 1 MiB
   write of the same, (c) 8 sessions writing until ENOBUFS and never reading,
   (d) sim:mdts=0 and one Get Features with data_len 0xFFFFFFFC. Peer: the
   bytes admitted (ratio (peak - base) / admitted; ~1 means no extra copies).
2. 500 readers blocked in read(2) of passthru/io (threads in 4 processes, each
   read waiting for a Read on a sim with io_latency=600000), then 300 more (the
   daemon allows 768 waiters: the rest get EAGAIN). Figures: daemon CPU % over
   10 s, and `cat nvme0/info` as uid 65534 on the --allow-other mount (median
   and max of 50, process start included). Peer: the same with no readers.
3. Signal to exit of a child blocked in each blocking call (SIGINT, SIGTERM,
   SIGKILL; SIGINT at its default disposition, as for cat): median and max of
   10, from kill(2) until the child is reaped. Peer: a child blocked reading
   an empty FIFO (the kernel's own floor).

Run as root (setpriv, --allow-other). Every mount is unmounted on the way out.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from nvmefs.spec.passthru import encode_request

NVMEFS = str(Path(sys.executable).parent / "nvmefs")
PY = sys.executable
MiB = 1 << 20
ANSWER_512K = 16 + 512 * 1024       # one 512 KiB Read's answer: CQE + data
FUSE_WAIT = "request_wait_answer"   # wchan of a thread waiting for a FUSE answer
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPS = 10                           # trials per signal and blocking call
CAT_RUNS = 50


def read512(i: int) -> bytes:
    """Read of 512 KiB (1024 blocks of 512 bytes) at a distinct LBA of the 1 GiB namespace."""
    return encode_request(0x02, cid=i & 0xFFFF, nsid=1, cdw10=(i * 1024) % (1 << 21),
                          cdw12=1023, data_len=512 * 1024)


def read4k(i: int = 0) -> bytes:
    return encode_request(0x02, cid=i & 0xFFFF, nsid=1, cdw10=8 * i, cdw12=7, data_len=4096,
                          timeout_ms=600_000)


# ------------------------------------------------------------------ daemon and mounts

def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM... of pid in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Vm"):
                out[key] = int(value.split()[0])
    return out


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wchan(pid: int, tid: int | None = None) -> str:
    path = f"/proc/{pid}/task/{tid}/wchan" if tid else f"/proc/{pid}/wchan"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "gone"


def find_daemon(mnt: str) -> int:
    """The pid of the daemon serving mnt (its `nvmefs mount ... MNT ...` command line)."""
    target = os.fsencode(mnt)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if target in args and b"mount" in args and any(b"nvmefs" in a for a in args[:2]):
            return int(entry)
    raise RuntimeError(f"no daemon found for {mnt}")


def mounted(mnt: str) -> bool:
    target = os.fsencode(mnt)
    with open("/proc/self/mountinfo", "rb") as f:
        return any(line.split(b" ")[4] == target for line in f)


def run(cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          **kw)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while state(pid) not in ("gone", "Z"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Mount:
    def __init__(self, mnt: str, pid: int, log: str):
        self.mnt, self.pid, self.log = mnt, pid, log
        self.ctrl = os.path.join(mnt, "nvme0")

    def path(self, *parts: str) -> str:
        return os.path.join(self.ctrl, *parts)

    def rss(self) -> dict[str, int]:
        return proc_status(self.pid)

    def alive(self) -> bool:
        """The daemon is running and answers `cat nvme0/info` within 10 s."""
        if state(self.pid) in ("gone", "Z"):
            return False
        try:
            return run(["cat", self.path("info")], timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def log_tail(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@contextmanager
def mounted_sim(device: str, *options: str):
    tmp = tempfile.mkdtemp(prefix="nvmefs-hardening-")
    os.chmod(tmp, 0o755)            # another user must reach the mount point (part 2)
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    log = os.path.join(tmp, "daemon.log")
    r = run([NVMEFS, "mount", "--log", log, *options, mnt, device], timeout=120)
    if r.returncode:
        os.rmdir(mnt)
        raise RuntimeError(f"mount {device} failed: {r.stderr.decode(errors='replace')}")
    pid = None
    try:
        pid = find_daemon(mnt)
        yield Mount(mnt, pid, log)
    finally:
        unmount(mnt, pid)
        for name in ("daemon.log",):
            try:
                os.unlink(os.path.join(tmp, name))
            except OSError:
                pass
        try:
            os.rmdir(mnt)
            os.rmdir(tmp)
        except OSError as e:
            print(f"note: {tmp} left behind: {e}", file=sys.stderr)


def unmount(mnt: str, pid: int | None) -> None:
    try:
        run([NVMEFS, "umount", mnt], timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if mounted(mnt):
        try:
            run(["fusermount3", "-u", "-z", mnt], timeout=30)
        except subprocess.TimeoutExpired:
            pass
    if pid and not wait_gone(pid, 15):
        print(f"note: daemon {pid} still running after unmount; SIGTERM", file=sys.stderr)
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 10):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)


# ------------------------------------------------------------------ 1. memory attacks

def settle_rss(m: Mount, cap: float = 10.0) -> None:
    """Until the daemon's VmRSS has not grown by 1 MiB for 0.7 s (at most `cap` s)."""
    start = last_change = time.monotonic()
    last = m.rss()["VmRSS"]
    while time.monotonic() - last_change < 0.7 and time.monotonic() - start < cap:
        time.sleep(0.05)
        now = m.rss()["VmRSS"]
        if now > last + 1024:
            last, last_change = now, time.monotonic()


def drain(fd: int, need: int, timeout: float = 30.0) -> tuple[int, int]:
    """Read `need` bytes of answers of 512 KiB Reads: (bytes read, answers with status 0)."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < need and time.monotonic() < deadline:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        buf += chunk
    ok = sum(1 for off in range(0, len(buf) - 15, ANSWER_512K)
             if int.from_bytes(buf[off + 14:off + 16], "little") >> 1 == 0)
    return len(buf), ok


def attack_one_write(m: Mount, size: int) -> dict:
    batch = b"".join(read512(i) for i in range(size // 64))
    fd = os.open(m.path("passthru", "io"), os.O_RDWR)
    base = m.rss()["VmRSS"]
    try:
        try:
            n = os.write(fd, batch)
            got = f"{n} of {size} B"
        except OSError as e:
            n, got = 0, f"{errno.errorcode[e.errno]}"
        admitted = n // 64
        settle_rss(m)
        peak = m.rss()["VmHWM"]
        read, ok = drain(fd, admitted * ANSWER_512K)
    finally:
        os.close(fd)
    settle_rss(m, 2)
    note = f"read back {read // ANSWER_512K} answers, {ok} status 0"
    return dict(returned=got, admitted=admitted, base=base, peak=peak,
                after=m.rss()["VmRSS"], alive=m.alive(), note=note)


def attack_sessions(m: Mount, sessions: int = 8) -> dict:
    chunk = b"".join(read512(i) for i in range(2048))     # 128 KiB of requests a write
    results: list[tuple[int, int, str]] = [(0, 0, "")] * sessions
    fds = [os.open(m.path("passthru", "io"), os.O_RDWR) for _ in range(sessions)]
    base = m.rss()["VmRSS"]

    def writer(k: int) -> None:
        taken, writes, end = 0, 0, "no ENOBUFS in 2000 writes"
        while writes < 2000:
            writes += 1
            try:
                taken += os.write(fds[k], chunk) // 64
            except OSError as e:
                end = errno.errorcode[e.errno]
                break
        results[k] = (taken, writes, end)

    try:
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        settle_rss(m)
        peak = m.rss()["VmHWM"]
    finally:
        for fd in fds:
            os.close(fd)
    settle_rss(m, 2)
    ends = sorted({r[2] for r in results})
    per = [r[0] for r in results]
    return dict(returned=f"{'/'.join(ends)} after {sum(r[1] for r in results)} writes",
                admitted=sum(per), base=base, peak=peak, after=m.rss()["VmRSS"],
                alive=m.alive(), note=f"requests per session {min(per)}..{max(per)}")


def attack_huge_feature(m: Mount) -> dict:
    req = encode_request(0x0A, cdw10=0x01, data_len=0xFFFFFFFC)
    fd = os.open(m.path("passthru", "admin"), os.O_RDWR)
    base = m.rss()["VmRSS"]
    try:
        try:
            got = f"{os.write(fd, req)} of 64 B (no errno!)"
        except OSError as e:
            got = errno.errorcode[e.errno]
        settle_rss(m, 2)
        peak = m.rss()["VmHWM"]
    finally:
        os.close(fd)
    return dict(returned=got, admitted=0, base=base, peak=peak, after=m.rss()["VmRSS"],
                alive=m.alive(), note="Get Features FID 01h, data_len 0xFFFFFFFC")


def part1() -> list[str]:
    rows = []
    cases = [("a) 1 write 128 KiB: 2048 x 512K Read", "sim", lambda m: attack_one_write(m, 128 << 10)),
             ("b) 1 write 1 MiB: 16384 x 512K Read", "sim", lambda m: attack_one_write(m, 1 << 20)),
             ("c) 8 sessions write until ENOBUFS", "sim", attack_sessions),
             ("d) mdts=0, Get Features 4 GiB", "sim:mdts=0", attack_huge_feature)]
    for name, device, attack in cases:
        progress(name)
        with mounted_sim(device) as m:
            m.alive()                       # warm: the tree is looked up once
            r = attack(m)
            if not r["alive"]:
                print(m.log_tail(), file=sys.stderr)
        held = r["admitted"] * ANSWER_512K
        ratio = f"{(r['peak'] - r['base']) * 1024 / held:.2f}" if held else "-"
        rows.append(f"{name:<38}{r['returned']:>26}{r['admitted']:>6}{held / MiB:>7.0f}"
                    f"{r['base'] / 1024:>6.0f}{r['peak'] / 1024:>6.0f}{r['after'] / 1024:>6.0f}"
                    f"{ratio:>6}  {'yes' if r['alive'] else 'NO'}")
        rows.append(f"{'':<4}{r['note']}")
    head = (f"{'attack':<38}{'write returned':>26}{'reqs':>6}{'MiB':>7}{'base':>6}{'peak':>6}"
            f"{'after':>6}{'ratio':>6}  alive")
    return ["== 1. memory attacks, readonly policy: daemon RSS MiB (base VmRSS, peak VmHWM,",
            "   after close: kept answers included); reqs/MiB = requests/answer bytes admitted;",
            "   ratio = (peak - base) / admitted", head, *rows]


# ------------------------------------------------------------------ 2. blocked readers

READER = r"""
import os, sys, threading
threading.stack_size(256 << 10)
path, n, req = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
lock = threading.Lock()
def say(text):
    with lock:
        sys.stdout.write(text + "\n"); sys.stdout.flush()
def reader():
    tid = threading.get_native_id()
    try:
        fd = os.open(path, os.O_RDWR)
        os.write(fd, req)
    except OSError as e:
        say(f"failed {tid} {e.errno}"); return
    say(f"wrote {tid}")
    try:
        say(f"read {tid} {len(os.read(fd, 1 << 16))}")
    except OSError as e:
        say(f"error {tid} {e.errno}")
threads = [threading.Thread(target=reader, daemon=True) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
"""


class Readers:
    """Processes of reader threads; the lines they print, counted."""

    def __init__(self, path: str, processes: int, threads: int):
        self.procs = [subprocess.Popen([PY, "-S", "-c", READER, path, str(threads), read4k().hex()],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
                      for _ in range(processes)]
        self.expected = processes * threads
        self.lines: list[tuple[int, list[str]]] = []
        self.lock = threading.Lock()
        self.pumps = [threading.Thread(target=self._pump, args=(p,), daemon=True)
                      for p in self.procs]
        for t in self.pumps:
            t.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self.lock:
                self.lines.append((proc.pid, line.split()))

    def count(self, what: str, code: int | None = None) -> int:
        with self.lock:
            return sum(1 for _, w in self.lines
                       if w[0] == what and (code is None or int(w[2]) == code))

    def wrote(self) -> list[tuple[int, int]]:
        with self.lock:
            return [(pid, int(w[1])) for pid, w in self.lines if w[0] == "wrote"]

    def blocked(self) -> int:
        return sum(1 for pid, tid in self.wrote() if wchan(pid, tid) == FUSE_WAIT)

    def settle(self, timeout: float = 60) -> int:
        """Until every thread wrote (or failed) and every one that wrote is blocked in
        FUSE or has its answer/errno; the number blocked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wrote = self.count("wrote")
            if wrote + self.count("failed") >= self.expected:
                ended = self.count("read") + self.count("error")
                blocked = self.blocked()
                if blocked + ended >= wrote:
                    return blocked
            time.sleep(0.1)
        return self.blocked()

    def kill(self) -> float:
        start = time.monotonic()
        for p in self.procs:
            p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        return time.monotonic() - start


def daemon_cpu(m: Mount, seconds: float = 10.0) -> float:
    before, start = cpu_seconds(m.pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(m.pid) - before) / (time.monotonic() - start)


def cat_as_other(m: Mount | None, runs: int) -> tuple[float, float, int]:
    """(median ms, max ms, failures) of `cat nvme0/info` as uid/gid 65534; with no
    mount, of `cat /etc/passwd` (the cost of setpriv and cat themselves)."""
    path = m.path("info") if m else "/etc/passwd"
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", path]
    times, failed = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        try:
            r = run(cmd, timeout=30)
            failed += r.returncode != 0 or (m is not None and b"serial" not in r.stdout)
        except subprocess.TimeoutExpired:
            failed += 1
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times), failed


def part2() -> list[str]:
    out = ["== 2. blocked readers of passthru/io (sim:io_latency=600000, --allow-other)"]
    with mounted_sim("sim:io_latency=600000", "--allow-other") as m:
        m.alive()
        idle_cpu = daemon_cpu(m)
        idle_cat = cat_as_other(m, CAT_RUNS)
        floor_cat = cat_as_other(None, CAT_RUNS)
        first = second = None
        try:
            first = Readers(m.path("passthru", "io"), 4, 125)
            blocked1 = first.settle()
            eagain1 = first.count("error", errno.EAGAIN)
            busy_cpu = daemon_cpu(m)
            rss_busy = m.rss()["VmRSS"]
            busy_cat = cat_as_other(m, CAT_RUNS)
            second = Readers(m.path("passthru", "io"), 3, 100)
            blocked2 = second.settle()
            eagain2 = second.count("error", errno.EAGAIN)
            other2 = second.count("error") + second.count("read") - eagain2 + second.count("failed")
            full_cat = cat_as_other(m, 20)
        finally:
            killed = sum(r.kill() for r in (first, second) if r)
        alive = m.alive()
        if not alive:
            print(m.log_tail(), file=sys.stderr)

    def cat(c) -> str:
        return f"median {c[0]:6.1f} ms  max {c[1]:6.1f} ms" + (f"  FAILED {c[2]}" if c[2] else "")

    out += [f"500 readers: {first.count('wrote')} wrote, {blocked1} blocked in FUSE, "
            f"{eagain1} EAGAIN, {first.count('failed')} failed; daemon VmRSS {rss_busy / 1024:.0f} MiB",
            f"+300 readers (768 waiters max): {blocked2} blocked, {eagain2} EAGAIN, "
            f"{other2} other ends",
            f"daemon CPU over 10 s (tick {1000 // CLK_TCK} ms): idle {idle_cpu:.2f} %, "
            f"500 blocked {busy_cpu:.2f} %",
            f"peer: cat /etc/passwd as 65534 (n={CAT_RUNS}): {cat(floor_cat)}",
            f"cat info as uid 65534, no readers  (n={CAT_RUNS}): {cat(idle_cat)}",
            f"cat info as uid 65534, 500 blocked (n={CAT_RUNS}): {cat(busy_cat)}",
            f"cat info as uid 65534, 768 waiting (n=20): {cat(full_cat)}",
            f"ratio 500 blocked / none: median {busy_cat[0] / idle_cat[0]:.2f}, "
            f"768 waiting / none: {full_cat[0] / idle_cat[0]:.2f}",
            f"SIGKILL of all 800 readers: reaped in {killed:.2f} s; daemon alive "
            f"{'yes' if alive else 'NO'}"]
    return out


# ------------------------------------------------------------------ 3. signal latency

CHILD = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)        # as cat(1) has it
kind, path, req = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
def ready():
    sys.stdout.write("ready\n"); sys.stdout.flush()
if kind == "read":
    fd = os.open(path, os.O_RDWR); os.write(fd, req); ready(); os.read(fd, 1 << 16)
elif kind == "write":
    fd = os.open(path, os.O_WRONLY); ready(); os.write(fd, req)
elif kind == "fifo":
    fd = os.open(path, os.O_RDWR); ready(); os.read(fd, 1)
else:
    ready(); os.open(path, os.O_RDONLY)
print("returned"); sys.exit(3)
"""


def one_trial(kind: str, path: str, sig: int, expect: str) -> tuple[float | None, str]:
    """Seconds from kill(2) to the child's exit; None and why if it went wrong."""
    proc = subprocess.Popen([PY, "-S", "-c", CHILD, kind, path, read4k().hex()],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if not select.select([proc.stdout], [], [], 10)[0] or proc.stdout.readline() != "ready\n":
            proc.kill()
            return None, "no ready: " + proc.communicate(timeout=30)[1].strip()[-120:]
        deadline = time.monotonic() + 10
        while (where := wchan(proc.pid)) != expect or state(proc.pid) != "S":
            if proc.poll() is not None or time.monotonic() > deadline:
                return None, f"not blocked ({where}, rc {proc.poll()})"
            time.sleep(0.005)
        time.sleep(0.02)
        pidfd = os.pidfd_open(proc.pid)
        try:
            start = time.perf_counter()
            os.kill(proc.pid, sig)
            ended = select.select([pidfd], [], [], 10)[0]
            took = time.perf_counter() - start
        finally:
            os.close(pidfd)
        if not ended:
            return None, "still blocked 10 s after the signal"
        proc.wait(timeout=5)
        if proc.returncode != -sig:
            return None, f"exit {proc.returncode}"
        return took, where
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def part3() -> list[str]:
    sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    results: dict[str, dict[int, list[float]]] = {}
    problems: list[str] = []
    with mounted_sim("sim:io_latency=600000", "--passthru", "all") as m:
        # Validation reads the effects log once (per Identify generation): do it now,
        # before Get Log Page is delayed, so a write waits for its own command only.
        fd = os.open(m.path("passthru", "admin"), os.O_RDWR)
        try:
            os.write(fd, encode_request(0x06, cdw10=1, data_len=4096))
            drain(fd, 16 + 4096, timeout=10)
        finally:
            os.close(fd)
        with open(m.path("faults"), "w") as f:
            f.write("delay:admin:0x02:*:600\ndelay:admin:0x0a:*:600\n")
        feature = m.path("features", "arbitration")
        assert os.path.exists(feature), os.listdir(m.path("features"))
        fifo_dir = tempfile.mkdtemp(prefix="nvmefs-fifo-")
        fifo = os.path.join(fifo_dir, "fifo")
        os.mkfifo(fifo)
        cases = [("mailbox read (O_RDWR)", "read", m.path("passthru", "io"), FUSE_WAIT),
                 ("write on O_WRONLY", "write", m.path("passthru", "io"), FUSE_WAIT),
                 ("open log/smart", "open", m.path("log", "smart"), FUSE_WAIT),
                 ("open features/arbitration", "open", feature, FUSE_WAIT),
                 ("peer: read of empty FIFO", "fifo", fifo, "")]
        try:
            for name, kind, path, expect in cases:
                results[name] = {}
                for sig in sigs:
                    progress(f"{name} {sig.name}")
                    got = []
                    for _ in range(REPS):
                        took, why = one_trial(kind, path, sig, expect or _fifo_wchan())
                        if took is None:
                            problems.append(f"{name} {sig.name}: {why}")
                        else:
                            got.append(took)
                    results[name][sig] = got
            alive = m.alive()
        finally:
            os.unlink(fifo)
            os.rmdir(fifo_dir)
    out = [f"== 3. signal -> child reaped, ms: median (max) of {REPS}; "
           f"daemon alive after: {'yes' if alive else 'NO'}",
           f"{'blocked in':<28}" + "".join(f"{s.name:>18}" for s in sigs) + f"{'x FIFO (med)':>14}"]
    floor = {s: statistics.median(results[cases[-1][0]][s] or [float('nan')]) for s in sigs}
    for name, *_ in cases:
        cells, ratios = [], []
        for s in sigs:
            v = results[name][s]
            if v:
                cells.append(f"{statistics.median(v) * 1e3:8.2f} ({max(v) * 1e3:6.2f})")
                ratios.append(statistics.median(v) / floor[s])
            else:
                cells.append(f"{'-':>17}")
        ratio = f"{statistics.median(ratios):.1f}" if ratios else "-"
        out.append(f"{name:<28}" + "".join(f"{c:>18}" for c in cells) + f"{ratio:>14}")
    for p in sorted(set(problems))[:8]:
        out.append(f"   problem: {p} (x{problems.count(p)})")
    return out


_FIFO_WCHAN: list[str] = []


def _fifo_wchan() -> str:
    """The wchan of a reader of an empty FIFO on this kernel (pipe_read, anon_pipe_read...)."""
    if not _FIFO_WCHAN:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            try:
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        try:
            deadline = time.monotonic() + 5
            where = wchan(pid)
            while "pipe" not in where and time.monotonic() < deadline:
                time.sleep(0.005)
                where = wchan(pid)
            _FIFO_WCHAN.append(where)
        finally:
            os.close(w)
            os.waitpid(pid, 0)
    return _FIFO_WCHAN[0]


def progress(text: str) -> None:
    print(f"[hardening] {text}", file=sys.stderr, flush=True)


def main(parts: list[str] | None = None) -> None:
    """Parts "1", "2", "3" (default: all)."""
    if os.geteuid() != 0:
        print("bench/hardening.py needs root (setpriv, --allow-other); skipped")
        return
    start = time.monotonic()
    lines = []
    for part, fn in (("1", part1), ("2", part2), ("3", part3)):
        if not parts or part in parts:
            lines += fn()
    print("\n".join(lines))
    print(f"(took {time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
