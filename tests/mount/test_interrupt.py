"""Every wait is interruptible, by the caller's signal only, and cheap (DESIGN §5).

A process blocked in a FUSE request cannot even be killed until the daemon
answers, so the daemon acts on FUSE_INTERRUPT: a signal to the reading thread
(whichever thread or process of it reads) ends the read within 1 s, and
nothing else ever does. Readers are small Python children; each check first
sees the child blocked in the kernel's FUSE wait (request_wait_answer).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from .conftest import foreground, wait_for

LATE = 1.0          # seconds: a signalled reader must be gone (or interrupted) sooner

READ_SQE = "encode_request(2, nsid=1, data_len=512)"    # Read LBA 0 of namespace 1

# Each reader prints `waiting <pid> <tid>` from the thread about to block, then a result line.
PRELUDE = f"""
import os, signal, sys, threading
from nvmefs.spec.passthru import encode_request
signal.signal(signal.SIGINT, signal.default_int_handler)
path = sys.argv[1]
def waiting():
    print('waiting', os.getpid(), threading.get_native_id(), flush=True)
def submit(fd):
    os.write(fd, {READ_SQE})
def report(what, call):
    try:
        result = call()
        print(what, *([] if result is None else [result]), flush=True)
    except KeyboardInterrupt:
        print('interrupted', flush=True)
    except OSError as e:
        print('errno', e.errno, flush=True)
"""

MAILBOX_READER = PRELUDE + """
fd = os.open(path, os.O_RDWR)
submit(fd)
waiting()
report('read', lambda: len(os.read(fd, 16)))
"""

# a write-only open's write returns once its requests are answered
WRITE_ONLY_WRITER = PRELUDE + """
fd = os.open(path, os.O_WRONLY)
waiting()
report('written', lambda: submit(fd))
"""

FILE_READER = PRELUDE + """
waiting()
def read_all():
    with open(path, 'rb') as f:
        return len(f.read())
report('read', read_all)
"""

# the main thread opens and submits, another thread reads with libc's read (Python
# would retry an EINTR); SIGUSR1 goes to the reading thread alone
THREAD_READER = PRELUDE + """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGUSR1, lambda *a: None)
fd = os.open(path, os.O_RDWR)
submit(fd)
def read():
    waiting()
    buf = ctypes.create_string_buffer(16)
    n = libc.read(fd, buf, 16)
    print('read', n, 'errno', ctypes.get_errno() if n < 0 else 0, flush=True)
t = threading.Thread(target=read)
t.start()
t.join()
"""

# the opener is a thread that has ended by the time the main thread reads
GONE_OPENER_READER = PRELUDE + """
fds = []
t = threading.Thread(target=lambda: (fds.append(os.open(path, os.O_RDWR)), submit(fds[0])))
t.start()
t.join()
waiting()
report('read', lambda: len(os.read(fds[0], 16)))
"""

# the parent opens and submits, a forked child reads the parent's fd; the parent
# waits for the child (and ignores SIGUSR1 sent to it) unless told to exit at once
FORK_READER = PRELUDE + """
signal.signal(signal.SIGUSR1, lambda *a: None)
fd = os.open(path, os.O_RDWR)
submit(fd)
pid = os.fork()
if pid == 0:
    waiting()
    report('read', lambda: len(os.read(fd, 16)))
    os._exit(0)
os.close(fd)
if sys.argv[2:] != ['exit']:
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except InterruptedError:
            pass
"""


class Reader:
    """A reader child: its pid, the pid and thread id that block, its output."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if not select.select([self.proc.stdout], [], [], 30)[0]:
            raise AssertionError("the reader did not start")
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["waiting"], (line, self.proc.communicate(timeout=30))
        self.pid, self.tid = int(line[1]), int(line[2])

    def wait_blocked(self) -> None:
        wait_blocked([self.tid])

    def result(self, timeout: float = 30) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        return (out.strip() or err.strip()[-300:])


