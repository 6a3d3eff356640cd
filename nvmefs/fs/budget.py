"""Memory of answers, reserved before a request is admitted (DESIGN §3).

A write is admitted only if everything it can produce (each request's answer,
spec.passthru.answer_size) fits its session's budget and the mount's. Answers
stay reserved until read, or while kept for the next reader of a mailbox.
"""

from __future__ import annotations

from collections import OrderedDict
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

    def reserve(self, n: int) -> bool:
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


class Kept:
    """Answers kept for a later reader (a mailbox's answers to a user's last
    open that wrote), in the mount's memory: at most `cap` bytes each (the
    latest), and the least recently kept go first when new ones need room."""

    def __init__(self, memory: MountMemory, cap: int = SESSION):
        self.memory, self.cap = memory, cap
        self._items: OrderedDict[Hashable, Pieces] = OrderedDict()

    def add(self, key: Hashable, parts: list[bytes], fresh: bool) -> None:
        """Keep `parts` after what `key` holds, or instead of it if `fresh`."""
        if fresh:
            self.drop(key)
        kept = self._items.pop(key, None) or Pieces()
        size = sum(map(len, parts))
        while not self.memory.reserve(size):
            if not self._items:
                self._items[key] = kept
                return          # no room: the batch's own reader still has its answers
            self.drop(next(iter(self._items)))
        kept.extend(parts)
        if len(kept) > self.cap:
            self.memory.release(len(kept.take(len(kept) - self.cap)))
        self._items[key] = kept

    def get(self, key: Hashable) -> Pieces:
        kept = self._items.get(key)
        return kept.copy() if kept is not None else Pieces()

    def size(self, key: Hashable) -> int:
        kept = self._items.get(key)
        return len(kept) if kept is not None else 0

    def drop(self, key: Hashable) -> None:
        kept = self._items.pop(key, None)
        if kept is not None:
            self.memory.release(len(kept))

    def drop_where(self, match: Callable[[Hashable], bool]) -> None:
        for key in [k for k in self._items if match(k)]:
            self.drop(key)
