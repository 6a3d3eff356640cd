"""Controller Data Queues (NVMe 2.2, TP4159): the Controller Data Queue command
(45h), its feature (21h), Track Send (3Dh), the User Data Migration Queue entry,
and a sans-IO reader of a queue in host memory.

A CDQ is a ring of fixed-size entries the controller writes into host memory.
Each entry carries a phase tag the controller inverts on every pass over the
ring (it starts at 1 over memory the host zeroed), so the host knows the new
entries without a tail pointer; it hands space back with Set Features 21h
(head pointer). The reader here decides which entries are new from the phase
tags alone: bytes in (the ring), whole entries out; no I/O, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

from .commands import FID_CDQ, OP_CDQ, OP_TRACK_SEND, Bits, command, set_features
from .queue import Command

# Controller Data Queue (opcode 45h): CDW10 SEL 7:0, MOS 31:16 (QT in MOS 7:0);
# create: CDW11 PC bit 0, CQS 31:16 (for a UDMQ: the CNTLID to track); delete:
# CDW11 CDQID 15:0; CDW12 CDQSIZE in dwords. CQE DW0 15:0: the CDQID made.
CDQ_SEL, CDQ_MOS, CDQ_QT = Bits(10, 0, 0xFF), Bits(10, 16, 0xFFFF), Bits(10, 16, 0xFF)
CDQ_PC, CDQ_CQS, CDQ_ID = Bits(11, 0, 1), Bits(11, 16, 0xFFFF), Bits(11, 0, 0xFFFF)
CDQSIZE = Bits(12, 0, 0xFFFFFFFF)
SEL_CREATE, SEL_DELETE = 0, 1
QT_UDMQ = 0                 # User Data Migration Queue, the one queue type defined
# Feature 21h: CDW11 CDQID 15:0, ETPT bit 31; Set: CDW12 HP, CDW13 TPT (entry indexes).
# Get returns {le32 hp; le32 tpt} (8 bytes).
FEAT_CDQID, FEAT_ETPT = Bits(11, 0, 0xFFFF), Bits(11, 31, 1)
FEAT_HP, FEAT_TPT = Bits(12, 0, 0xFFFFFFFF), Bits(13, 0, 0xFFFFFFFF)
# Track Send (opcode 3Dh): CDW10 SEL 7:0 (0 log user data changes), MOS 31:16 with
# LACT 3:0 (0 stop, 1 start); CDW11 CDQID 15:0.
TRACK_SEL, TRACK_LACT, TRACK_CDQID = Bits(10, 0, 0xFF), Bits(10, 16, 0xF), Bits(11, 0, 0xFFFF)
TRACK_USER_DATA = 0
LACT_STOP, LACT_START = 0, 1

ENTRY_SIZE = 32             # a User Data Migration Queue entry (format 0)


def create(iova: int, size: int, cntlid: int, qt: int = QT_UDMQ) -> Command:
    """Create a physically contiguous queue of `size` bytes (a multiple of 4) at `iova`."""
    return command(OP_CDQ, 0, (CDQ_SEL, SEL_CREATE), (CDQ_QT, qt), (CDQ_PC, 1),
                   (CDQ_CQS, cntlid), (CDQSIZE, size >> 2), prp1=iova)


def delete(cdqid: int) -> Command:
    return command(OP_CDQ, 0, (CDQ_SEL, SEL_DELETE), (CDQ_ID, cdqid))


def set_head(cdqid: int, head: int, tpt: int | None = None) -> Command:
    """Set Features 21h: entries before `head` are the controller's again; with `tpt`,
    a Tail Pointer Trigger event once the controller's tail reaches that index."""
    etpt = 0 if tpt is None else FEAT_ETPT.put(1)["cdw11"]
    return set_features(FID_CDQ, FEAT_CDQID.put(cdqid)["cdw11"] | etpt,
                        cdw12=head)._replace(cdw13=tpt or 0)


def track_send(cdqid: int, start: bool) -> Command:
    """Track Send, log user data changes: start or stop logging into queue `cdqid`."""
    return command(OP_TRACK_SEND, 0, (TRACK_SEL, TRACK_USER_DATA),
                   (TRACK_LACT, LACT_START if start else LACT_STOP), (TRACK_CDQID, cdqid))


def created_id(dw0: int) -> int:
    return dw0 & 0xFFFF


# ------------------------------------------------------------------ the UDMQ entry

