"""The zones of a simulated zoned namespace (ZNS Command Set 1.1 §2.1): each zone's
state and write pointer, the checks a write or an append meets, the zone actions of
Zone Management Send and the report of Zone Management Receive. Statuses are
returned (0: success); the device does the media work.

Zones are Sequential Write Required; every zone has the zone size as capacity but
the last, which ends with the namespace. No limits on open or active zones (MAR,
MOR: none), no zone descriptor extensions, no zone random write area.
"""

from __future__ import annotations

from ...spec import status as S
from ...spec import zones as Z

# what each action does to a zone in each state (a state not listed: Invalid Zone
# State Transition); ZNS 1.1 §2.1.1, as QEMU's controller does it
TRANSITIONS = {
    Z.ZSA_CLOSE: {Z.ZS_IMPL_OPEN: Z.ZS_CLOSED, Z.ZS_EXPL_OPEN: Z.ZS_CLOSED,
                  Z.ZS_CLOSED: Z.ZS_CLOSED},
    Z.ZSA_FINISH: {Z.ZS_EMPTY: Z.ZS_FULL, Z.ZS_IMPL_OPEN: Z.ZS_FULL, Z.ZS_EXPL_OPEN: Z.ZS_FULL,
                   Z.ZS_CLOSED: Z.ZS_FULL, Z.ZS_FULL: Z.ZS_FULL},
    Z.ZSA_OPEN: {Z.ZS_EMPTY: Z.ZS_EXPL_OPEN, Z.ZS_IMPL_OPEN: Z.ZS_EXPL_OPEN,
                 Z.ZS_CLOSED: Z.ZS_EXPL_OPEN, Z.ZS_EXPL_OPEN: Z.ZS_EXPL_OPEN},
    Z.ZSA_RESET: {Z.ZS_EMPTY: Z.ZS_EMPTY, Z.ZS_IMPL_OPEN: Z.ZS_EMPTY, Z.ZS_EXPL_OPEN: Z.ZS_EMPTY,
                  Z.ZS_CLOSED: Z.ZS_EMPTY, Z.ZS_FULL: Z.ZS_EMPTY},
    Z.ZSA_OFFLINE: {Z.ZS_READ_ONLY: Z.ZS_OFFLINE, Z.ZS_OFFLINE: Z.ZS_OFFLINE},
}
# with Select All, the zones an action applies to (the others are left alone)
SELECT_ALL = {
    Z.ZSA_CLOSE: {Z.ZS_IMPL_OPEN, Z.ZS_EXPL_OPEN},
    Z.ZSA_FINISH: {Z.ZS_IMPL_OPEN, Z.ZS_EXPL_OPEN, Z.ZS_CLOSED},
    Z.ZSA_OPEN: {Z.ZS_CLOSED},
    Z.ZSA_RESET: {Z.ZS_IMPL_OPEN, Z.ZS_EXPL_OPEN, Z.ZS_CLOSED, Z.ZS_FULL},
    Z.ZSA_OFFLINE: {Z.ZS_READ_ONLY},
}
# a write or an append to a zone in these states fails so
WRITE_REFUSED = {Z.ZS_FULL: S.ZONE_IS_FULL, Z.ZS_READ_ONLY: S.ZONE_IS_READ_ONLY,
                 Z.ZS_OFFLINE: S.ZONE_IS_OFFLINE}


