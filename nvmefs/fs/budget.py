"""Memory of answers, reserved before a request is admitted (DESIGN §3).

A write is admitted only if everything it can produce (each request's answer,
spec.passthru.answer_size) fits its session's budget and the mount's. Answers
stay reserved until read, or while kept for the next reader of a mailbox.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Hashable

from .chunks import Pieces

SESSION = 64 << 20          # bytes one open mailbox may hold in answers (default)
MOUNT = 512 << 20           # bytes the whole mount may hold (--max-buffer, default)


@dataclass
class MountMemory:
    limit: int = MOUNT
    used: int = 0
    peak: int = 0
    refused: int = 0
    # frees memory that only waits for a later reader (Kept), least recently kept first
    reclaim: Callable[[int], None] | None = None

    def reserve(self, n: int) -> bool:
        if self.used + n > self.limit and self.reclaim is not None:
            self.reclaim(self.used + n - self.limit)
        if self.used + n > self.limit:
            self.refused += 1
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, n: int) -> None:
        self.used -= n
        assert self.used >= 0, "released more than was reserved"

    def statistics(self) -> dict[str, int]:
        return {"limit": self.limit, "used": self.used, "peak": self.peak, "refused": self.refused}


class Budget:
    """One session's share: at most `limit` bytes, drawn from the mount's memory."""

    def __init__(self, memory: MountMemory, limit: int = SESSION):
        self.memory, self.limit, self.used = memory, limit, 0

    def reserve(self, n: int) -> bool:
        if self.used + n > self.limit or not self.memory.reserve(n):
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used -= n
        self.memory.release(n)

    def close(self) -> None:
        self.release(self.used)


class _Answers:
    """One key's kept answers, each as its parts, their bytes, and the errno of a
    batch that was lost after them (0: none)."""
    __slots__ = ("answers", "size", "error")

    def __init__(self) -> None:
        self.answers: deque[list[bytes]] = deque()
        self.size = 0
        self.error = 0


class Kept:
    """Answers kept for a later reader (a mailbox's answers to a user's last
    write-only open), in the mount's memory: at most `cap` bytes each, the latest
    whole answers; the least recently kept give way first when new answers,
    kept or not, need the memory."""

    def __init__(self, memory: MountMemory, cap: int = SESSION):
        self.memory, self.cap = memory, cap
        memory.reclaim = self._reclaim
        self._items: OrderedDict[Hashable, _Answers] = OrderedDict()

    def add(self, key: Hashable, answers: list[list[bytes]], fresh: bool, error: int = 0) -> None:
        """Keep `answers` (each the parts of one) after what `key` holds, or instead
        of it if `fresh`; `error`: the errno of a batch lost after them, which a reader
        gets once it has read them."""
        if fresh:
            self.drop(key)
        kept = self._items.pop(key, None) or _Answers()     # popped: never reclaimed for itself
        for answer in answers:
            n = sum(map(len, answer))
            if n > self.cap or not self.memory.reserve(n):
                break           # no room: the batch's own reader still has its answers
            kept.answers.append(answer)
            kept.size += n
            while kept.size > self.cap:
                gone = sum(map(len, kept.answers.popleft()))
                kept.size -= gone
                self.memory.release(gone)
        kept.error = kept.error or error
        self._items[key] = kept

    def error(self, key: Hashable) -> int:
        kept = self._items.get(key)
        return kept.error if kept else 0

    def get(self, key: Hashable) -> Pieces:
        kept = self._items.get(key)
        return Pieces(part for answer in kept.answers for part in answer) if kept else Pieces()

    def size(self, key: Hashable) -> int:
        kept = self._items.get(key)
        return kept.size if kept is not None else 0

    def drop(self, key: Hashable) -> int:
        """Forget `key`'s answers; the bytes freed."""
        kept = self._items.pop(key, None)
        if kept is None:
            return 0
        self.memory.release(kept.size)
        return kept.size

    def drop_where(self, match: Callable[[Hashable], bool]) -> None:
        for key in [k for k in self._items if match(k)]:
            self.drop(key)

    def _reclaim(self, n: int) -> None:
        freed = 0
        while freed < n and self._items:
            freed += self.drop(next(iter(self._items)))
