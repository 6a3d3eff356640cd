"""cdq/ and events on a real mount, from a shell and from select()/poll() users
(DESIGN §4, §5): a dirty-LBA tracking session as nvmefs(5) walks through it."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import time

import pytest

from .conftest import foreground, sh
from .test_interrupt import PRELUDE, Reader, expect_interrupted, signal_and_time

ALL = ("--passthru", "all")
ZEROS = "00" * 512


def write_lines(*slbas: int) -> str:
    """Text passthru requests: a one-block Write at each LBA of namespace 1."""
    return "".join(f"opcode=0x01 nsid=1 cdw10={s} cdw12=0 data={ZEROS}\n" for s in slbas)


def send(ctrl, text: str, box: str = "io.t") -> None:
    """One write-only write of `text` to a mailbox (it returns once answered)."""
    fd = os.open(ctrl / "passthru" / box, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def entries(text: bytes) -> list[tuple]:
    return [(d["nsid"], d["slba"], d["nlb"], d["event"])
            for d in map(json.loads, text.decode().splitlines())]


@pytest.mark.parametrize("device", ["sim:size=64M", "vfio:sim:size=64M"])
def test_a_tracking_session_from_the_shell(mnt, device):
    with foreground(mnt, device, args=ALL):
        n0 = mnt / "nvme0"
        sh("echo 'create m entries=64' > cdq/ctl && echo start > cdq/m/track", n0)
        send(n0, write_lines(10, 20, 30))
        sh("echo stop > cdq/m/track", n0)
        out = sh("head -n 5 cdq/m/entries.jsonl", n0, timeout=10).stdout
        assert entries(out) == [(0, 0, 0, "first"), (1, 10, 0, "range"), (1, 20, 0, "range"),
                                (1, 30, 0, "range"), (0, 0, 0, "stopped")]
        info = dict(line.split(": ", 1) for line in (n0 / "cdq/m/info").read_text().splitlines())
        assert (info["read"], info["posted"], info["lost"], info["tracking"]) == \
            ("5", "5", "0", "off")
        assert (n0 / "cdq/ctl").read_text() == "m cdqid=1 entries=64 state=live\n"
        # a queue smaller than the writes: the entry that filled it says so, info the loss
        sh("echo 'create s entries=4' > cdq/ctl && echo start > cdq/s/track", n0)
        send(n0, write_lines(1, 2, 3, 4, 5))
        out = sh("head -c 96 cdq/s/entries | od -An -tx1 -w32", n0).stdout.decode().split("\n")
        assert [line.split()[-1] for line in out if line] == ["83", "01", "0f"]   # ESA 1 (LBACIA 2), 0, 7
        assert "lost: 3\n" in (n0 / "cdq/s/info").read_text()
        sh("rmdir cdq/m cdq/s", n0)
        assert sorted(os.listdir(n0 / "cdq")) == ["ctl"]


def test_refusals(mnt):
    with foreground(mnt, "sim", args=("--passthru", "readonly")):
        r = sh("echo 'create m entries=64' > nvme0/cdq/ctl", mnt, check=False)
        assert r.returncode and b"Permission denied" in r.stderr
    with foreground(mnt, "sim", args=ALL):
        n0 = mnt / "nvme0"
        for bad in ("create", "create m", "create m entries=1", "create m entries=8 mos=1",
                    "create m entries=8 entry_size=64", "create ../x entries=8", "make m"):
            r = sh(f"echo '{bad}' > cdq/ctl", n0, check=False)
            assert r.returncode and b"Invalid argument" in r.stderr, bad
        sh("echo 'create m entries=8' > cdq/ctl", n0)
        r = sh("echo 'create m entries=8' > cdq/ctl", n0, check=False)
        assert b"File exists" in r.stderr
        r = sh("echo go > cdq/m/track", n0, check=False)
        assert b"Invalid argument" in r.stderr
        fd = os.open(n0 / "cdq/m/entries", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.read(fd, 31)                         # less than one entry: never part of one
            assert e.value.errno == errno.EINVAL
        finally:
            os.close(fd)
        r = sh("rmdir cdq/nothing", n0, check=False)
        assert b"No such file" in r.stderr
        # a read too small for the next JSON line takes nothing off the queue
        sh("echo start > cdq/m/track", n0)
        r = sh("dd if=cdq/m/entries.jsonl bs=64 count=1 status=none", n0, check=False)
        assert r.returncode and b"Invalid argument" in r.stderr
        assert json.loads(sh("head -n 1 cdq/m/entries.jsonl", n0).stdout)["event"] == "first"


def test_a_blocked_cat_wakes_when_entries_arrive_and_select_sees_only_entries(mnt):
    with foreground(mnt, "sim", args=ALL):
        n0 = mnt / "nvme0"
        sh("echo 'create m entries=256' > cdq/ctl", n0)
        cat = subprocess.Popen(["cat", n0 / "cdq/m/entries.jsonl"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            assert not select.select([cat.stdout], [], [], 0)[0]
            sh("echo start > cdq/m/track", n0)
            assert select.select([cat.stdout], [], [], 1)[0]
            assert json.loads(cat.stdout.readline())["event"] == "first"
        finally:
            cat.kill()
            cat.wait(10)
        fd = os.open(n0 / "cdq/m/entries", os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            assert poller.poll(200) == []
            with pytest.raises(BlockingIOError):
                os.read(fd, 4096)
            send(n0, write_lines(7))
            assert poller.poll(1000) == [(fd, select.POLLIN)]
            raw = os.read(fd, 4096)
            assert len(raw) == 32 and raw[8] == 7
            assert poller.poll(100) == []
        finally:
            os.close(fd)


ENTRIES_READER = PRELUDE + """
fd = os.open(path, os.O_RDONLY)
waiting()
report('read', lambda: len(os.read(fd, 4096)))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_signal_ends_a_blocked_read_of_entries(mnt, sig):
    with foreground(mnt, "sim", args=ALL):
        sh("echo 'create m entries=64' > nvme0/cdq/ctl", mnt)
        reader = Reader(ENTRIES_READER, str(mnt / "nvme0/cdq/m/entries"))
        expect_interrupted(reader, sig, signal_and_time(reader, sig))