def blocked_in_fuse(tid: int) -> bool | None:
    """Whether thread `tid` waits for a FUSE answer; None where the kernel does not
    say (its wchan reads 0 while it runs, and always where wchan is hidden)."""
    try:
        with open(f"/proc/{tid}/wchan") as f:
            where = f.read()
    except OSError:
        return False
    return None if where in ("", "0") else where == "request_wait_answer"


def wait_blocked(tids: list[int], timeout: float = 30) -> None:
    """Until every thread of `tids` waits for a FUSE answer (or, where the kernel never
    tells, a while)."""
    start = time.monotonic()
    told = False
    while True:
        states = [blocked_in_fuse(t) for t in tids]
        told = told or any(s is not None for s in states)
        if all(states):
            return
        if not told and time.monotonic() > start + 2:
            time.sleep(0.5)         # this kernel hides wchan: give the reads time to block
            return
        if time.monotonic() > start + timeout:
            raise AssertionError(f"{states.count(True)} of {len(tids)} readers blocked in FUSE")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def signal_and_time(reader: Reader, sig: int) -> float:
    """Seconds from the signal until the reader's process is gone."""
    reader.wait_blocked()
    sent = time.monotonic()
    os.kill(reader.pid, sig)
    if reader.pid == reader.proc.pid:
        reader.proc.wait(timeout=10)
    else:
        wait_for(lambda: gone(reader.pid), 10, "the reader to end")
    return time.monotonic() - sent


def expect_interrupted(reader: Reader, sig: int, elapsed: float) -> None:
    assert elapsed < LATE, f"{signal.Signals(sig).name}: the reader took {elapsed:.2f} s"
    out = reader.result()
    if sig == signal.SIGINT:
        assert out == "interrupted", out
    else:
        assert reader.proc.returncode == -sig or reader.pid != reader.proc.pid, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_ends_a_blocked_mailbox_read(mnt, sig):
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")):
        reader = Reader(MAILBOX_READER, str(mnt / "nvme0/passthru/io"))
        expect_interrupted(reader, sig, signal_and_time(reader, sig))


def test_a_signal_ends_a_write_waiting_for_its_answers(mnt):
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")):
        writer = Reader(WRITE_ONLY_WRITER, str(mnt / "nvme0/passthru/io"))
        expect_interrupted(writer, signal.SIGINT, signal_and_time(writer, signal.SIGINT))


@pytest.mark.parametrize("fault,path", [
    ("delay:admin:0x02:*:60", "log/smart"),                    # Get Log Page
    ("delay:admin:0x0a:*:60", "features/volatile-write-cache"),  # Get Features
])
def test_a_signal_ends_a_blocked_open_of_a_log_or_feature(mnt, fault, path):
    with foreground(mnt, f"sim:fault={fault}"):
        for sig in (signal.SIGINT, signal.SIGKILL):
            reader = Reader(FILE_READER, str(mnt / "nvme0" / path))
            expect_interrupted(reader, sig, signal_and_time(reader, sig))


def test_the_reading_thread_is_interrupted_not_the_opener(mnt):
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")):
        reader = Reader(THREAD_READER, str(mnt / "nvme0/passthru/io"))
        assert reader.tid != reader.pid
        reader.wait_blocked()
        sent = time.monotonic()
        signal_thread(reader, signal.SIGUSR1)
        out = reader.result(timeout=10)
        assert time.monotonic() - sent < LATE
        assert out == "read -1 errno 4", out            # EINTR, in the thread that read