class ZoneSet:
    """The zones of one namespace of `blocks` logical blocks, `zone_blocks` each."""

    def __init__(self, blocks: int, zone_blocks: int):
        self.blocks, self.zone_blocks = blocks, zone_blocks
        self.count = -(-blocks // zone_blocks)
        self.state = bytearray([Z.ZS_EMPTY]) * self.count
        self.wp = [i * zone_blocks for i in range(self.count)]

    def start(self, i: int) -> int:
        return i * self.zone_blocks

    def capacity(self, i: int) -> int:
        return min(self.zone_blocks, self.blocks - self.start(i))

    def _check(self, i: int, slba: int, nlb: int) -> int:
        """The status of writing `nlb` blocks at `slba` into zone `i`."""
        if slba + nlb > self.start(i) + self.capacity(i):
            return S.ZONE_BOUNDARY_ERROR
        return WRITE_REFUSED.get(self.state[i], S.SUCCESS)

    def _advance(self, i: int, nlb: int) -> None:
        """`nlb` blocks written at zone i's write pointer: an empty or closed zone opens
        implicitly, a zone written to its capacity is full."""
        if self.state[i] in (Z.ZS_EMPTY, Z.ZS_CLOSED):
            self.state[i] = Z.ZS_IMPL_OPEN
        self.wp[i] += nlb
        if self.wp[i] >= self.start(i) + self.capacity(i):
            self.state[i] = Z.ZS_FULL

    def write(self, slba: int, nlb: int) -> int:
        """A Write (or Write Zeroes) of blocks the namespace has: it must fit in one
        zone's capacity, at its write pointer; done, the pointer moves on."""
        i = slba // self.zone_blocks
        status = self._check(i, slba, nlb) or (S.ZONE_INVALID_WRITE if slba != self.wp[i] else 0)
        if not status:
            self._advance(i, nlb)
        return status

    def append(self, zslba: int, nlb: int) -> tuple[int, int]:
        """Where a Zone Append to the zone starting at `zslba` goes: (status, LBA).
        Nothing moves until `appended`."""
        i = zslba // self.zone_blocks
        if zslba >= self.blocks or zslba != self.start(i):
            return S.INVALID_FIELD, 0
        lba = self.wp[i]
        status = WRITE_REFUSED.get(self.state[i]) or self._check(i, lba, nlb)
        return status, (0 if status else lba)

    def appended(self, lba: int, nlb: int) -> None:
        """A Zone Append's data is going to `lba`: its zone's write pointer moves on."""
        self._advance(lba // self.zone_blocks, nlb)

    def send(self, zsa: int, slba: int, select_all: bool) -> tuple[int, list[tuple[int, int]]]:
        """Zone Management Send: (status, the (SLBA, blocks) a reset leaves to zero)."""
        moves = TRANSITIONS.get(zsa)
        if moves is None:
            return S.INVALID_FIELD, []      # no descriptor extensions, no ZRWA
        if select_all:
            zones = [i for i in range(self.count) if self.state[i] in SELECT_ALL[zsa]]
        else:
            i = slba // self.zone_blocks
            if slba >= self.blocks:
                return S.LBA_RANGE, []
            if slba != self.start(i):
                return S.INVALID_FIELD, []
            if self.state[i] not in moves:
                return S.INVALID_ZONE_STATE_TRANSITION, []
            zones = [i]
        erased = []
        for i in zones:
            state = moves[self.state[i]]
            if zsa == Z.ZSA_RESET and self.wp[i] != self.start(i):
                erased.append((self.start(i), self.wp[i] - self.start(i)))
            if state == Z.ZS_EMPTY:
                self.wp[i] = self.start(i)
            elif state == Z.ZS_FULL:
                self.wp[i] = self.start(i) + self.capacity(i)
            self.state[i] = state
        return S.SUCCESS, erased

    def descriptor(self, i: int) -> bytes:
        state = self.state[i]
        wp = Z.WP_INVALID if state in Z.NO_WRITE_POINTER else self.wp[i]
        return Z.encode_zone(self.start(i), self.capacity(i), state, wp)

    def report(self, slba: int, zra: int, zrasf: int, partial: bool, length: int
               ) -> tuple[int, bytes]:
        """Zone Management Receive: (status, `length` bytes of report) of the zones from
        the one holding `slba` on, in the states `zrasf` selects."""
        if slba >= self.blocks:
            return S.LBA_RANGE, b""
        if zra != Z.ZRA_REPORT or (zrasf != Z.ZRASF_ALL and zrasf not in Z.ZRASF_STATES) \
                or length < Z.REPORT_HEADER_SIZE:
            return S.INVALID_FIELD, b""
        wanted = Z.ZRASF_STATES.get(zrasf)
        room = Z.zones_that_fit(length)
        listed, count = [], 0
        for i in range(slba // self.zone_blocks, self.count):
            if wanted is not None and self.state[i] != wanted:
                continue
            if partial and count == room:
                break               # Partial Report: count only the zones listed
            if len(listed) < room:
                listed.append(self.descriptor(i))
            count += 1
        return S.SUCCESS, Z.encode_report(count, listed, length)
