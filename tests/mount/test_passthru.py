"""passthru/ through a real mount: shell one-liners, binary sessions, concurrency, policy, signals."""

import errno
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import foreground, sh

WORKER = Path(__file__).with_name("passthru_worker.py")


def sqe(opcode, nsid=0, cdw10=0, cdw12=0, data_len=0, data=b"", cid=0):
    return struct.pack("<BBHIIIQIIII6I", opcode, 0, cid, nsid, 0, 0, 0, data_len, 0, 0, 0,
                       cdw10, 0, cdw12, 0, 0, 0) + data


def test_echo_then_cat(mnt):
    with foreground(mnt):
        d = mnt / "nvme0"
        sh("echo 'opcode=0x02 nsid=0xffffffff cdw10=0x007f0002 data_len=512' > passthru/admin.smart", d)
        text = sh("cat passthru/admin.smart", d).stdout.decode()
        assert text.startswith("status=0x0000 sct=0x0 sc=0x00 dnr=0 more=0 crd=0 result=0x00000000")
        assert "name=SUCCESS" in text.splitlines()[0]
        assert sh("tail -n +2 passthru/admin.smart | xxd -r | cmp - log/smart", d).returncode == 0
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
                                   str(i), "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


def test_ctrl_c_interrupts_a_blocked_read(mnt):
    code = ("import os,struct,sys\n"
            "fd=os.open(sys.argv[1],os.O_RDWR)\n"
            "os.write(fd,struct.pack('<BBHIIIQIIII6I',2,0,0,1,0,0,0,512,0,0,0,0,0,0,0,0,0))\n"
            "print('waiting',flush=True)\n"
            "try:\n    os.read(fd,16)\nexcept KeyboardInterrupt:\n    print('interrupted')\n"
            "except OSError as e:\n    print('errno', e.errno)\n")
    with foreground(mnt, "sim:io_latency=60000", args=("--passthru", "all")):
        proc = subprocess.Popen([sys.executable, "-c", code, str(mnt / "nvme0/passthru/io")],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "waiting\n"
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 2
        assert out.strip() in ("interrupted", f"errno {errno.EINTR}")


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
    code += "\nassert (cid, status >> 1) == (999, 0), (cid, status)\nprint(len(answers))\n"
    with foreground(mnt):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(1000 * 528)
