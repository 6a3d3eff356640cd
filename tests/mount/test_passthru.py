"""passthru/ through a real mount: shell one-liners, binary sessions, concurrency, policy, signals."""

import os
import select
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.passthru import encode_request
from nvmefs.spec.queue import Completion

from .conftest import foreground, sh

WORKER = Path(__file__).with_name("passthru_worker.py")


sqe = encode_request


def test_echo_then_cat(mnt):
    with foreground(mnt):
        d = mnt / "nvme0"
        sh("echo 'opcode=0x02 nsid=0xffffffff cdw10=0x007f0002 data_len=512' > passthru/admin.smart", d)
        text = sh("cat passthru/admin.smart", d).stdout.decode()
        assert text.startswith("status=0x0000 sct=0x0 sc=0x00 dnr=0 more=0 crd=0 result=0x00000000")
        assert "name=SUCCESS" in text.splitlines()[0]
        assert sh("tail -n +2 passthru/admin.smart | xxd -r | cmp - log/smart", d).returncode == 0
        head = sh("head -1 passthru/admin.smart", d)          # head seeks back: no error
        assert head.stdout.decode() == text.splitlines(True)[0] and head.stderr == b""
        assert os.stat(d / "passthru/admin.smart").st_size == len(text)
        assert oct(os.stat(d / "passthru/admin.smart").st_mode & 0o777) == "0o600"
        sh("rm passthru/admin.smart", d)
        assert sorted(os.listdir(d / "passthru")) == ["admin", "io"]
        r = sh("echo opcode=6 > passthru/smart", d, check=False)
        assert r.returncode and b"Invalid argument" in r.stderr


def test_binary_identify_session(mnt):
    with foreground(mnt):
        fd = os.open(mnt / "nvme0/passthru/admin", os.O_RDWR)
        try:
            assert os.write(fd, sqe(0x06, cdw10=1, data_len=4096, cid=0x4242)) == 64
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            assert poller.poll(5000)
            out = b""
            while chunk := os.read(fd, 65536):
                out += chunk
        finally:
            os.close(fd)
        cid, status = struct.unpack_from("<HH", out, 12)
        assert (cid, status >> 1, len(out)) == (0x4242, 0, 16 + 4096)
        assert out[16:] == (mnt / "nvme0/identify").read_bytes()


def test_eight_processes_get_their_own_answers(mnt):
    with foreground(mnt, "sim:size=1G", args=("--passthru", "all")):
        procs = [subprocess.Popen([sys.executable, str(WORKER), str(mnt / "nvme0/passthru/io"),
                                   str(i), "1000"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(8)]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err.decode()[-2000:]
            assert out.endswith(b"1000 requests ok\n")


def test_policy_from_the_shell(mnt):
    write = "opcode=0x01 nsid=1 data_len=512 data=" + "ab" * 512
    with foreground(mnt):
        d = mnt / "nvme0"
        r = sh(f"echo '{write}' > passthru/io", d, check=False)
        assert r.returncode and b"Permission denied" in r.stderr
        r = sh("echo 'opcode=0x05 cdw10=1' > passthru/admin", d, check=False)
        assert r.returncode and b"Operation not permitted" in r.stderr
        r = sh("echo 0 > features/volatile-write-cache", d, check=False)
        assert r.returncode and b"Permission denied" in r.stderr
    with foreground(mnt, args=("--passthru", "all")):
        d = mnt / "nvme0"
        sh(f"echo '{write}' > passthru/io.w", d)
        assert "name=SUCCESS" in sh("cat passthru/io.w", d).stdout.decode()
        sh("echo 'opcode=0x02 nsid=1 data_len=512' > passthru/io.r", d)
        data = sh("tail -n +2 passthru/io.r | xxd -r", d).stdout
        assert data == b"\xab" * 512
        sh("echo 0 > features/volatile-write-cache", d)
        assert sh("jq .wce features/volatile-write-cache.json", d).stdout.strip() == b"0"
        r = sh("echo 'opcode=0x01 cdw10=1' > passthru/admin", d, check=False)
        assert r.returncode and b"Operation not permitted" in r.stderr
        sh("echo 1 > reset", d)
        assert sh("jq .wce features/volatile-write-cache.json", d).stdout.strip() == b"1"


def test_cat_of_batches_larger_than_one_write(mnt, tmp_path):
    text = tmp_path / "reads.txt"      # ~190 KiB of text: cat writes it in 128 KiB pieces
    text.write_text("".join(f"opcode=0x02 nsid=1 cdw10={i} data_len=512 cid={3000 + i}\n"
                            for i in range(3000)))
    blocks = {lba: os.urandom(4096) for lba in range(0, 8000, 8)}
    binary = tmp_path / "writes.bin"   # 1000 Writes of 4 KiB: 4 MiB through cat
    binary.write_bytes(b"".join(sqe(OP_WRITE, nsid=1, cdw10=lba, cdw12=7, data=data, cid=i)
                                for i, (lba, data) in enumerate(blocks.items())))
    with foreground(mnt, "sim:size=1G", args=("--passthru", "all")):
        d = mnt / "nvme0"
        sh(f"cat {text} > passthru/io.t", d)
        lines = sh("grep ^status= passthru/io.t", d).stdout.decode().splitlines()
        assert [int(ln.split("cid=")[1].split()[0]) for ln in lines] == list(range(3000, 6000))
        sh(f"cat {binary} > passthru/io.b", d)
        answers = (d / "passthru/io.b").read_bytes()
        assert len(answers) == 16 * len(blocks)
        assert all(Completion.decode(answers[i:i + 16]).ok for i in range(0, len(answers), 16))
        sh(f"dd if={binary} of=passthru/io.d bs=100000 status=none", d)    # odd cuts too
        assert len((d / "passthru/io.d").read_bytes()) == 16 * len(blocks)
        reads = b"".join(sqe(OP_READ, nsid=1, cdw10=lba, cdw12=7, data_len=4096, cid=i)
                         for i, lba in enumerate(blocks))
        fd = os.open(d / "passthru/io", os.O_RDWR)
        try:
            os.write(fd, reads)
            out = b""
            while len(out) < len(blocks) * 4112:
                out += os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        assert [out[i * 4112 + 16:(i + 1) * 4112] for i in range(len(blocks))] == list(blocks.values())


@pytest.mark.parametrize("bad,message", [
    (b"opcode=0x06 cdw10=1 data_len=4095\n", b"Invalid argument"),
    (b"opcode=0x2e\n", b"Operation not supported"),
    (b"opcode=0x02 nsid=0xffffffff cdw10=0xffff0002 data_len=262144\n", b"Argument list too long"),
])
def test_errnos_reach_the_shell(mnt, bad, message):
    with foreground(mnt, "sim:mdts=5"):
        r = sh(f"printf '{bad.decode().strip()}\\n' > passthru/admin", mnt / "nvme0", check=False)
        assert r.returncode and message in r.stderr, r.stderr


def test_the_python_example_in_nvmefs_5_works(mnt):
    page = (Path(__file__).parents[2] / "man/nvmefs.5").read_text()
    example = page.split('.\\" example: read-1000-lbas\n')[1].split('.\\" end of example')[0]
    code = example.replace("\\-", "-").replace("/mnt/nvme/nvme0", str(mnt / "nvme0"))
    code += "\nassert (last.cid, last.ok) == (999, True), last\nprint(len(answers))\n"
    with foreground(mnt):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(1000 * 528)
