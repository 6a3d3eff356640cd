"""Can a mount use the second core? The io mailbox at full speed from two client
processes, each on its own controller, served by one daemon or by two.

  one daemon    `nvmefs mount -f MNT sim:null=1 sim:null=1` (nvme0 and nvme1)
  two daemons   `nvmefs mount -f MNT1 sim:null=1` and `... MNT2 sim:null=1`

Each client writes batches of BATCH 4 KiB Reads and reads every answer (as
bench/floor.py does) for SECONDS; the figures are the sum of both clients'
commands per second and each daemon's CPU (100 % = one core). A trio daemon
runs Python on one thread, so one daemon cannot use a second core: a process
per mount (or per controller group, one mount each) can.

Run: .venv/bin/python bench/cores.py (part of `make bench`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # noqa: E402  (the mounts, the client and the CPU figures)

SECONDS = 3.0
BATCH = 128
NULL = "sim:null=1"

CLIENT = """
import os, sys, time
sys.path.insert(0, {here!r})
import floor
fd = os.open(sys.argv[1], os.O_RDWR)
op, _ = floor.mailbox(fd, {batch})
for _ in range(20):
    op()
n, start = 0, time.perf_counter()
while time.perf_counter() - start < {seconds}:
    op()
    n += 1
print(n * {batch} / (time.perf_counter() - start))
"""


def drive(paths: list[str], pids: list[int]) -> tuple[float, list[float]]:
    """Both clients at once: (commands per second in all, each daemon's CPU %)."""
    code = CLIENT.format(here=str(floor.HERE), batch=BATCH, seconds=SECONDS)
    before = [floor.cpu_seconds(p) for p in pids]
    start = time.perf_counter()
    clients = [subprocess.Popen([sys.executable, "-c", code, p], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, text=True) for p in paths]
    rates = [float(c.communicate(timeout=SECONDS + 60)[0]) for c in clients]
    elapsed = time.perf_counter() - start
    cpu = [(floor.cpu_seconds(p) - b) / elapsed * 100 for p, b in zip(pids, before)]
    return sum(rates), cpu


def main() -> None:
    floor.clean_leftovers()
    tmp = tempfile.mkdtemp(prefix=f"{floor.PREFIX}{os.getpid()}-")
    results = {}
    try:
        mnt = os.path.join(tmp, "one")
        os.mkdir(mnt)
        one = floor.Server("one daemon", lambda m, _: [floor.NVMEFS, "mount", "-f", m, NULL, NULL])
        with floor.Mounted(one, mnt, os.path.join(tmp, "one.log"), 0) as m:
            paths = [os.path.join(mnt, c, "passthru", "io") for c in ("nvme0", "nvme1")]
            results["one daemon, two controllers"] = drive(paths, [m.pid])
        mounts = []
        for i in range(2):
            mnt = os.path.join(tmp, f"two{i}")
            os.mkdir(mnt)
            server = floor.Server(f"daemon {i}",
                                  lambda m, _: [floor.NVMEFS, "mount", "-f", m, NULL])
            mounts.append(floor.Mounted(server, mnt, os.path.join(tmp, f"two{i}.log"), 0))
        with mounts[0] as a, mounts[1] as b:
            results["two daemons, one controller each"] = drive(
                [a.path("passthru", "io"), b.path("passthru", "io")], [a.pid, b.pid])
    finally:
        if not any(os.fsencode(tmp) in mp for mp in floor.mountpoints()):
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"cores: {floor.NCPU} CPUs, two clients, 4 KiB Reads in batches of {BATCH} on {NULL}, "
          f"{SECONDS} s")
    for name, (rate, cpu) in results.items():
        print(f"  {name:<34} {rate:>9.0f} cmd/s   daemon CPU "
              + " + ".join(f"{c:.0f} %" for c in cpu))
    base = results["one daemon, two controllers"][0]
    print(f"  two daemons ÷ one: {results['two daemons, one controller each'][0] / base:.2f}")


if __name__ == "__main__":
    main()
