"""A mailbox's request stream (DESIGN §3): a stateful sans-IO parser, as h11 keeps
a connection.

The bytes written on an open mailbox are one stream. `receive_data` adds to it;
`next_request(target)` returns the next whole, valid request, or NEED_DATA, or
the RequestError of a bad one (returned, not raised). A text request is whole
at its newline; a binary one once its 64 bytes and all its host-to-controller
data and metadata are in, and its header is checked as soon as its 64 bytes
are, so a bad one never waits for its data. Blank and `#` comment lines are
skipped.

Text or binary is decided per request by its first byte: one that cannot start
text is binary; one that can is text unless it is also an opcode a binary entry
could carry here (nvmefs or the effects log knows it) and the next byte (the
entry's flags) is zero; so a lone such byte waits for the next.

Offsets count bytes from the session's start. After an error, next_request
returns that same error until `rewind` (usually to error.start) or `discard`;
parsing then resumes at `consumed`, with whatever is received next.
"""

from __future__ import annotations

import enum
import errno

from .passthru import (TEXT_START, PassthruRequest, RequestError, Target, parse_header, parse_text_line,
                       plausible_opcode, validate)
from .queue import SQE_SIZE

MAX_LINE = 64 << 10     # bytes of a text line with its newline; longer is E2BIG


class _Event(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _Event.NEED_DATA    # next_request: no whole request is buffered yet


class MailboxSession:
    """One open mailbox's stream: `received` bytes given so far, `consumed` of them
    turned into returned requests (or skipped lines), `buffered` the rest, and
    `last_start` where the last returned request or error began."""

    def __init__(self) -> None:
        self._buf = bytearray()     # the stream from _base on
        self._base = 0
        self.consumed = 0           # bytes turned into returned requests (or skipped lines)
        self.last_start = 0         # where the last returned request or error began
        self._last_end = 0          # where that request ends (an error: where it begins)
        self._scan = 0              # the request at `consumed` has no newline before this
        self._error: RequestError | None = None

    @property
    def received(self) -> int:
        return self._base + len(self._buf)

    @property
    def buffered(self) -> int:
        return self.received - self.consumed

    def receive_data(self, data: bytes) -> None:
        drop = self.last_start - self._base      # keep the last request: rewind may give it back
        if drop:
            del self._buf[:drop]
            self._base = self.last_start
        self._buf += data

    def next_request(self, target: Target) -> PassthruRequest | _Event | RequestError:
        """The next request, validated against `target` (the mailbox's current one)."""
        if self._error is not None:
            return self._error
        while True:
            start = self.consumed
            try:
                req, end = self._parse(target, start - self._base)
            except RequestError as e:
                e.start = start
                self._error = e
                self.last_start = self._last_end = start
                return e
            if req is NEED_DATA:
                return NEED_DATA
            self.consumed = self._scan = end
            if req is not None:         # None: a blank or comment line
                self.last_start, self._last_end = start, end
                return req

    def rewind(self, pos: int) -> None:
        """Forget every byte at offset `pos` and after (pos >= last_start). A request
        returned last that they belong to is returned no more: consumed goes back to
        its start and its bytes before `pos` wait for the rest again."""
        if not self.last_start <= pos <= self.received:
            raise ValueError(f"cannot rewind to {pos}: only to {self.last_start}..{self.received}")
        if pos < self._last_end:
            self.consumed = self._last_end = self.last_start
        else:
            self.consumed = min(self.consumed, pos)
        del self._buf[pos - self._base:]
        self._scan = self.consumed
        self._error = None

    def discard(self) -> None:
        """Forget everything buffered; nothing before `received` can be rewound to."""
        end = self.received
        self._buf.clear()
        self._base = self.consumed = self.last_start = self._last_end = self._scan = end
        self._error = None

    # ---------------------------------------------------------------- framing

    def _parse(self, target: Target, i: int) -> tuple[PassthruRequest | _Event | None, int]:
        """The request at _buf[i:] and the stream offset after it."""
        buf = self._buf
        if i == len(buf):
            return NEED_DATA, i
        first = buf[i]
        if first in TEXT_START:
            ambiguous = plausible_opcode(target, first)
            if ambiguous and i + 1 == len(buf):
                return NEED_DATA, i
            if not (ambiguous and buf[i + 1] == 0):
                return self._line(target, i)
        # a binary entry: whole once its 64 bytes, then its data and its metadata (if it
        # sends any), are in
        if len(buf) - i < SQE_SIZE:
            return NEED_DATA, i
        req = parse_header(buf, i, target.queue)
        validate(req, target)
        data_end = i + SQE_SIZE + req.data_out_len
        end = data_end + req.metadata_out_len
        if len(buf) < end:
            return NEED_DATA, i
        if end > i + SQE_SIZE:
            with memoryview(buf) as view:
                req = req._replace(data_out=view[i + SQE_SIZE:data_end].tobytes(),
                                   metadata_out=view[data_end:end].tobytes())
        return req, self._base + end

    def _line(self, target: Target, i: int) -> tuple[PassthruRequest | _Event | None, int]:
        buf = self._buf
        nl = buf.find(b"\n", self._scan - self._base, i + MAX_LINE)
        if nl < 0:
            if len(buf) - i >= MAX_LINE:
                raise RequestError(errno.E2BIG, f"no newline in {MAX_LINE} bytes of text")
            self._scan = self.received
            return NEED_DATA, i
        req = parse_text_line(buf[i:nl + 1], target.queue)
        if req is not None:
            validate(req, target)
        return req, self._base + nl + 1
