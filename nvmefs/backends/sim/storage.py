"""Namespace media for the simulator: sparse memory or a sparse file.

Unwritten and deallocated ranges read as zeros (the simulator reports
DLFEAT = 1). Both stores take byte offsets already checked against the size.
"""

from __future__ import annotations

import os

CHUNK = 64 * 1024


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
        for index, start, n in self._spans(offset, length):
            if n == CHUNK:
                self._chunks.pop(index, None)
            elif index in self._chunks:
                self._chunks[index][start:start + n] = bytes(n)

    def allocated(self) -> int:
        return len(self._chunks) * CHUNK

    def close(self) -> None:
        self._chunks.clear()


class FileStore:
    """A sparse file of the namespace's size; holes read as zeros."""

    def __init__(self, path: str, size: int):
        self.size = size
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset).ljust(length, b"\0")

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self._fd, data, offset)

    def zero(self, offset: int, length: int) -> None:
        for pos in range(offset, offset + length, CHUNK):
            os.pwrite(self._fd, bytes(min(CHUNK, offset + length - pos)), pos)

    def allocated(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    def close(self) -> None:
        os.close(self._fd)
