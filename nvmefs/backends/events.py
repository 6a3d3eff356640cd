"""A controller's asynchronous events, kept for the readers of `events` (DESIGN §5).

Each event is one JSON line. The log keeps the last KEEP of them; every
reader has its own cursor (a count of events), so several readers each see
every event, a reader that opens late sees only new ones, and one that falls
more than KEEP behind is told how many it lost instead of blocking the rest.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

KEEP = 1024


def _stamp(now: float) -> str:
    ms = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z"


@dataclass(frozen=True)
class EventLogStatistics:
    published: int          # events since the controller was opened
    kept: int               # of them still readable


class EventLog:
    def __init__(self, keep: int = KEEP):
        self._lines: deque[bytes] = deque(maxlen=keep)
        self.count = 0                  # events published; a new reader's cursor
        self._changed = trio.Event()

    def publish(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": _stamp(time.time()), **record}, separators=(",", ":"))
        self._lines.append(line.encode() + b"\n")
        self.count += 1
        self._changed.set()
        self._changed = trio.Event()

    def changed(self) -> trio.Event:
        """Set at the next publish."""
        return self._changed

    def since(self, cursor: int) -> tuple[list[bytes], int]:
        """(the lines after `cursor`, how many of those are no longer kept)."""
        oldest = self.count - len(self._lines)
        lost = max(0, oldest - cursor)
        start = max(cursor, oldest) - oldest
        return [self._lines[i] for i in range(start, len(self._lines))], lost

    def statistics(self) -> EventLogStatistics:
        return EventLogStatistics(self.count, len(self._lines))
