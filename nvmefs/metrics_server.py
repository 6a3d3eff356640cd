"""`nvmefs serve-metrics`: MNT/metrics over HTTP for a Prometheus scrape.

A small HTTP/1.1 server on trio, standard library only: `GET /metrics` (or
HEAD) answers the file as read at that request, with the exposition format's
content type; any other path is 404, another method 405, a request that is
not HTTP 400 (431 when its head is too large). Every connection carries one
request and is closed after its answer (`Connection: close`).

No client can hang it or make it grow: a request head is at most MAX_HEAD
bytes and must arrive within REQUEST_TIMEOUT; a whole exchange ends within
CONNECTION_TIMEOUT (a client that does not read its answer is dropped); at
most MAX_CONNECTIONS are served at once (the rest wait in the listen backlog);
reading the file is bounded by READ_TIMEOUT (503 past it) and MAX_BODY.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import trio

log = logging.getLogger(__name__)

MAX_HEAD = 8192             # bytes of request line and headers
REQUEST_TIMEOUT = 10.0      # seconds for a client to send its request head
CONNECTION_TIMEOUT = 30.0   # seconds for a whole exchange, the answer's sending included
READ_TIMEOUT = 20.0         # seconds reading MNT/metrics may take (a mount that hangs)
MAX_BODY = 64 << 20         # bytes of MNT/metrics answered at most
MAX_CONNECTIONS = 64        # exchanges served at once
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*")


class BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str


def parse_listen(text: str) -> tuple[str | None, int]:
    """(host or None for every address, port) of HOST:PORT, [V6]:PORT or :PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT (e.g. 127.0.0.1:9857)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--listen {text!r}: an IPv6 address goes in brackets: [::1]:9857")
    return host or None, int(port)


def parse_head(head: bytes) -> Request:
    """The request line and headers (without the blank line); BadRequest if they are
    not HTTP/1.x's."""
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    match = VERSION.fullmatch(version)
    if not match:
        raise BadRequest(400, "malformed HTTP version")
    if match[1] != b"1":
        raise BadRequest(505, "only HTTP/1.x")
    for line in lines[1:]:
        if not HEADER.fullmatch(line):
            raise BadRequest(400, "malformed header line")
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request target is not ASCII") from None
    if any(c <= " " or c == "\x7f" for c in text):
        raise BadRequest(400, "malformed request target")
    if not (text.startswith("/") or text.startswith("http://") or text.startswith("https://")):
        raise BadRequest(400, "request target is neither a path nor a URL")
    path = urlsplit(text).path or "/"
    return Request(method.decode("ascii"), path)


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
             head_only: bool = False, extra: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store",
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head_only else body)


HEAD_END = re.compile(rb"\r?\n\r?\n")


async def read_head(stream: trio.abc.ReceiveStream) -> bytes:
    """Bytes up to the blank line ending a request head (not included; lines may end
    in CRLF or LF); BadRequest if more than MAX_HEAD come first or the client closes
    before."""
    buf = bytearray()
    while True:
        end = HEAD_END.search(buf)
        if end is not None:
            if end.start() > MAX_HEAD:
                break
            return bytes(buf[:end.start()])
        if len(buf) > MAX_HEAD + 4:
            break
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise BadRequest(400, "connection closed inside the request")
        buf += chunk
    raise BadRequest(431, f"request head larger than {MAX_HEAD} bytes")


