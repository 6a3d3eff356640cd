"""passthru/ on namespaces with metadata through a real mount: a binary session on
extended LBAs (the Read of 2 blocks of 512+8 moving 1040 bytes), text requests with
separate metadata read back with `xxd -r`, and the refusal reaching the shell."""

import os
import struct

from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.passthru import encode_request

from .conftest import foreground, sh

ALL = ("--passthru", "all")


def transact(path, write: bytes, answer: int) -> bytes:
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.write(fd, write) == len(write)
        out = b""
        while len(out) < answer and (chunk := os.read(fd, 1 << 20)):
            out += chunk
        return out
    finally:
        os.close(fd)


def test_extended_lbas_binary_session(mnt):
    with foreground(mnt, "sim:size=64M,ms=8,mset=1", args=ALL):
        io = mnt / "nvme0/passthru/io"
        blocks = os.urandom(2 * 520)
        write = encode_request(OP_WRITE, nsid=1, cdw10=33, cdw12=1, data=blocks, cid=1)
        assert len(write) == 64 + 1040
        out = transact(io, write, 16)
        assert struct.unpack_from("<HH", out, 12) == (1, 1)        # CID, status 0, phase 1
        read = encode_request(OP_READ, nsid=1, cdw10=33, cdw12=1, data_len=1040, cid=2)
        out = transact(io, read, 16 + 1040)
        assert struct.unpack_from("<HH", out, 12) == (2, 1) and out[16:] == blocks
        r = sh("echo 'opcode=0x02 nsid=1 cdw12=1 data_len=1024' > passthru/io.x", mnt / "nvme0",
               check=False)
        assert r.returncode and b"Invalid argument" in r.stderr


def test_separate_metadata_text_requests_and_xxd(mnt, tmp_path):
    with foreground(mnt, "sim:size=64M,ms=16", args=ALL):
        d = mnt / "nvme0"
        assert "ms: 16" in (d / "ns/1/info").read_text()
        data, md = os.urandom(1024), os.urandom(32)
        (tmp_path / "expect").write_bytes(data + md)
        sh(f"echo 'opcode=0x01 nsid=1 cdw10=8 cdw12=1 data={data.hex()} metadata={md.hex()}'"
           " > passthru/io.w", d)
        assert sh("head -1 passthru/io.w", d).stdout.startswith(b"status=0x0000")
        sh("echo 'opcode=0x02 nsid=1 cdw10=8 cdw12=1 data_len=1024 metadata_len=32'"
           " > passthru/io.r", d)
        text = sh("cat passthru/io.r", d).stdout.decode()
        assert "data_len=1024 metadata_len=32 name=SUCCESS" in text.splitlines()[0]
        assert "\nmptr:\n00000400: " in text
        # the data, then the metadata: the bytes a binary answer has after its completion
        sh(f"tail -n +2 passthru/io.r | xxd -r | cmp - {tmp_path / 'expect'}", d)
        sh(f"tail -n +2 passthru/io.r | xxd -r | head -c 1024 | cmp - <(head -c 1024 "
           f"{tmp_path / 'expect'})", d)
        r = sh("echo 'opcode=0x02 nsid=1 cdw12=1 data_len=1024' > passthru/io.x", d, check=False)
        assert r.returncode and b"Invalid argument" in r.stderr