# Format 0 (TP4159; QEMU's and libvfn's layout): NSID, NLB (0's based), SLBA,
# 15 reserved bytes, attributes: CDQP bit 0, ESA 3:1, DLBA bit 5, LBACIA 7:6.
_ENTRY = struct.Struct("<IIQ15xB")
PHASE_OFFSET, PHASE_MASK = 31, 0x01
ESA_SHIFT, DLBA_BIT, LBACIA_SHIFT = 1, 1 << 5, 6
ESA_MASK = 0x7 << ESA_SHIFT
# Entry Sequence Attribute: where the entry sits in a logging session.
ESA_NONE, ESA_FIRST, ESA_LAST_STOPPED, ESA_LAST_SUSPENDED, ESA_LAST_FULL = 0, 1, 2, 3, 7
ESA_NAMES = {ESA_NONE: "range", ESA_FIRST: "first", ESA_LAST_STOPPED: "stopped",
             ESA_LAST_SUSPENDED: "suspended", ESA_LAST_FULL: "full"}
# LBA Change Information Attribute
LBACIA_RANGE, LBACIA_ALL, LBACIA_NONE = 0, 1, 2


class Entry(NamedTuple):
    nsid: int = 0
    slba: int = 0
    nlb: int = 0                # 0's based, as the command that changed the range
    esa: int = ESA_NONE
    dlba: bool = False          # the range was deallocated
    lbacia: int = LBACIA_RANGE

    def record(self) -> tuple[int, int, int, int]:
        """(NSID, NLB, SLBA, attributes without the phase tag): what QueueWriter posts."""
        return (self.nsid, self.nlb, self.slba, self.esa << ESA_SHIFT
                | (DLBA_BIT if self.dlba else 0) | self.lbacia << LBACIA_SHIFT)

    def encode(self, phase: int) -> bytes:
        nsid, nlb, slba, attrs = self.record()
        return _ENTRY.pack(nsid, nlb, slba, attrs | phase & 1)


def decode_entry(raw: bytes) -> dict[str, Any]:
    nsid, nlb, slba, attrs = _ENTRY.unpack(raw[:ENTRY_SIZE])
    esa = attrs >> ESA_SHIFT & 0x7
    return {"nsid": nsid, "slba": slba, "nlb": nlb, "esa": esa,
            "event": ESA_NAMES.get(esa, f"esa{esa}"), "dlba": attrs >> 5 & 1,
            "lbacia": attrs >> LBACIA_SHIFT, "cdqp": attrs & PHASE_MASK}


def _tail(attrs: int) -> str:
    esa = attrs >> ESA_SHIFT & 0x7
    return (f',"esa":{esa},"event":"{ESA_NAMES.get(esa, f"esa{esa}")}","dlba":{attrs >> 5 & 1},'
            f'"lbacia":{attrs >> LBACIA_SHIFT},"cdqp":{attrs & PHASE_MASK}}}\n')


_TAILS = [_tail(a) for a in range(256)]     # the end of a line, by attribute byte
MIN_LINE = 83                               # bytes of the shortest line `jsonl` makes


def json_lines(entries: bytes) -> list[str]:
    """Whole UDMQ entries as JSON lines (the keys of `decode_entry`, in its order)."""
    tails = _TAILS
    return [f'{{"nsid":{nsid},"slba":{slba},"nlb":{nlb}{tails[attrs]}'
            for nsid, nlb, slba, attrs in _ENTRY.iter_unpack(entries)]


def jsonl(entries: bytes) -> bytes:
    return "".join(json_lines(entries)).encode()


# ------------------------------------------------------------------ reading a queue

_NEED_DATA = None


class EntryStream:
    """Whole entries out of a byte stream of them (what `cdq/NAME/entries` gives):
    `receive_data(bytes)`, then `next_entry()` until it returns None (need more)."""

    def __init__(self, entry_size: int = ENTRY_SIZE):
        self.entry_size = entry_size
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def next_entry(self) -> bytes | None:
        end = self._pos + self.entry_size
        if end > len(self._buf):
            return _NEED_DATA
        raw = bytes(self._buf[self._pos:end])
        self._pos = end
        return raw

    def __iter__(self) -> Iterator[bytes]:
        while (raw := self.next_entry()) is not None:
            yield raw

    @classmethod
    def whole(cls, data: bytes, entry_size: int = ENTRY_SIZE) -> list[bytes]:
        """The whole entries of `data` (a partial one at its end is left out)."""
        stream = cls(entry_size)
        stream.receive_data(data)
        return list(stream)

    @property
    def trailing(self) -> int:
        """Bytes of an entry not yet whole."""
        return len(self._buf) - self._pos


def _phase_table(mask: int) -> bytes:
    return bytes(int(bool(b & mask)) for b in range(256))


@dataclass(frozen=True)
class ReaderStatistics:
    head: int               # the next entry to read (an index)
    phase: int              # the phase tag a new entry at head carries
    taken: int              # entries taken since the queue was made
    wraps: int              # passes over the ring


