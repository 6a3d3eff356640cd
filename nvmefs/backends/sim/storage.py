"""Namespace media for the simulator: sparse memory or a sparse file.

Unwritten and deallocated ranges read as zeros (the simulator reports
DLFEAT = 1). Both stores take byte offsets already checked against the size.
Zeroing (Write Zeroes, Deallocate, Format) frees the space: memory chunks are
dropped, file ranges are punched out (fallocate PUNCH_HOLE), so a sparse file
does not fill up with zeros. FileStore methods do blocking disk I/O: the
controller calls them from a worker thread, never on the event loop, and a
failure is an OSError it turns into a media status.
"""

from __future__ import annotations

import ctypes
import errno
import os

CHUNK = 64 * 1024

# <linux/falloc.h>
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def _libc_fallocate():
    """fallocate(2) from the C library (the standard library has only
    posix_fallocate, which cannot punch holes); None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    for name in ("fallocate64", "fallocate"):
        fn = getattr(libc, name, None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            return fn
    return None


_fallocate = _libc_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a byte range of a file, keeping its size (it reads as zeros,
    partial blocks at the edges are zeroed). False if the file system (or the C
    library) cannot; OSError for any other failure."""
    if length <= 0:
        return True
    if _fallocate is None:
        return False
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def zero_written(fd: int, offset: int, length: int) -> None:
    """Write zeros over the data of a range, skipping its holes (SEEK_DATA), so
    zeroing never allocates: the fallback where holes cannot be punched."""
    pos, end = offset, offset + length
    zeros = bytes(CHUNK)
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError as e:
            if e.errno == errno.ENXIO:          # nothing but a hole from here to EOF
                return
            if e.errno != errno.EINVAL:         # EINVAL: no SEEK_DATA here, write it all
                raise
            data, hole = pos, end
        if data >= end:
            return
        stop = min(hole, end)
        for start in range(max(data, pos), stop, CHUNK):
            _pwrite_all(fd, zeros[:min(CHUNK, stop - start)], start)
        pos = stop


class MemoryStore:
    """Chunks allocated on first write; memory grows with the data written."""

    def __init__(self, size: int):
        self.size = size
        self._chunks: dict[int, bytearray] = {}

    def _spans(self, offset: int, length: int):
        end = offset + length
        while offset < end:
            index, start = divmod(offset, CHUNK)
            n = min(CHUNK - start, end - offset)
            yield index, start, n
            offset += n

    def read(self, offset: int, length: int) -> bytes:
        index, start = divmod(offset, CHUNK)
        if start + length <= CHUNK:         # within one chunk: one copy
            chunk = self._chunks.get(index)
            if chunk is None:
                return bytes(length)
            with memoryview(chunk) as view:
                return bytes(view[start:start + length])
        out = bytearray(length)
        pos = 0
        for index, start, n in self._spans(offset, length):
            chunk = self._chunks.get(index)
            if chunk is not None:
                out[pos:pos + n] = chunk[start:start + n]
            pos += n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        for index, start, n in self._spans(offset, len(data)):
            chunk = self._chunks.get(index)
            if chunk is None:
                chunk = self._chunks[index] = bytearray(CHUNK)
            chunk[start:start + n] = data[pos:pos + n]
            pos += n

    def zero(self, offset: int, length: int) -> None:
        index, start = divmod(offset, CHUNK)
        if length < CHUNK and start + length <= CHUNK:     # inside one chunk: no span walk
            chunk = self._chunks.get(index)
            if chunk is not None:
                chunk[start:start + length] = bytes(length)
            return
        if length >= CHUNK and len(self._chunks) < length // CHUNK:
            self._zero_sparse(offset, length)       # fewer chunks than the range spans
            return
        for index, start, n in self._spans(offset, length):
            if n == CHUNK:
                self._chunks.pop(index, None)
            elif index in self._chunks:
                self._chunks[index][start:start + n] = bytes(n)

    def _zero_sparse(self, offset: int, length: int) -> None:
        end = offset + length
        for index in [i for i in self._chunks if i * CHUNK < end and (i + 1) * CHUNK > offset]:
            lo, hi = max(offset, index * CHUNK), min(end, (index + 1) * CHUNK)
            if hi - lo == CHUNK:
                del self._chunks[index]
            else:
                self._chunks[index][lo - index * CHUNK:hi - index * CHUNK] = bytes(hi - lo)

    def allocated(self) -> int:
        return len(self._chunks) * CHUNK

    def close(self) -> None:
        self._chunks.clear()


class FileStore:
    """A sparse file of the namespace's size; holes read as zeros. Blocking."""

    def __init__(self, path: str, size: int):
        self.size = size
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(self._fd).st_size != size:
                os.ftruncate(self._fd, size)
        except OSError:
            os.close(self._fd)
            raise

    def _check_open(self) -> int:
        if self._fd < 0:
            raise OSError(errno.EBADF, f"{self.path}: closed")
        return self._fd

    def read(self, offset: int, length: int) -> bytes:
        fd = self._check_open()
        parts, pos, end = [], offset, offset + length
        while pos < end:
            piece = os.pread(fd, end - pos, pos)
            if not piece:       # past the end of a file someone shortened: zeros
                break
            parts.append(piece)
            pos += len(piece)
        return b"".join(parts).ljust(length, b"\0")

    def write(self, offset: int, data: bytes) -> None:
        _pwrite_all(self._check_open(), data, offset)

    def zero(self, offset: int, length: int) -> None:
        fd = self._check_open()
        if not punch_hole(fd, offset, length):
            zero_written(fd, offset, length)

    def allocated(self) -> int:
        return os.fstat(self._check_open()).st_blocks * 512

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
