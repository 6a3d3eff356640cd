"""passthru/ through a real mount against the same backend called in-process.

Mount: one open file of passthru/io (4 KiB Reads) or passthru/admin (Identify),
requests written as one write per batch and the answers read back.
Peer: Controller.submit_batch with the same requests, in the same run, no FUSE.
Figures: round trip of one command (µs), commands/s for batches of 1, 8, 64,
and the ratio mount/direct (target: >= 0.5 at batch 64).
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from nvmefs.backends import Request, opened
from nvmefs.spec import commands
from nvmefs.spec.passthru import encode_request

DEVICE = "sim:size=1G"
SECONDS = 1.5


def read_sqe(i: int) -> bytes:     # 4 KiB Read of LBA 8*i (512-byte blocks)
    return encode_request(commands.OP_READ, cid=i, nsid=1, cdw10=(8 * i) % 2_000_000, cdw12=7,
                          data_len=4096)


def identify_sqe(i: int) -> bytes:
    return encode_request(commands.OP_IDENTIFY, cid=i, cdw10=1, data_len=4096)


def read_request(i: int) -> Request:
    return Request("io", commands.rw(0x02, 1, (8 * i) % 2_000_000, 8), data_in_len=4096)


def identify_request(i: int) -> Request:
    return Request("admin", commands.identify(1), data_in_len=4096)


WORKLOADS = {"io 4K read": ("io", read_sqe, read_request),
             "admin identify": ("admin", identify_sqe, identify_request)}


def rate(fn, batch: int) -> float:
    """Commands per second of fn(batch) over SECONDS."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        fn(batch)
        done += batch
    return done / (time.perf_counter() - start)


def through_mount(mnt: str) -> dict:
    out = {}
    for name, (queue, make, _) in WORKLOADS.items():
        fd = os.open(os.path.join(mnt, "nvme0", "passthru", queue), os.O_RDWR)
        answer = 16 + 4096

        def run(batch: int, fd=fd, make=make, answer=answer) -> None:
            os.write(fd, b"".join(make(i) for i in range(batch)))
            need = batch * answer
            got = 0
            while got < need:
                got += len(os.read(fd, need - got))

        run(1)
        start = time.perf_counter()
        for _ in range(500):
            run(1)
        out[(name, "rtt")] = (time.perf_counter() - start) / 500 * 1e6
        for batch in (1, 8, 64):
            out[(name, batch)] = rate(run, batch)
        os.close(fd)
    return out


def direct() -> dict:
    async def main():
        out = {}
        async with opened(DEVICE) as ctrl:
            for name, (_, _, make) in WORKLOADS.items():
                for batch in (1, 8, 64):
                    reqs = [make(i) for i in range(batch)]
                    done, start = 0, time.perf_counter()
                    while time.perf_counter() - start < SECONDS:
                        await ctrl.submit_batch(reqs)
                        done += batch
                    out[(name, batch)] = done / (time.perf_counter() - start)
                start = time.perf_counter()
                for _ in range(500):
                    await ctrl.submit_batch([make(0)])
                out[(name, "rtt")] = (time.perf_counter() - start) / 500 * 1e6
        return out
    return trio.run(main)


def main() -> None:
    nvmefs = str(Path(sys.executable).parent / "nvmefs")
    with tempfile.TemporaryDirectory() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        subprocess.run([nvmefs, "mount", "--passthru", "all", mnt, DEVICE], check=True)
        try:
            mine = through_mount(mnt)
        finally:
            subprocess.run([nvmefs, "umount", mnt], check=True)
    peer = direct()
    print(f"{'workload':<16}{'what':>12}{'mount':>12}{'direct':>12}{'ratio':>8}")
    for name in WORKLOADS:
        m, d = mine[(name, "rtt")], peer[(name, "rtt")]
        print(f"{name:<16}{'rtt µs':>12}{m:>12.1f}{d:>12.1f}{d / m:>8.2f}")
        for batch in (1, 8, 64):
            m, d = mine[(name, batch)], peer[(name, batch)]
            print(f"{name:<16}{f'batch {batch} /s':>12}{m:>12.0f}{d:>12.0f}{m / d:>8.2f}")


if __name__ == "__main__":
    main()
