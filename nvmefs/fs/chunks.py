"""Answers held as the pieces they were made of, so a large answer is never
copied whole to be read a page at a time."""

from __future__ import annotations

from collections import deque
from typing import Iterable


class Pieces:
    def __init__(self, parts: Iterable[bytes] = ()):
        self._parts: deque[bytes] = deque(p for p in parts if p)
        self._offset = 0                    # bytes of the first part already taken
        self.size = sum(map(len, self._parts))

    def __len__(self) -> int:
        return self.size

    def extend(self, parts: Iterable[bytes]) -> None:
        for p in parts:
            if p:
                self._parts.append(p)
                self.size += len(p)

    def take(self, n: int) -> bytes:
        """Up to `n` bytes from the front."""
        out = []
        want = min(n, self.size)
        self.size -= want
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
