"""Pieces: answers held as the parts they were made of, read in any sizes."""

from __future__ import annotations

import random
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefs.fs.chunks import TRIM, Pieces


@settings(deadline=None, max_examples=60)
@given(st.lists(st.lists(st.integers(0, 20_000), max_size=10), max_size=6),
       st.lists(st.integers(1, 300_000), min_size=1), st.integers(0, 2**32))
def test_parts_read_back_in_order_whatever_the_read_sizes(batches, sizes, seed):
    """Batches of parts absorbed between reads come out as one stream."""
    rnd = random.Random(seed)
    p, whole, out = Pieces([b"head"]), bytearray(b"head"), bytearray()
    for i, lengths in enumerate(batches):
        parts = [rnd.randbytes(n) for n in lengths]
        whole += b"".join(parts)
        p.absorb(parts)
        assert len(p) == len(whole) - len(out)
        got = p.take(sizes[i % len(sizes)])
        assert len(got) == min(sizes[i % len(sizes)], len(whole) - len(out))
        out += got
    while len(p):
        out += p.take(rnd.choice(sizes) + 997)      # bytes at a time only in the batches
    assert out == whole and p.take(4096) == b""


def test_a_read_inside_one_part_is_a_view_of_it():
    answer = bytes(range(256)) * 16
    p = Pieces([answer])
    view = p.take(100)
    assert isinstance(view, memoryview) and view.obj is answer and bytes(view) == answer[:100]


def test_a_taken_part_is_let_go_at_once():
    first, second = b"a" * 4112, b"b" * 4112
    p = Pieces([first, second])
    held = sys.getrefcount(first)
    assert bytes(p.take(4112 + 10)) == b"a" * 4112 + b"b" * 10
    assert sys.getrefcount(first) == held - 1       # Pieces no longer holds it


def test_taken_parts_are_let_go():
    answers = [bytes([i % 251]) * 4112 for i in range(3 * TRIM)]
    p = Pieces()
    p.absorb(answers)
    stream = b"".join(answers)
    taken = bytearray()
    while len(p) > 4112:
        taken += p.take(128 << 10)          # 32 answers a read, as `cat` reads
    assert len(p._parts) < 2 * TRIM         # the first TRIM parts and more are gone
    taken += p.take(1 << 20)
    assert taken == stream


def test_reads_go_on_after_every_part_was_taken_and_let_go():
    p = Pieces()
    for round_ in range(3):
        answers = [bytes([round_]) * 4112] * (TRIM + 5)
        p.absorb(answers)
        taken = bytearray()
        while len(p):
            taken += p.take(128 << 10)
        assert taken == b"".join(answers) and p._parts == []