def read_file(path: str) -> bytes:
    """The file as one open's snapshot (nvmefs files are read to EOF)."""
    with open(path, "rb", buffering=0) as f:
        chunks, size = [], 0
        while chunk := f.read(1 << 20):
            size += len(chunk)
            if size > MAX_BODY:
                raise OSError(errno.EFBIG, f"{path} is larger than {MAX_BODY} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


class Server:
    def __init__(self, metrics_path: str):
        self.metrics_path = metrics_path
        self.readers = trio.CapacityLimiter(4)      # threads reading the file at once

    async def metrics(self) -> tuple[int, bytes]:
        with trio.move_on_after(READ_TIMEOUT):
            try:
                return 200, await trio.to_thread.run_sync(
                    read_file, self.metrics_path, limiter=self.readers, abandon_on_cancel=True)
            except OSError as e:
                log.warning("%s: %s", self.metrics_path, e.strerror or e)
                return 503, f"{self.metrics_path}: {e.strerror or e}\n".encode()
        log.warning("%s: no answer after %.0f s", self.metrics_path, READ_TIMEOUT)
        return 503, f"{self.metrics_path}: no answer after {READ_TIMEOUT:.0f} s\n".encode()

    async def answer(self, head: bytes) -> bytes:
        try:
            req = parse_head(head)
        except BadRequest as e:
            return response(e.status, f"{e}\n".encode())
        if req.method not in ("GET", "HEAD"):
            return response(405, b"only GET and HEAD\n", extra=("Allow: GET, HEAD",))
        head_only = req.method == "HEAD"
        if req.path != PATH:
            return response(404, f"not found; the metrics are at {PATH}\n".encode(),
                            head_only=head_only)
        status, body = await self.metrics()
        if status != 200:
            return response(status, body, head_only=head_only)
        return response(200, body, CONTENT_TYPE, head_only=head_only)

    async def exchange(self, stream: trio.SocketStream) -> None:
        """One request and its answer, then close."""
        async with stream:
            with trio.move_on_after(CONNECTION_TIMEOUT):
                try:
                    with trio.fail_after(REQUEST_TIMEOUT):
                        head = await read_head(stream)
                except BadRequest as e:
                    answer = response(e.status, f"{e}\n".encode())
                except trio.TooSlowError:
                    answer = response(408, b"request head not received in time\n")
                else:
                    answer = await self.answer(head)
                await stream.send_all(answer)
                await linger(stream)

    async def serve(self, listeners: list[trio.SocketListener],
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
        slots = trio.Semaphore(MAX_CONNECTIONS)

        async def handle(stream: trio.SocketStream) -> None:
            try:
                await self.exchange(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                log.debug("connection: %s", e)
            finally:
                slots.release()

        async def accept(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
            while True:
                await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as e:    # EMFILE and the like: let connections end first
                    slots.release()
                    log.warning("accept: %s", e)
                    await trio.sleep(0.1)
                    continue
                except BaseException:
                    slots.release()
                    raise
                nursery.start_soon(handle, stream)

        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(accept, listener, nursery)
            task_status.started()


LINGER = 1.0                # seconds to take what a client still sends after its answer
LINGER_BYTES = 1 << 20      # at most, read in 4 KiB pieces and dropped


async def linger(stream: trio.SocketStream) -> None:
    """Close the sending side, then read (and drop) what the client still sends for a
    moment: closing with unread bytes would reset the connection, and the client could
    lose the answer (a 400 to a request it has not finished sending)."""
    await stream.send_eof()
    taken = 0
    with trio.move_on_after(LINGER):
        while taken < LINGER_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            taken += len(chunk)


def address_of(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run(mountpoint: str, listen: str, say: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM; `say` gets the addresses listened on."""
    host, port = parse_listen(listen)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as e:
        raise ValueError(f"cannot listen on {listen}: {e.strerror or e}") from None
    server = Server(os.path.join(mountpoint, "metrics"))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            for listener in listeners:
                say(f"serving {server.metrics_path} at http://{address_of(listener)}{PATH}")
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(mountpoint: str, listen: str) -> int:
    """The `nvmefs serve-metrics` command."""
    try:
        parse_listen(listen)
    except ValueError as e:
        print(f"nvmefs serve-metrics: {e}", file=sys.stderr)
        return 1
    path = os.path.join(mountpoint, "metrics")
    if not os.path.isfile(path):
        print(f"nvmefs serve-metrics: {path}: no such file (is {mountpoint} an nvmefs mount?)",
              file=sys.stderr)
        return 1

    def say(msg: str) -> None:
        print(msg, flush=True)

    try:
        trio.run(run, mountpoint, listen, say)
    except (ValueError, OSError) as e:
        print(f"nvmefs serve-metrics: {e}", file=sys.stderr)
        return 1
    return 0
