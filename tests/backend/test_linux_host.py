"""The linux backend's pieces that need no NVMe device: the compiled extension,
wire sizes, the ring plumbing, the result decoder, URIs."""

import errno
import os

import pytest
import trio

from nvmefs.backends import TransportError, controller_class
from nvmefs.backends.linux import LinuxController, completion, parse_uri
from nvmefs.backends.ffi import ffi, lib
from nvmefs.backends.linux.ring import Ring
from nvmefs.spec import status as S


def test_wire_sizes_and_ioctl_numbers():
    assert lib.NVMEFS_PASSTHRU_CMD64_SIZE == 80
    assert lib.NVMEFS_URING_CMD_SIZE == 72
    assert lib.NVMEFS_SQE_SIZE == 64          # one slot; SQE128 rings use two
    assert (lib.NVME_IOCTL_ADMIN64_CMD, lib.NVME_IOCTL_IO64_CMD) == (0xC0504E47, 0xC0504E48)
    assert (lib.NVME_URING_CMD_IO, lib.NVME_URING_CMD_ADMIN) == (0xC0484E80, 0xC0484E82)
    assert (lib.NVME_IOCTL_ID, lib.NVME_IOCTL_RESET) == (0x4E40, 0x4E44)
    assert ffi.sizeof("struct nvmefs_slot") == 24


def test_result_decoder():
    ok = completion(0, 5 | 6 << 32, b"x", 9, "t")
    assert ok.ok and (ok.dw0, ok.dw1, ok.cid, ok.data) == (5, 6, 9, b"x")
    assert completion(0x4002, 0, b"", 1, "t").status == 0x4002
    with pytest.raises(TransportError) as e:
        completion(-errno.EACCES, 0, b"", 1, "t")
    assert e.value.errno == errno.EACCES and "CAP_SYS_ADMIN" in str(e.value)
    for err, seen in [(errno.ENODEV, errno.ENODEV), (errno.ENXIO, errno.ENODEV),    # gone
                      (errno.EINVAL, errno.EINVAL), (errno.EOPNOTSUPP, errno.EOPNOTSUPP)]:
        with pytest.raises(TransportError) as e:        # the batch's failure
            completion(-err, 0, b"", 1, "t")
        assert e.value.errno == seen


@pytest.mark.parametrize("err,expected", [(errno.EINTR, S.HOST_ABORTED),
                                          (errno.ECANCELED, S.HOST_ABORTED),
                                          (errno.EFAULT, S.HOST_PATH_ERROR),
                                          (errno.EIO, S.HOST_PATH_ERROR),
                                          (errno.EAGAIN, S.HOST_PATH_ERROR)])
def test_an_errno_of_one_command_is_its_answer(err, expected):
    """A reset ends commands in flight with EINTR (cancelled) or, on 6.1, EFAULT: each
    is that command's status; the rest of its batch is unaffected."""
    cpl = completion(-err, 0, b"", 7, "t")
    assert (cpl.status, cpl.cid) == (expected, 7)


def test_uris():
    assert parse_uri("/dev/nvme3") == ("nvme3", "uring")
    assert parse_uri("linux:/dev/nvme0?admin=ioctl") == ("nvme0", "ioctl")
    assert controller_class("/dev/nvme0") is LinuxController
    for bad in ("/dev/nvme0n1", "/dev/ng0n1", "linux:/dev/nvme0?admin=spdk"):
        with pytest.raises(ValueError):
            parse_uri(bad)
    with pytest.raises(FileNotFoundError):
        LinuxController("/dev/nvme99")


async def test_ring_batches_and_reaps_through_the_eventfd(tmp_path):
    """uring_cmd against /dev/null (a no-op in recent kernels) and a regular file
    (which has no uring_cmd: -EOPNOTSUPP) exercises submit, eventfd and reap."""
    ring = Ring(entries=8)
    null = os.open("/dev/null", os.O_RDONLY)
    plain = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    sqes = bytes(64 * 20)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ring.run)
            reqs = ffi.new("struct nvmefs_req[]", 20)
            sqe = ffi.from_buffer(sqes)
            for i in range(20):                    # more than the ring holds at once
                reqs[i].fd = plain if i % 2 else null
                reqs[i].cmd_op, reqs[i].sqe, reqs[i].timeout_ms = lib.NVME_URING_CMD_IO, sqe + 64 * i, 1000
            pending = await ring.submit(reqs, 20, sqe)
            with trio.fail_after(10):
                await pending.done.wait()
            results = [pending.slots[i].res for i in range(20)]
            assert all(r == -errno.EOPNOTSUPP for r in results[1::2])
            assert all(r in (0, -errno.EOPNOTSUPP) for r in results[0::2])
            assert ring.completions == 20 and not ring.pending and ring.free == 8
            assert ring.submit_calls >= 3           # 20 commands through 8 slots
            nursery.cancel_scope.cancel()
    finally:
        os.close(null)
        os.close(plain)
        ring.close()