def signal_thread(reader: Reader, sig: int) -> None:
    """tgkill: `sig` to the reader's blocked thread only."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_tgkill = 234 if os.uname().machine == "x86_64" else 131
    assert libc.syscall(SYS_tgkill, reader.pid, reader.tid, sig) == 0, ctypes.get_errno()


def test_a_reader_whose_opener_thread_ended(mnt):
    with foreground(mnt, "sim:io_latency=2000", args=("--passthru", "all")):
        # no signal: it waits the 2 s and gets its answer (no EINTR for a gone opener)
        reader = Reader(GONE_OPENER_READER, str(mnt / "nvme0/passthru/io"))
        reader.wait_blocked()
        assert reader.result() == "read 16"
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")):
        reader = Reader(GONE_OPENER_READER, str(mnt / "nvme0/passthru/io"))
        expect_interrupted(reader, signal.SIGINT, signal_and_time(reader, signal.SIGINT))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_forked_child_reading_its_parents_fd(mnt, sig):
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")):
        # the parent (the opener) has exited: only the child is left to signal
        reader = Reader(FORK_READER, str(mnt / "nvme0/passthru/io"), "exit")
        assert reader.proc.wait(timeout=10) == 0 and reader.pid != reader.proc.pid
        elapsed = signal_and_time(reader, sig)
        assert elapsed < LATE, f"the child took {elapsed:.2f} s"
        if sig == signal.SIGINT:
            assert reader.result() == "interrupted"


def test_no_eintr_without_a_signal(mnt):
    """Waiters get their data through a 3 s delay while others get signals: an
    unrelated process, and the parent that opened the file a child reads."""
    with foreground(mnt, "sim:io_latency=3000,fault=delay:admin:0x02:*:3",
                    args=("--passthru", "all")):
        io = str(mnt / "nvme0/passthru/io")
        readers = [Reader(MAILBOX_READER, io), Reader(GONE_OPENER_READER, io),
                   Reader(FORK_READER, io), Reader(FILE_READER, str(mnt / "nvme0/log/smart"))]
        bystander = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL)
        try:
            for r in readers:
                r.wait_blocked()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                if bystander.poll() is None:
                    bystander.send_signal(sig)
                os.kill(readers[2].proc.pid, signal.SIGUSR1)     # the fork reader's parent
                time.sleep(0.2)
            results = [r.result() for r in readers]
        finally:
            bystander.kill()
            bystander.wait(timeout=10)
        assert results[:3] == ["read 16"] * 3, results
        assert results[3] == "read 512", results
        assert readers[2].proc.returncode == 0


def daemon_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


MANY_READERS = PRELUDE + """
n = int(sys.argv[2])
fds = [os.open(path, os.O_RDWR) for _ in range(n)]
for fd in fds:
    submit(fd)
threads = [threading.Thread(target=os.read, args=(fd, 16), daemon=True) for fd in fds]
for t in threads:
    t.start()
waiting()
threading.Event().wait()
"""


def test_blocked_readers_cost_nothing(mnt):
    """200 readers blocked in the daemon: it uses no CPU, serves others at once, and a
    SIGKILL of the process ends every one of their requests."""
    n = 200
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")) as daemon:
        reader = Reader(MANY_READERS, str(mnt / "nvme0/passthru/io"), str(n))
        tasks = [int(t) for t in os.listdir(f"/proc/{reader.pid}/task") if int(t) != reader.pid]
        assert len(tasks) == n
        wait_blocked(tasks)
        before, start = daemon_cpu_seconds(daemon.pid), time.monotonic()
        info = mnt / "nvme0/info"
        worst = 0.0
        for _ in range(10):
            t = time.monotonic()
            assert info.read_bytes().startswith(b"name: nvme0")
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.2)
        time.sleep(1)
        cpu = (daemon_cpu_seconds(daemon.pid) - before) / (time.monotonic() - start)
        assert worst < 0.05, f"cat info took {worst * 1000:.0f} ms"
        assert cpu < 0.05, f"the daemon used {cpu:.1%} CPU"
        sent = time.monotonic()
        reader.proc.kill()
        reader.proc.wait(timeout=10)
        assert time.monotonic() - sent < 2 * LATE


def test_fuse_interrupt_is_learned_though_snapshots_skip_the_request_context(mnt, tmp_path):
    """Once the daemon knows where pyfuse3 keeps a request, snapshot files are read
    without a request context; the startup check (a child reading `info`, itself a
    snapshot) and the first read still teach it, so FUSE_INTERRUPT stays on."""
    log = tmp_path / "daemon.log"
    with foreground(mnt, args=("--log", str(log), "--debug")):
        for _ in range(3):
            assert len((mnt / "nvme0/identify").read_bytes()) == 4096
    text = log.read_text()
    assert "learned fuse_req_t at offset" in text, text[-2000:]
    assert "FUSE_INTERRUPT is not handled" not in text and "could not read" not in text, \
        text[-2000:]