def test_two_readers_share_the_entries_each_exactly_once(mnt):
    with foreground(mnt, "sim", args=ALL):
        n0 = mnt / "nvme0"
        sh("echo 'create m entries=1024' > cdq/ctl && echo start > cdq/m/track", n0)
        fds = [os.open(n0 / "cdq/m/entries", os.O_RDONLY | os.O_NONBLOCK) for _ in range(2)]
        seen = []
        try:
            for batch in range(10):
                send(n0, write_lines(*range(100 * batch + 1, 100 * batch + 51)))
                for fd in fds:                            # each takes part of what is there
                    try:
                        raw = os.read(fd, 32 * 20)
                    except BlockingIOError:
                        continue
                    seen += [int.from_bytes(raw[i + 8:i + 16], "little")
                             for i in range(0, len(raw), 32)]
            while True:
                try:
                    raw = os.read(fds[0], 1 << 16)
                except BlockingIOError:
                    break
                seen += [int.from_bytes(raw[i + 8:i + 16], "little") for i in range(0, len(raw), 32)]
        finally:
            for fd in fds:
                os.close(fd)
        assert seen == [0] + [100 * b + i for b in range(10) for i in range(1, 51)]


def test_events_show_a_temperature_warning_at_once_to_every_reader(mnt):
    with foreground(mnt, "sim", args=ALL):
        n0 = mnt / "nvme0"
        early = os.open(n0 / "events", os.O_RDONLY)
        other = os.open(n0 / "events", os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(early, select.POLLIN)
            assert poller.poll(100) == []
            sent = time.monotonic()
            (n0 / "faults").write_text("temperature:360\n")
            assert poller.poll(1000) == [(early, select.POLLIN)]
            lag = time.monotonic() - sent
            event = json.loads(os.read(early, 65536))
            assert lag < 0.1, f"{lag * 1000:.0f} ms"
            assert (event["type_name"], event["info_name"]) == ("smart", "temperature-threshold")
            assert event["log"]["temperature"] == 360 and event["time"].endswith("Z")
            assert json.loads(os.read(other, 65536)) == event      # the other reader too
            late = os.open(n0 / "events", os.O_RDONLY | os.O_NONBLOCK)
            with pytest.raises(BlockingIOError):
                os.read(late, 65536)                            # only events after its open
            os.close(late)
        finally:
            os.close(early)
            os.close(other)
