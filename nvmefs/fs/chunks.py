"""Answers held as the pieces they were made of, so a large answer is never
copied whole to be read a page at a time."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import accumulate
from typing import Iterable

BLOCK = 1 << 20     # bytes: runs of small answers are joined into blocks up to this (a FUSE read's most)


class Pieces:
    def __init__(self, parts: Iterable[bytes] = ()):
        self._parts: deque[bytes] = deque(p for p in parts if p)
        self._offset = 0                    # bytes of the first part already taken
        self.size = sum(map(len, self._parts))

    def __len__(self) -> int:
        return self.size

    def absorb(self, parts: list[bytes]) -> None:
        """Append the parts of a list this takes over (it is emptied): runs of small
        ones are joined into blocks of at most BLOCK bytes, so that a read takes one
        block without a copy (and without a step per answer), and the parts of each
        block are let go once it is made: the copy costs one block at most."""
        ends = list(accumulate(map(len, parts)))
        if not ends:
            return
        self.size += ends[-1]
        i, n = 0, len(parts)
        while i < n:
            j = max(bisect_right(ends, (ends[i - 1] if i else 0) + BLOCK, i), i + 1)
            self._parts.append(parts[i] if j == i + 1 else b"".join(parts[i:j]))
            parts[i:j] = [b""] * (j - i)
            i = j
        parts.clear()

    def take(self, n: int) -> bytes | memoryview:
        """Up to `n` bytes from the front: a view of one part when they lie in it."""
        want = min(n, self.size)
        if not want:
            return b""
        self.size -= want
        part, start = self._parts[0], self._offset
        if len(part) - start >= want:
            self._offset += want
            if self._offset == len(part):
                self._parts.popleft()
                self._offset = 0
            return memoryview(part)[start:start + want]
        out = []
        while want:
            part = self._parts[0]
            chunk = part[self._offset:self._offset + want]
            out.append(chunk)
            want -= len(chunk)
            self._offset += len(chunk)
            if self._offset == len(part):
                self._parts.popleft()
                self._offset = 0
        return b"".join(out)
