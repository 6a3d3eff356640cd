"""nvmefs against nvme-cli and fio on QEMU's NVMe controller through the Linux driver.

Runs inside the guest of tests/vm (bench/vm.py boots it), all in one boot:
(a) 4 KiB random reads through passthru/io, QD requests per write, against
    fio --ioengine=io_uring_cmd at the same iodepth on the same /dev/ng0n1:
    IOPS and ratio (target >= 0.8 at QD 32);
(b) `cat log/smart.json` as a new process each time against
    `nvme smart-log -o json` as a new process each time (target ratio <= 1.0);
(c) 1000 SMART reads from one Python process through the mount against 1000
    nvme-cli invocations.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nvmefs.spec.commands import OP_READ
from nvmefs.spec.passthru import encode_request

SECONDS = 5
NG = "/dev/ng0n1"
NVMEFS = str(Path(sys.executable).parent / "nvmefs")


def fio_iops(qd: int) -> float:
    r = subprocess.run(["fio", "--name=r", f"--filename={NG}", "--ioengine=io_uring_cmd",
                        "--cmd_type=nvme", "--rw=randread", "--bs=4k", f"--iodepth={qd}",
                        "--time_based", f"--runtime={SECONDS}", "--size=512M",
                        "--output-format=json"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["jobs"][0]["read"]["iops"]


def mailbox_iops(mnt: str, qd: int) -> float:
    """`qd` reads per write, answers read back before the next write (measured
    better here than two half batches in flight: fewer FUSE requests).
    Requests are built before the clock starts, so the client costs little."""
    blocks = 512 * 1024 * 1024 // 4096               # 4 KiB units in the first 512 MiB
    rng = random.Random(qd)
    pool = [b"".join(encode_request(OP_READ, cid=i, nsid=1, cdw10=rng.randrange(blocks) * 8,
                                    cdw12=7, data_len=4096) for i in range(qd))
            for _ in range(256)]
    fd = os.open(os.path.join(mnt, "nvme0/passthru/io"), os.O_RDWR)
    want = qd * (16 + 4096)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        os.write(fd, pool[(done // qd) % len(pool)])
        got = 0
        while got < want:
            got += len(os.read(fd, want - got))
        done += qd
    elapsed = time.perf_counter() - start
    os.close(fd)
    return done / elapsed


def per_run(cmd: list[str], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) / rounds


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        subprocess.run([NVMEFS, "mount", mnt, "/dev/nvme0"], check=True)
        try:
            print("(a) 4 KiB random read IOPS: passthru/io batches vs fio io_uring_cmd")
            print(f"{'QD':>4}{'nvmefs':>10}{'fio':>10}{'ratio':>8}")
            for qd in (1, 8, 32):
                mine, peer = mailbox_iops(mnt, qd), fio_iops(qd)
                print(f"{qd:>4}{mine:>10.0f}{peer:>10.0f}{mine / peer:>8.2f}", flush=True)

            smart = os.path.join(mnt, "nvme0/log/smart.json")
            rounds = 30
            cat = per_run(["cat", smart], rounds)
            cli = per_run(["nvme", "smart-log", "/dev/nvme0", "-o", "json"], rounds)
            print("(b) a new process per SMART read (ms each)")
            print(f"    cat log/smart.json {cat * 1e3:.1f}   nvme smart-log -o json {cli * 1e3:.1f}"
                  f"   ratio {cat / cli:.2f}", flush=True)

            start = time.perf_counter()
            for _ in range(1000):
                with open(smart, "rb") as f:
                    json.loads(f.read())
            mine = time.perf_counter() - start
            cli_1000 = per_run(["nvme", "smart-log", "/dev/nvme0", "-o", "json"], 100) * 1000
            print("(c) 1000 SMART reads (s in all; nvme-cli extrapolated from 100 runs)")
            print(f"    one Python process through the mount {mine:.2f}   "
                  f"1000 nvme-cli invocations {cli_1000:.2f}   ratio {mine / cli_1000:.3f}")
        finally:
            subprocess.run([NVMEFS, "umount", mnt], check=True)


if __name__ == "__main__":
    main()
