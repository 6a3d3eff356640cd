"""One io_uring (SQE128 | CQE32) for NVMe uring_cmd, its completions reaching trio
through an eventfd.

A batch of commands is queued with one C call and one io_uring_enter (more only
when the ring is full); the reaper lands every completion in its batch's slot in
C, so Python hears once per batch, not once per command.
"""

from __future__ import annotations

import errno
import itertools
import os
from typing import Any

import trio

from ..ffi import ffi, lib

RING_ENTRIES = 256
DONE_PER_REAP = 64


class Pending:
    """A batch in the ring: its C batch and slots, and everything the kernel may
    still write to or read from, kept alive until its last completion."""

    def __init__(self, bid: int, n: int, keep: Any):
        self.batch = ffi.new("struct nvmefs_batch *")
        self.batch.id, self.batch.remaining = bid, n
        self.slots = ffi.new("struct nvmefs_slot[]", n)
        self.keep = keep
        self.done = trio.Event()


class Ring:
    def __init__(self, entries: int = RING_ENTRIES):
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        out = ffi.new("struct nvmefs_ring **")
        rc = lib.nvmefs_ring_open(out, entries, self.efd)
        if rc < 0:
            os.close(self.efd)
            raise OSError(-rc, f"io_uring setup with SQE128|CQE32 failed: {os.strerror(-rc)}")
        self.ring = out[0]
        self.free = entries              # commands in flight <= SQ entries; the CQ holds twice that
        self._room = trio.Event()
        self.pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self._done = ffi.new("uint64_t[]", DONE_PER_REAP)
        self._reaped = ffi.new("int *")
        self.submit_calls = 0
        self.completions = 0

    async def submit(self, reqs: Any, n: int, keep: Any) -> Pending:
        """Queue `n` prepared `struct nvmefs_req`; `keep` lives until they complete."""
        p = Pending(next(self._ids), n, keep)
        self.pending[p.batch.id] = p
        start = 0
        while start < n:
            while not self.free:
                room = self._room
                await room.wait()
            k = min(self.free, n - start)
            rc = lib.nvmefs_ring_submit(self.ring, reqs + start, p.slots + start, p.batch, k)
            self.submit_calls += 1
            queued = max(rc, 0)
            self.free -= queued
            if queued < k:          # the kernel refused the rest: fail them here
                for i in range(start + queued, n):
                    p.slots[i].res = rc if rc < 0 else -errno.EAGAIN
                p.batch.remaining -= n - start - queued
                if not p.batch.remaining:
                    self._finish(p.batch.id)
                break
            start += k
        return p

    def _finish(self, bid: int) -> None:
        self.pending.pop(bid).done.set()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The reaper: wake on the eventfd, land completions, wake finished batches."""
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(self.efd)
            try:
                os.eventfd_read(self.efd)
            except BlockingIOError:
                pass
            self.reap()

    def reap(self) -> None:
        while True:
            k = lib.nvmefs_ring_reap(self.ring, self._done, DONE_PER_REAP, self._reaped)
            n = self._reaped[0]
            if n:
                self.free += n
                self.completions += n
                self._room.set()
                self._room = trio.Event()
            for i in range(k):
                self._finish(self._done[i])
            if k < DONE_PER_REAP:
                return

    def statistics(self) -> dict[str, int]:
        return {"ring_submit_calls": self.submit_calls, "ring_completions": self.completions,
                "ring_batches_in_flight": len(self.pending), "ring_free_entries": self.free}

    def close(self) -> None:
        lib.nvmefs_ring_close(self.ring)
        os.close(self.efd)
