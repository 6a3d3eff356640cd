"""nvmefs against nvme-cli and fio on QEMU's NVMe controller through the Linux driver.

Runs inside the guest of tests/vm (bench/vm.py boots it), all in one boot:
(a) 4 KiB random reads through passthru/io, QD requests per write, against
    fio --ioengine=io_uring_cmd at the same iodepth on the same /dev/ng0n1:
    IOPS and ratio (target >= 0.8 at QD 32);
(b) `cat log/smart.json` as a new process each time against
    `nvme smart-log -o json` as a new process each time (target ratio <= 1.0);
(c) 1000 SMART reads from one Python process through the mount against 1000
    nvme-cli invocations;
(d) the vfio driver on the same controller (handed to vfio-pci): 4 KiB random
    reads at QD 1, 8, 32, 128, the backend called directly (QD commands in
    flight) and through its `io` mailbox at batch 32 and 128,
    against fio io_uring_cmd on /dev/ng0n1 and fio io_uring on /dev/nvme0n1
    measured under the kernel driver in the same boot (target >= 1.0 of
    io_uring_cmd at QD 32 for the direct path);
(e) the tcp backend against nvmet-tcp in the same guest, called directly and
    through its `io` mailbox, against fio io_uring_cmd on the kernel NVMe/TCP
    host's /dev/ngXnY for the same subsystem (target >= 0.7 at QD 32, direct).
`python bench/guest.py vfio` or `tcp` runs one part alone.
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


def fio_iops(qd: int, engine: str = "io_uring_cmd", ng: str = NG) -> float:
    target = [f"--filename={ng}", "--ioengine=io_uring_cmd", "--cmd_type=nvme"] \
        if engine == "io_uring_cmd" else ["--filename=/dev/nvme0n1", "--ioengine=io_uring",
                                          "--direct=1"]
    r = subprocess.run(["fio", "--name=r", *target, "--rw=randread", "--bs=4k", f"--iodepth={qd}",
                        "--time_based", f"--runtime={SECONDS}", "--size=200M",
                        "--output-format=json"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["jobs"][0]["read"]["iops"]


def direct_iops(uri: str, qd: int, lba: int = 512) -> float:
    """The backend called directly: batches of `qd` random 4 KiB reads, one after
    another. (Two tasks of qd/2 each measured lower in the guest: the cost there is
    per batch.)"""
    import trio

    from nvmefs.backends import Request, opened
    from nvmefs.spec.commands import rw

    per = 4096 // lba                                 # blocks per 4 KiB read
    blocks = 200 * 1024 * 1024 // 4096
    rng = random.Random(qd)
    pool = [[Request("io", rw(OP_READ, 1, rng.randrange(blocks) * per, per), data_in_len=4096)
             for _ in range(qd)] for _ in range(64)]

    async def run() -> float:
        async with opened(uri) as c:
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < SECONDS:
                await c.submit_batch(pool[(done // qd) % len(pool)])
                done += qd
            return done / (time.perf_counter() - start)
    return trio.run(run)


def mailbox_iops(mnt: str, qd: int, lba: int = 512) -> float:
    """`qd` reads per write, answers read back before the next write (measured
    better here than two half batches in flight: fewer FUSE requests).
    Requests are built before the clock starts, so the client costs little."""
    per = 4096 // lba
    blocks = 200 * 1024 * 1024 // 4096               # 4 KiB units in the first 200 MiB
    rng = random.Random(qd)
    pool = [b"".join(encode_request(OP_READ, cid=i, nsid=1, cdw10=rng.randrange(blocks) * per,
                                    cdw12=per - 1, data_len=4096) for i in range(qd))
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
        if sys.argv[1:] == ["vfio"]:            # part (d) alone
            return vfio_part(mnt)
        if sys.argv[1:] == ["tcp"]:             # part (e) alone
            return tcp_part(mnt, tmp)
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
        vfio_part(mnt)
        tcp_part(mnt, tmp)


def tcp_part(mnt: str, tmp: str) -> None:
    """(e) nvmet-tcp on 127.0.0.1 in the guest: the tcp backend against fio
    io_uring_cmd on the kernel NVMe/TCP host's /dev/ngXnY, same subsystem."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tcp.conftest import NQN, PORT, Nvmet

    nvmet = Nvmet(Path(tmp))
    _, disk = nvmet.kernel_host()
    ng = "/dev/" + disk.removeprefix("/dev/").replace("nvme", "ng", 1)
    uri = f"tcp://127.0.0.1:{PORT}/{NQN}"
    lba = 4096                                      # nvmet's file namespace on tmpfs
    try:
        print("(e) 4 KiB random read IOPS over NVMe/TCP (nvmet-tcp on 127.0.0.1), against fio "
              "io_uring_cmd\n    on the kernel NVMe/TCP host's " + ng)
        print(f"{'QD':>4}{'tcp':>8}{'mailbox':>9}{'kernel':>8}{'tcp/kernel':>12}"
              f"{'mailbox/kernel':>16}")
        for qd in (1, 8, 32):
            peer = fio_iops(qd, ng=ng)
            mine = direct_iops(uri, qd, lba)
            subprocess.run([NVMEFS, "mount", mnt, uri], check=True)
            try:
                box = mailbox_iops(mnt, qd, lba)
            finally:
                subprocess.run([NVMEFS, "umount", mnt], check=True)
            print(f"{qd:>4}{mine:>8.0f}{box:>9.0f}{peer:>8.0f}{mine / peer:>12.2f}"
                  f"{box / peer:>16.2f}", flush=True)
    finally:
        nvmet.disconnect_kernel_host()


def vfio_part(mnt: str) -> None:
    from nvmefs.backends.vfio import bind

    qds = (1, 8, 32, 128)
    cmd = {qd: fio_iops(qd) for qd in qds}
    blk = {qd: fio_iops(qd, "io_uring") for qd in qds}
    bdf = bind.pci_nvme_functions()[0].address
    bind.bind(bdf)
    try:
        uri = f"vfio:{bdf}"
        print("(d) 4 KiB random read IOPS on vfio (a batch of QD commands at a time; MSI-X,"
              " or poll=1),\n    against fio io_uring_cmd and io_uring under the kernel driver")
        print(f"{'QD':>4}{'vfio':>8}{'poll=1':>8}{'io_uring_cmd':>14}{'io_uring':>10}"
              f"{'vs cmd':>8}{'poll vs cmd':>13}{'poll vs blk':>13}")
        for qd in qds:
            irq, poll = direct_iops(uri, qd), direct_iops(uri + "?poll=1", qd)
            print(f"{qd:>4}{irq:>8.0f}{poll:>8.0f}{cmd[qd]:>14.0f}{blk[qd]:>10.0f}"
                  f"{irq / cmd[qd]:>8.2f}{poll / cmd[qd]:>13.2f}{poll / blk[qd]:>13.2f}",
                  flush=True)
        subprocess.run([NVMEFS, "mount", mnt, uri], check=True)
        try:
            print("    through the vfio mount's passthru/io (batch = QD), MSI-X")
            for qd in (32, 128):
                mine = mailbox_iops(mnt, qd)
                print(f"{qd:>4}{mine:>8.0f}{'':>8}{cmd[qd]:>14.0f}{blk[qd]:>10.0f}"
                      f"{mine / cmd[qd]:>8.2f}", flush=True)
        finally:
            subprocess.run([NVMEFS, "umount", mnt], check=True)
    finally:
        bind.unbind(bdf)


if __name__ == "__main__":
    main()
