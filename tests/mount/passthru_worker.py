"""One client of the concurrency test: N mixed requests on its own open file.

Writes, reads, flushes and text requests to its own LBA range, CIDs tagged
with its number; checks every answer is its own, in order, with its data.
Usage: passthru_worker.py MAILBOX WORKER REQUESTS
"""

import os
import random
import sys

from nvmefs.spec.passthru import encode_request
from nvmefs.spec.queue import Completion

BLOCK = 512


def sqe(opcode, cid, nsid=1, lba=0, nlb=1, data=b"", data_in=0):
    return encode_request(opcode, cid=cid, nsid=nsid, cdw10=lba & 0xFFFFFFFF, cdw11=lba >> 32,
                          cdw12=nlb - 1, data=data, data_len=len(data) or data_in)


def main() -> int:
    path, worker, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(worker)
    base = 100_000 * (worker + 1)
    written: dict[int, bytes] = {}
    fd = os.open(path, os.O_RDWR)
    sent = 0
    while sent < total:
        batch, expect = [], []
        for _ in range(min(rng.randint(1, 32), total - sent)):
            cid = (worker << 12) | (sent & 0xFFF)
            kind = rng.choice(["write", "read", "flush", "text"] if written else ["write"])
            lba = base + rng.randrange(64)
            if kind == "write":
                data = os.urandom(BLOCK)
                batch.append(sqe(0x01, cid, lba=lba, data=data))
                written[lba] = data
                expect.append((cid, 16, None))
            elif kind == "read":
                lba = rng.choice(list(written))
                batch.append(sqe(0x02, cid, lba=lba, data_in=BLOCK))
                expect.append((cid, 16 + BLOCK, written[lba]))
            elif kind == "flush":
                batch.append(sqe(0x00, cid))
                expect.append((cid, 16, None))
            else:
                batch.append(f"opcode=0x00 nsid=1 cid={cid}\n".encode())
                expect.append((cid, "text", None))
            sent += 1
        blob = b"".join(batch)
        assert os.write(fd, blob) == len(blob)
        stream = bytearray()
        for cid, size, data in expect:
            if size == "text":
                while b"\n\n" not in stream:
                    chunk = os.read(fd, 65536)
                    assert chunk, "EOF before the text answer"
                    stream += chunk
                text, _, rest = bytes(stream).partition(b"\n\n")
                assert f" cid={cid} ".encode() in text and b"name=SUCCESS" in text, text
                stream = bytearray(rest)
                continue
            while len(stream) < size:
                chunk = os.read(fd, 1 << 20)
                assert chunk, "EOF before the answer"
                stream += chunk
            rec, stream = bytes(stream[:size]), stream[size:]
            cpl = Completion.decode(rec[:16])
            assert cpl.cid == cid, (cpl.cid, cid)
            assert cpl.ok, hex(cpl.status)
            if data is not None:
                assert rec[16:] == data
        assert not stream
    assert os.read(fd, 100) == b""          # nothing pending: EOF
    os.close(fd)
    print(f"worker {worker}: {sent} requests ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