class QueueReader:
    """The host's side of a CDQ ring of `entries` entries of `entry_size` bytes, the
    phase tag at byte `phase_offset` under `phase_mask` (UDMQ: byte 31, bit 0).

    `available(ring)` counts the new entries from the head (across the wrap);
    `take(ring, n)` copies at most `n` of them, whole, and moves the head on
    (flipping the expected phase at the wrap). An entry is new when its phase
    tag is the current pass's: the tag is read before the entry is copied, and
    a controller writes the tag last, so a half-written entry is never new."""

    def __init__(self, entries: int, entry_size: int = ENTRY_SIZE,
                 phase_offset: int = PHASE_OFFSET, phase_mask: int = PHASE_MASK):
        if entries < 2 or entry_size < 1 or not 0 <= phase_offset < entry_size \
                or not 0 < phase_mask < 256:
            raise ValueError("a queue has 2 or more entries and a phase tag inside an entry")
        self.entries, self.entry_size = entries, entry_size
        self.phase_offset = phase_offset
        self._table = _phase_table(phase_mask)
        self.head = 0
        self.phase = 1
        self.taken = 0
        self.wraps = 0

    def _run(self, ring, start: int, end: int, phase: int) -> int:
        """How many entries from index `start` (before `end`) carry `phase`."""
        es = self.entry_size
        tags = bytes(ring[start * es + self.phase_offset:end * es:es]).translate(self._table)
        stale = tags.find(b"\x00" if phase else b"\x01")
        return len(tags) if stale < 0 else stale

    def available(self, ring, limit: int | None = None) -> int:
        """New entries from the head, at most `limit` (default: the whole ring)."""
        limit = self.entries if limit is None else min(limit, self.entries)
        end = min(self.entries, self.head + limit)
        n = self._run(ring, self.head, end, self.phase)
        if n == end - self.head and end == self.entries and n < limit:
            n += self._run(ring, 0, min(self.head, limit - n), self.phase ^ 1)
        return n

    def ready(self, ring) -> bool:
        at = self.head * self.entry_size + self.phase_offset
        return self._table[ring[at]] == self.phase

    def peek(self, ring, limit: int) -> bytes:
        """Up to `limit` new entries, whole, in order; the head stays."""
        n = self.available(ring, limit)
        es, head = self.entry_size, self.head
        first = min(n, self.entries - head)
        out = bytes(ring[head * es:(head + first) * es])
        if n > first:
            out += bytes(ring[:(n - first) * es])
        return out

    def take(self, ring, limit: int) -> bytes:
        """Up to `limit` new entries, whole, in order; the head moves past them."""
        out = self.peek(ring, limit)
        n, head = len(out) // self.entry_size, self.head
        self.head = (head + n) % self.entries
        if head + n >= self.entries:
            self.phase ^= 1
            self.wraps += 1
        self.taken += n
        return out

    def statistics(self) -> ReaderStatistics:
        return ReaderStatistics(self.head, self.phase, self.taken, self.wraps)


class QueueWriter:
    """The controller's side of a CDQ ring (the sim's and the register model's): posts
    entries at the tail with the pass's phase tag, whole entries in one copy per
    run up to the wrap (the sim's host reads in the same thread, so it never sees
    half of one). Full when the tail is one entry behind the head the host last
    gave back (one entry stays free, so a full ring and an empty one differ)."""

    def __init__(self, entries: int, entry_size: int = ENTRY_SIZE):
        self.entries, self.entry_size = entries, entry_size
        self.tail = 0
        self.head = 0
        self.phase = 1
        self.posted = 0

    @property
    def free(self) -> int:
        return (self.head - self.tail - 1) % self.entries

    def set_head(self, head: int) -> bool:
        """The host gives back the entries before `head`; False if `head` is not an
        entry the host may have read (between the last head and the tail)."""
        if not 0 <= head < self.entries or \
                (head - self.head) % self.entries > (self.tail - self.head) % self.entries:
            return False
        self.head = head
        return True

    def post(self, ring, records: list[tuple[int, int, int, int]]) -> None:
        """Write entries (`Entry.record()`s) from the tail on (the caller checked `free`)."""
        es, done, pack = self.entry_size, 0, _ENTRY.pack
        while done < len(records):
            run = records[done:done + self.entries - self.tail]
            phase = self.phase
            blob = b"".join([pack(nsid, nlb, slba, attrs | phase) for nsid, nlb, slba, attrs in run])
            ring[self.tail * es:self.tail * es + len(blob)] = blob
            self.tail += len(run)
            done += len(run)
            if self.tail == self.entries:
                self.tail, self.phase = 0, self.phase ^ 1
        self.posted += len(records)
