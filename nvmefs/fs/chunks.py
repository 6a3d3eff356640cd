"""Answers held as the pieces they were made of, so a large answer is never
copied whole to be read a page at a time, and a read costs a few steps
whatever the number of answers it takes (the pieces' ends are kept, so the
ones a read covers are found by bisection and joined by one call)."""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate, islice
from typing import Iterable

TRIM = 1024         # the places of taken pieces are dropped once there are this many


class Pieces:
    def __init__(self, parts: Iterable[bytes] = ()):
        self._parts: list[bytes] = []
        self._ends: list[int] = []          # stream offset where each piece ends
        self._head = 0                      # the first piece not wholly taken
        self._pos = 0                       # stream offset of the next byte to take
        self.size = 0
        self.absorb(parts)

    def __len__(self) -> int:
        return self.size

    def absorb(self, parts: Iterable[bytes]) -> None:
        """Append pieces (empty ones are left out)."""
        parts = [p for p in parts if p]
        if not parts:
            return
        start = self._pos + self.size           # where the stream ends now
        self._ends.extend(islice(accumulate(map(len, parts), initial=start), 1, None))
        self._parts.extend(parts)
        self.size += self._ends[-1] - start

    def take(self, n: int) -> bytes | memoryview:
        """Up to `n` bytes from the front: a view of one piece when they lie in it."""
        want = min(n, self.size)
        if not want:
            return b""
        parts, ends, h = self._parts, self._ends, self._head
        pos, stop = self._pos, self._pos + want
        first_start = ends[h] - len(parts[h])
        if stop <= ends[h]:                 # within one piece: no copy
            out = memoryview(parts[h])[pos - first_start:stop - first_start]
            last = h if stop < ends[h] else h + 1
        else:
            last = bisect_left(ends, stop, h)           # the piece holding byte stop - 1
            tail = len(parts[last]) - (ends[last] - stop)
            out = b"".join([memoryview(parts[h])[pos - first_start:], *parts[h + 1:last],
                            memoryview(parts[last])[:tail]])
            if stop == ends[last]:
                last += 1
        self._pos, self.size = stop, self.size - want
        if last > h:                        # let go of the parts taken, at once
            parts[h:last] = [b""] * (last - h)
        self._head = last
        if last >= TRIM and last * 2 >= len(parts):     # and of their places, now and then
            del parts[:last], ends[:last]
            self._head = 0
        return out
