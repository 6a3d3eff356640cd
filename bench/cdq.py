"""Controller Data Queues (cdq/) through a real mount of the sim, against the kernel's floor.

Every figure is taken on `nvmefs mount --passthru all MNT sim:size=1G`, a User Data
Migration Queue of 1 << 20 entries (`create bench entries=1048576`, `track` started;
each run has a fresh queue, whose first entry is the ESA "first" one).

1. Entries per second from the sim to one reader, nothing lost (info `lost` 0,
   entries read == posted == produced, each entry's NSID, NLB, SLBA and attributes
   checked in order against what was produced). Producer: a process writing binary
   Dataset Management requests (deallocate, 256 non-adjacent ranges: 256 entries
   each) to passthru/io, 64 per write, two writes in flight, every CQE checked,
   never more than 524,288 entries ahead of the reader (it reads the queue's info
   `read` when near that: unthrottled, it outruns the JSON reader, whose reads the
   daemon serves in turn with the producer's writes, and the ring overflows).
   Reader: a process reading `entries` in reads of 1 MiB (target >= 1,000,000
   entries/s) or `entries.jsonl` (target >= 200,000 entries/s).
   a) concurrent: the reader waits in read() while the producer runs; entries/s
      from the producer's first write to the reader's last read, with the
      producer's commands/s and the daemon's CPU share (/proc/PID/stat).
   b) backlog: the producer fills the queue first (about 1M entries), then the
      reader drains it: the stream alone, without the sim's producing (raw: the
      run of median rate of 3, marked backlog*3).
   Peers, same run: the same entries (same bytes, same reader and checks) through
   a pipe (F_SETPIPE_SZ 1 MiB, 1 MiB writes): ratio nvmefs / pipe. For JSON lines:
   json.dumps of the decoded entries (dicts made beforehand) in this process, the
   decode cost floor, and nvmefs.spec.cdq.jsonl of the same bytes in-process (the
   daemon's rendering without FUSE).
2. Lag from a Write's completion to a readable entry: a reader process blocked in
   read() of `entries` (its wchan is FUSE's request_wait_answer); this process
   writes one binary Write (1 block) on a write-only open of passthru/io.lag (the
   write returns once the command completed). Figures over 500 samples: median
   and p99 of (read returned - write returned), target p99 <= 5 ms; of (read
   returned - just before the write syscall); and of the write itself. Peer: the
   same ping-pong through a pipe (32 bytes written, blocked reader wakes).
3. Part 1's raw flows (a and b) on `vfio:sim:size=1G` (the vfio driver over its
   register model).

Run: .venv/bin/python bench/cdq.py (or bench/run.py cdq). Processes are started
with stdin=/dev/null and every wait has a timeout; every mount is unmounted on the
way out (nvmefs umount, fusermount3 -u -z, then umount -l), and a watchdog kills a
daemon still mounted after 240 s, so that nothing waits on it for ever.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hardening  # noqa: E402  (mounts, the daemon's pid and CPU, wchan)

from nvmefs.spec import cdq as Q  # noqa: E402
from nvmefs.spec.passthru import encode_request  # noqa: E402

SIM = "sim:size=1G"
VFIO = "vfio:sim:size=1G"
QUEUE = "bench"
QUEUE_ENTRIES = 1 << 20
NS_BLOCKS = 1 << 21                 # the 1 GiB namespace in 512-byte blocks
RANGES = 256                        # per Dataset Management: CDW10 NR = 255
BATCH = 64                          # requests per write
DEPTH = 2                           # writes in flight
STREAM_DSMS = 8192                  # 2,097,152 entries a concurrent run
BACKLOG_DSMS = 63 * BATCH           # 1,032,192 entries: fits the ring (1 << 20, one kept free)
BACKLOG_REPS = 3                    # raw drains (and their pipe peer) last ~0.05 s: median of 3
VFIO_DSMS = 4096
READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
LAG_SAMPLES = 500
LAG_WARMUP = 20
JSON_PEER_ENTRIES = 1 << 18
AHEAD = QUEUE_ENTRIES // 2          # the most entries a producer lets be unread
MOUNT_LIMIT = 240.0                 # seconds a mount may stay up (else its daemon is killed)
TARGETS = {"raw": 1_000_000, "jsonl": 200_000, "lag_p99_ms": 5.0}

# The expected stream: DSM entry k (0-based over a run) is NSID 1, NLB 0 (one block),
# SLBA 2k mod NS_BLOCKS (a gap of one block between ranges: no two are adjacent).
PERIOD = NS_BLOCKS // 2             # entries until SLBAs repeat
ENTRY = struct.Struct("<IIQ15xB")
RANGE = struct.Struct("<IIQ")       # context attributes, NLB (1's based), SLBA
MAX_CHUNK = READ_SIZE // Q.ENTRY_SIZE
DLBA_ATTRS = Q.DLBA_BIT             # ESA 0, DLBA, LBACIA 0, phase masked off
NO_PHASE = bytes(b & ~Q.PHASE_MASK & 0xFF for b in range(256))
SLBA_RE = re.compile(rb'"slba":(\d+)')


def expected_slbas() -> array.array:
    return array.array("Q", [(2 * k) % NS_BLOCKS for k in range(PERIOD + MAX_CHUNK)])


def dsm_batch(b: int) -> bytes:
    """Write b of a producer: BATCH Dataset Management deallocates of RANGES ranges each."""
    out = []
    for i in range(b * BATCH, (b + 1) * BATCH):
        out.append(encode_request(0x09, cid=i & 0xFFFF, nsid=1, cdw10=RANGES - 1, cdw11=0x4,
                                  data_len=RANGES * RANGE.size))
        out.append(b"".join(RANGE.pack(0, 1, (2 * (i * RANGES + j)) % NS_BLOCKS)
                            for j in range(RANGES)))
    return b"".join(out)


def write_request(i: int) -> bytes:
    """A Write of one 512-byte block at LBA 8i, its data following."""
    slba = (8 * i) % NS_BLOCKS
    return encode_request(0x01, cid=i & 0xFFFF, nsid=1, cdw10=slba, cdw12=0,
                          data_len=512) + bytes([i & 0xFF]) * 512


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def progress(text: str) -> None:
    print(f"[cdq] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ children

class RawCheck:
    """The raw stream, checked in order at memcmp speed: the ESA "first" entry, then
    DSM entries k = 0, 1, ... with NSID 1, NLB 0, SLBA 2k, ESA 0 and DLBA set."""

    def __init__(self) -> None:
        self.expect = expected_slbas().tobytes()
        self.nsid1 = struct.pack("<I", 1) * MAX_CHUNK
        self.zero = bytes(4 * MAX_CHUNK)
        self.attrs = bytes([DLBA_ATTRS]) * MAX_CHUNK
        self.first = False
        self.k = 0                      # DSM entries seen
        self.last_slba = -1
        self.errors: list[str] = []

    def error(self, what: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(f"at entry {self.k}: {what}")

    def feed(self, data: bytes) -> None:
        if len(data) % Q.ENTRY_SIZE:
            self.error(f"a read of {len(data)} bytes (not whole entries)")
            return
        mv = memoryview(data)
        if not self.first and data:
            nsid, nlb, slba, attrs = ENTRY.unpack_from(data)
            if attrs >> Q.ESA_SHIFT & 7 != Q.ESA_FIRST:
                self.error(f"first entry {(nsid, nlb, slba, attrs)} is not ESA first")
            self.first = True
            mv = mv[Q.ENTRY_SIZE:]
        n = len(mv) // Q.ENTRY_SIZE
        if not n:
            return
        words = mv.cast("I")
        if words[0::8].tobytes() != self.nsid1[:4 * n]:
            self.error("NSID is not 1")
        if words[1::8].tobytes() != self.zero[:4 * n]:
            self.error("NLB is not 0")
        off = self.k % PERIOD
        if mv.cast("Q")[1::4].tobytes() != self.expect[8 * off:8 * (off + n)]:
            self.error("SLBAs out of order or missing")
        if mv[31::32].tobytes().translate(NO_PHASE) != self.attrs[:n]:
            self.error("attributes not ESA 0 + DLBA (a full marker?)")
        self.last_slba = struct.unpack_from("<Q", mv, (n - 1) * Q.ENTRY_SIZE + 8)[0]
        self.k += n


class JsonlCheck:
    """entries.jsonl, checked in order: whole lines per read, the first line ESA
    first, then NSID 1 and DLBA 1 on every line and every SLBA in order."""

    def __init__(self) -> None:
        self.expect = expected_slbas()
        self.first = False
        self.k = 0
        self.last_slba = -1
        self.errors: list[str] = []

    error = RawCheck.error

    def feed(self, data: bytes) -> None:
        if data and not data.endswith(b"\n"):
            self.error("a read ends inside a line")
        if not self.first and data:
            line, _, data = data.partition(b"\n")
            if json.loads(line).get("event") != "first":
                self.error(f"first line {line[:120]!r}")
            self.first = True
        n = data.count(b"\n")
        if not n:
            return
        if data.count(b'{"nsid":1,"') != n or data.count(b'"dlba":1,') != n:
            self.error("NSID or DLBA wrong")
        off = self.k % PERIOD
        if list(map(int, SLBA_RE.findall(data))) != self.expect[off:off + n].tolist():
            self.error("SLBAs out of order or missing")
        self.last_slba = json.loads(data[data.rfind(b"\n", 0, -1) + 1:])["slba"]
        self.k += n


def child_reader(path: str, expected: str, mode: str) -> None:
    """Read `expected` entries (the first one + DSM entries) of `path` (a file, or
    fd:N), then print what was read and when (perf_counter: CLOCK_MONOTONIC)."""
    want = int(expected)
    check = JsonlCheck() if mode == "jsonl" else RawCheck()
    fd = int(path[3:]) if path.startswith("fd:") else os.open(path, os.O_RDONLY)
    print("ready", flush=True)
    reads = got = 0
    t_start = time.perf_counter()
    t_first = None
    while check.k + check.first < want:
        data = os.read(fd, READ_SIZE)
        if not data:
            break
        if t_first is None:
            t_first = time.perf_counter()
        reads += 1
        got += len(data)
        check.feed(data)
    t_last = time.perf_counter()
    cpu = os.times()
    print(json.dumps(dict(entries=check.k + check.first, bytes=got, reads=reads,
                          t_start=t_start, t_first=t_first, t_last=t_last,
                          last_slba=check.last_slba, errors=check.errors,
                          cpu=cpu.user + cpu.system)), flush=True)


def child_producer(path: str, dsms: str, info_path: str, ahead: str) -> None:
    """Write int(dsms) Dataset Management requests on one session of `path`,
    BATCH a write, DEPTH writes in flight; check every CQE's status. Flow control:
    no write while more than `ahead` entries may be unread (the reader's count taken
    from `info_path`, the queue's info file, only when near that)."""
    total, ahead = int(dsms) // BATCH, int(ahead)
    per_write = BATCH * RANGES
    batches = [dsm_batch(b) for b in range(min(total, PERIOD // per_write))]
    ok_lo, ok_hi = b"\x01" * BATCH, bytes(BATCH)       # status 0, phase tag set
    fd = os.open(path, os.O_RDWR)
    print("ready", flush=True)
    sent = answered = bad = read = looks = pauses = 0
    t_start = time.perf_counter()
    while answered < total:
        while sent < total and sent - answered < DEPTH:
            if (sent + 1) * per_write - read > ahead:
                looks += 1
                read = queue_read(info_path)
                while (sent + 1) * per_write - read > ahead:
                    pauses += 1
                    time.sleep(0.0005)
                    read = queue_read(info_path)
            view = memoryview(batches[sent % len(batches)])
            while view:
                view = view[os.write(fd, view):]
            sent += 1
        need, ans = 16 * BATCH, b""
        while len(ans) < need:
            chunk = os.read(fd, need - len(ans))
            if not chunk:
                raise SystemExit(f"end of file after {answered} writes answered")
            ans += chunk
        if ans[14::16] != ok_lo or ans[15::16] != ok_hi:
            bad += sum(1 for o in range(0, need, 16) if ans[o + 14:o + 16] != b"\x01\x00")
        answered += 1
    t_end = time.perf_counter()
    cpu = os.times()
    print(json.dumps(dict(commands=total * BATCH, bad=bad, t_start=t_start, t_end=t_end,
                          cpu=cpu.user + cpu.system, looks=looks, pauses=pauses)), flush=True)


def queue_read(info_path: str) -> int:
    """Entries the queue's readers took (its info file's `read`)."""
    with open(info_path, "rb") as f:
        text = f.read()
    at = text.index(b"\nread: ") + 7
    return int(text[at:text.index(b"\n", at)])


def child_pipe_writer(fd: str, dsms: str) -> None:
    """The peer's producer: the same entries (the first one, then the DSM entries)
    into a pipe in writes of READ_SIZE bytes."""
    out, n = int(fd), int(dsms) * RANGES
    slbas = expected_slbas()
    period = b"".join(ENTRY.pack(1, 0, slbas[k], DLBA_ATTRS | 1) for k in range(PERIOD))
    first = Q.Entry(esa=Q.ESA_FIRST, lbacia=Q.LBACIA_NONE).encode(1)
    stream = memoryview(first + period * (n // PERIOD) + period[:(n % PERIOD) * Q.ENTRY_SIZE])
    print("ready", flush=True)
    t_start = time.perf_counter()
    for off in range(0, len(stream), READ_SIZE):
        chunk = stream[off:off + READ_SIZE]
        while chunk:
            chunk = chunk[os.write(out, chunk):]
    t_end = time.perf_counter()
    os.close(out)
    print(json.dumps(dict(commands=0, bad=0, t_start=t_start, t_end=t_end, cpu=0.0, looks=0,
                          pauses=0)), flush=True)


def child_lag_reader(path: str, samples: str) -> None:
    """Blocked in read(); after each read: the time it returned and the entry."""
    fd = int(path[3:]) if path.startswith("fd:") else os.open(path, os.O_RDONLY)
    print("ready", flush=True)
    for _ in range(int(samples)):
        data = os.read(fd, READ_SIZE)
        t = time.perf_counter()
        if len(data) == Q.ENTRY_SIZE:
            nsid, nlb, slba, attrs = ENTRY.unpack(data)
        else:
            nsid = nlb = slba = attrs = -1
        print(f"{t!r} {len(data)} {nsid} {nlb} {slba} {attrs}", flush=True)


CHILDREN = {"reader": child_reader, "producer": child_producer,
            "pipe-writer": child_pipe_writer, "lag-reader": child_lag_reader}


# ------------------------------------------------------------------ processes

class Child:
    """A child process of this file (`--child ROLE ARGS`), its stdout read by line."""

    def __init__(self, role: str, *args: str, pass_fds: tuple[int, ...] = ()):
        self.role = role
        self.proc = subprocess.Popen([hardening.PY, __file__, "--child", role, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=pass_fds)
        self.buf = b""

    def line(self, timeout: float) -> str:
        """The next line the child printed (its own buffer: select sees the pipe only)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"{self.role}: no line in {timeout} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
                raise RuntimeError(f"{self.role} ended (rc {self.proc.returncode}): "
                                   + self.proc.stderr.read().decode(errors="replace")[-1500:])
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode() + "\n"

    def ready(self, timeout: float = 60) -> None:
        line = self.line(timeout)
        if line != "ready\n":
            raise RuntimeError(f"{self.role}: {line!r}")

    def result(self, timeout: float) -> dict:
        return json.loads(self.line(timeout))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def children():
    """Started children, killed (by pid) on the way out whatever happened."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for c in started:
            c.kill()


def kill_daemon(pid: int) -> None:
    """The watchdog: a daemon still mounted after MOUNT_LIMIT s is killed (by its pid), so
    that whatever waits on the mount fails (ENOTCONN) instead of hanging."""
    print(f"note: mount still up after {MOUNT_LIMIT} s: SIGKILL to daemon {pid}",
          file=sys.stderr, flush=True)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def mounted(device: str):
    """hardening's mount (nvmefs umount, then fusermount3 -u -z, then the daemon ended by
    its pid), checked afterwards: fusermount3 -u, then umount -l if it is still there.
    A watchdog kills the daemon if the mount is still up after MOUNT_LIMIT s."""
    where = None
    try:
        with hardening.mounted_sim(device, "--passthru", "all") as m:
            where = m.mnt
            watchdog = threading.Timer(MOUNT_LIMIT, kill_daemon, (m.pid,))
            watchdog.daemon = True
            watchdog.start()
            try:
                yield m
            finally:
                watchdog.cancel()
    finally:
        for cmd in (["fusermount3", "-u"], ["umount", "-l"]):
            if where and hardening.mounted(where):
                try:
                    hardening.run([*cmd, where], timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    pass


# ------------------------------------------------------------------ queues

def info(m: hardening.Mount) -> dict[str, str]:
    text = Path(m.path("cdq", QUEUE, "info")).read_text()
    return dict(line.split(": ", 1) for line in text.splitlines())


def fresh_queue(m: hardening.Mount) -> None:
    """A new, empty queue QUEUE, logging."""
    if os.path.isdir(m.path("cdq", QUEUE)):
        os.rmdir(m.path("cdq", QUEUE))
    with open(m.path("cdq", "ctl"), "w") as f:
        f.write(f"create {QUEUE} entries={QUEUE_ENTRIES}\n")
    with open(m.path("cdq", QUEUE, "track"), "w") as f:
        f.write("start\n")


def drop_queue(m: hardening.Mount) -> None:
    if os.path.isdir(m.path("cdq", QUEUE)):
        os.rmdir(m.path("cdq", QUEUE))


# ------------------------------------------------------------------ 1. entries per second

def check_run(what: str, got: dict, expected: int, queue: dict | None) -> list[str]:
    """What went wrong in a run: counts, the last SLBA, the reader's checks, loss."""
    problems = [f"{what}: {e}" for e in got["errors"]]
    if got["entries"] != expected:
        problems.append(f"{what}: read {got['entries']} entries, produced {expected}")
    last = (2 * (expected - 2)) % NS_BLOCKS
    if got["last_slba"] != last:
        problems.append(f"{what}: last SLBA {got['last_slba']}, expected {last}")
    if queue is not None:
        if queue["lost"] != "0" or queue["posted"] != str(expected) \
                or queue["read"] != str(expected) or queue["full_markers"] != "0":
            problems.append(f"{what}: info lost={queue['lost']} posted={queue['posted']} "
                            f"read={queue['read']} full_markers={queue['full_markers']}")
    return problems


def stream_run(m: hardening.Mount, mode: str, dsms: int, backlog: bool) -> dict:
    """One run of part 1 on mount m: the figures, and problems (empty if all is well)."""
    fresh_queue(m)
    expected = dsms * RANGES + 1
    name = "entries.jsonl" if mode == "jsonl" else "entries"
    timeout = 60 + dsms * RANGES / 50_000
    with children() as kids:
        producer = Child("producer", m.path("passthru", "io"), str(dsms),
                         m.path("cdq", QUEUE, "info"), str(QUEUE_ENTRIES if backlog else AHEAD))
        kids.append(producer)
        producer.ready()
        reader = None
        if not backlog:
            reader = Child("reader", m.path("cdq", QUEUE, name), str(expected), mode)
            kids.append(reader)
            reader.ready()
        cpu0 = hardening.cpu_seconds(m.pid)
        made = producer.result(timeout)
        if backlog:
            cpu0 = hardening.cpu_seconds(m.pid)
            reader = Child("reader", m.path("cdq", QUEUE, name), str(expected), mode)
            kids.append(reader)
            reader.ready()
        try:
            got = reader.result(60)
        except TimeoutError:
            queue = info(m)
            drop_queue(m)
            return dict(entries=expected - 1, seconds=float("nan"), rate=float("nan"),
                        cmds=float("nan"), daemon=float("nan"), daemon_cpu=float("nan"),
                        reader_cpu=float("nan"), producer_cpu=made["cpu"], reads=0, bytes=0,
                        looks=made["looks"], pauses=made["pauses"],
                        problems=[f"{mode} reader still waiting 60 s after the producer ended: "
                                  f"info posted={queue['posted']} read={queue['read']} "
                                  f"lost={queue['lost']}"])
        cpu = hardening.cpu_seconds(m.pid) - cpu0
    queue = info(m)
    drop_queue(m)
    start = got["t_start"] if backlog else made["t_start"]
    seconds = got["t_last"] - start
    problems = check_run(f"{mode} {'backlog' if backlog else 'concurrent'}", got, expected, queue)
    if made["bad"]:
        problems.append(f"{made['bad']} DSM answers with a non-zero status")
    return dict(entries=expected - 1, seconds=seconds, rate=(expected - 1) / seconds,
                cmds=made["commands"] / (made["t_end"] - made["t_start"]),
                daemon=cpu / seconds, daemon_cpu=cpu, reader_cpu=got["cpu"],
                producer_cpu=made["cpu"], reads=got["reads"], bytes=got["bytes"],
                looks=made["looks"], pauses=made["pauses"], problems=problems)


def pipe_run(mode: str, dsms: int) -> dict:
    """The peer: the same entries through a pipe to the same reader (raw)."""
    expected = dsms * RANGES + 1
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        with children() as kids:
            reader = Child("reader", f"fd:{r}", str(expected), mode, pass_fds=(r,))
            kids.append(reader)
            writer = Child("pipe-writer", str(w), str(dsms), pass_fds=(w,))
            kids.append(writer)
            os.close(w)
            os.close(r)
            r = w = -1
            reader.ready()
            writer.ready(120)
            made = writer.result(120)
            got = reader.result(60)
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    seconds = got["t_last"] - made["t_start"]
    return dict(entries=expected - 1, seconds=seconds, rate=(expected - 1) / seconds,
                reader_cpu=got["cpu"], problems=check_run(f"pipe {mode}", got, expected, None))


def json_peers(n: int = JSON_PEER_ENTRIES) -> dict[str, float]:
    """Entries/s of json.dumps of decoded entries (dicts made beforehand) and of
    nvmefs's own jsonl() on the same raw bytes, in this process."""
    slbas = expected_slbas()
    raw = b"".join(ENTRY.pack(1, 0, slbas[k], DLBA_ATTRS | 1) for k in range(n))
    pool = [Q.decode_entry(raw[32 * k:32 * k + 32]) for k in range(8192)]
    start = time.perf_counter()
    dumps = json.dumps
    text = "\n".join([dumps(pool[k & 8191], separators=(",", ":")) for k in range(n)]).encode()
    t_dumps = time.perf_counter() - start
    start = time.perf_counter()
    for off in range(0, len(raw), 8192 * 32):         # as the daemon: 8192 entries a read
        Q.jsonl(raw[off:off + 8192 * 32])
    t_jsonl = time.perf_counter() - start
    assert text
    return {"json.dumps": n / t_dumps, "spec.cdq.jsonl": n / t_jsonl}


def median_run(runs: list[dict]) -> dict:
    """The run of median rate, with every run's problems and how many runs there were."""
    ordered = sorted(runs, key=lambda r: r["rate"] if r["rate"] == r["rate"] else -1.0)
    out = dict(ordered[len(ordered) // 2])
    out["problems"] = [p for r in runs for p in r["problems"]]
    out["runs"] = len(runs)
    return out


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def part1(device: str = SIM, modes: tuple[str, ...] = ("raw", "jsonl"),
          dsms: int = STREAM_DSMS, peers: bool = True) -> list[str]:
    out = [f"== {'1' if device == SIM else '3'}. entries streamed to one reader, {device}: "
           f"DSM deallocate x {RANGES} ranges, {BATCH} per write; queue of {QUEUE_ENTRIES} "
           f"entries; entries/s (target), peer, ratio"]
    problems: list[str] = []
    runs: dict[tuple[str, bool], dict] = {}
    with mounted(device) as m:
        for mode in modes:
            for backlog in (False, True):
                progress(f"{device} {mode} {'backlog' if backlog else 'concurrent'}")
                reps = BACKLOG_REPS if backlog and mode == "raw" else 1
                r = median_run([stream_run(m, mode, BACKLOG_DSMS if backlog else dsms, backlog)
                                for _ in range(reps)])
                runs[(mode, backlog)] = r
                problems += r["problems"]
        alive = m.alive()
    pipe: dict[int, dict] = {}
    if peers and "raw" in modes:
        for n in sorted({dsms, BACKLOG_DSMS}):
            progress(f"pipe peer, {n * RANGES} entries")
            pipe[n] = median_run([pipe_run("raw", n)
                                  for _ in range(BACKLOG_REPS if n == BACKLOG_DSMS else 1)])
            problems += pipe[n]["problems"]
    jpeers = json_peers() if peers and "jsonl" in modes else {}
    for (mode, backlog), r in runs.items():
        what = f"{mode:<5} {'backlog' if backlog else 'concurrent':<10}"
        if r["runs"] > 1:
            what = f"{mode:<5} backlog*{r['runs']}"
        line = (f"{what} {r['entries']:>9,} entries in {r['seconds']:6.2f} s: "
                f"{fmt_rate(r['rate']):>10} entries/s (target >= {TARGETS[mode]:,})")
        if mode == "raw" and pipe:
            p = pipe[BACKLOG_DSMS if backlog else dsms]
            line += f"; pipe {fmt_rate(p['rate'])} entries/s, nvmefs/pipe {r['rate'] / p['rate']:.3f}"
        if mode == "jsonl" and jpeers:
            line += "; " + ", ".join(f"{k} {fmt_rate(v)} entries/s, nvmefs/{k} {r['rate'] / v:.2f}"
                                     for k, v in jpeers.items())
        out.append(line)
        out.append(f"{'':<17}producer {fmt_rate(r['cmds'])} DSM cmd/s ({r['looks']} looks at info, "
                   f"{r['pauses']} pauses of 0.5 ms); daemon CPU "
                   f"{100 * r['daemon']:.0f} % of a core ({r['daemon_cpu'] * 1e6 / r['entries']:.2f}"
                   f" µs/entry); reader CPU {r['reader_cpu']:.2f} s, {r['reads']} reads of "
                   f"{r['bytes'] / max(r['reads'], 1) / 1024:.0f} KiB on average")
    if jpeers:
        out.append(f"{'':<17}(JSON peers in-process over {JSON_PEER_ENTRIES:,} entries: "
                   + ", ".join(f"{k} {fmt_rate(v)}/s" for k, v in jpeers.items()) + ")")
    out.append(f"checks: every entry in order, info lost 0, read == posted == produced: "
               f"{'ok' if not problems else 'FAILED'}; daemon alive {'yes' if alive else 'NO'}")
    out += [f"   problem: {p}" for p in problems[:10]]
    return out


# ------------------------------------------------------------------ 2. lag

def wait_blocked(pid: int, where: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while hardening.wchan(pid) != where or hardening.state(pid) != "S":
        if time.monotonic() > deadline:
            raise TimeoutError(f"reader {pid} not blocked in {where} "
                               f"({hardening.wchan(pid)}, {hardening.state(pid)})")
        time.sleep(0.0002)


def ping_pong(reader: Child, where: str, send, samples: int) -> tuple[list, list, list, list]:
    """(after, before, write, problems): read returned - write returned, read returned -
    just before write(2), the write's own time (s), per sample after warm-up."""
    after, before, writes, problems = [], [], [], []
    for i in range(samples + LAG_WARMUP):
        wait_blocked(reader.proc.pid, where)
        time.sleep(0.002)               # the daemon has taken the read and armed the trigger
        write = send(i)
        t0 = time.perf_counter()
        write()
        t1 = time.perf_counter()
        t, n, nsid, nlb, slba, attrs = reader.line(10).split()
        if int(n) != Q.ENTRY_SIZE or int(slba) != (8 * i) % NS_BLOCKS or int(nsid) != 1 \
                or int(nlb) != 0 or int(attrs) & 0xFE:
            problems.append(f"sample {i}: read {n} B nsid {nsid} nlb {nlb} slba {slba} "
                            f"attrs {attrs}")
        if i >= LAG_WARMUP:
            after.append(float(t) - t1)
            before.append(float(t) - t0)
            writes.append(t1 - t0)
    return after, before, writes, problems


def lag_nvmefs(samples: int) -> tuple[list, list, list, list]:
    with mounted(SIM) as m, children() as kids:
        fresh_queue(m)
        reader = Child("lag-reader", m.path("cdq", QUEUE, "entries"), str(samples + LAG_WARMUP + 1))
        kids.append(reader)
        reader.ready()
        reader.line(10)                 # the ESA "first" entry
        fd = os.open(m.path("passthru", "io.lag"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            def send(i: int):
                req = write_request(i)
                return lambda: os.write(fd, req)
            result = ping_pong(reader, hardening.FUSE_WAIT, send, samples)
        finally:
            os.close(fd)
        queue = info(m)
        if queue["lost"] != "0":
            result[3].append(f"info lost={queue['lost']}")
    return result


def lag_pipe(samples: int) -> tuple[list, list, list, list]:
    r, w = os.pipe()
    with children() as kids:
        try:
            reader = Child("lag-reader", f"fd:{r}", str(samples + LAG_WARMUP), pass_fds=(r,))
            kids.append(reader)
            os.close(r)
            reader.ready()

            def send(i: int):
                entry = ENTRY.pack(1, 0, (8 * i) % NS_BLOCKS, 1)
                return lambda: os.write(w, entry)
            return ping_pong(reader, hardening._fifo_wchan(), send, samples)
        finally:
            os.close(w)


def part2(samples: int = LAG_SAMPLES) -> list[str]:
    progress("lag: nvmefs")
    mine = lag_nvmefs(samples)
    progress("lag: pipe")
    peer = lag_pipe(samples)

    def row(name: str, values: list[float], floor: list[float] | None, target: str = "") -> str:
        med, p99 = statistics.median(values) * 1e3, quantile(values, 0.99) * 1e3
        line = f"  {name:<44}{med:>9.3f}{p99:>9.3f}{max(values) * 1e3:>9.3f}"
        if floor:
            line += f"{med / (statistics.median(floor) * 1e3):>9.1f}"
        return line + target

    p99 = quantile(mine[0], 0.99) * 1e3
    out = [f"== 2. lag, Write completed -> entry read ({samples} samples, ms; a reader blocked "
           f"in read(2) of cdq/{QUEUE}/entries)",
           f"  {'':<44}{'median':>9}{'p99':>9}{'max':>9}{'x pipe':>9}",
           row("read returned - write(io.lag) returned", mine[0], peer[0],
               f"   target p99 <= {TARGETS['lag_p99_ms']} ms: "
               f"{'met' if p99 <= TARGETS['lag_p99_ms'] else 'NOT met'}"),
           row("read returned - just before write(io.lag)", mine[1], peer[1]),
           row("write(io.lag) of one Write itself", mine[2], None),
           row("peer: pipe, read returned - write returned", peer[0], None),
           row("peer: pipe, read returned - before write", peer[1], None)]
    early = sum(1 for v in mine[0] if v < 0)
    out.append(f"  reads that returned before the write did: {early} of {samples}; "
               f"checks: {'ok' if not mine[3] + peer[3] else 'FAILED'}")
    out += [f"   problem: {p}" for p in (mine[3] + peer[3])[:10]]
    return out


# ------------------------------------------------------------------ main

def main(parts: list[str] | None = None) -> None:
    """Parts "1", "2", "3" (default: all)."""
    if os.geteuid() != 0:
        print("bench/cdq.py needs root (FUSE mounts of the sim); skipped")
        return
    start = time.monotonic()
    lines: list[str] = []
    for part, fn in (("1", part1), ("2", part2),
                     ("3", lambda: part1(VFIO, ("raw",), VFIO_DSMS, peers=False))):
        if not parts or part in parts:
            lines += fn()
    print("\n".join(lines))
    print(f"(took {time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        CHILDREN[sys.argv[2]](*sys.argv[3:])
    else:
        main(sys.argv[1:])
