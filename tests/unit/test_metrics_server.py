"""nvmefs.metrics_server without a mount: parsing, and the server over a plain file."""

import pytest
import trio

from nvmefs import metrics_server as S


def test_parse_listen():
    assert S.parse_listen("127.0.0.1:9857") == ("127.0.0.1", 9857)
    assert S.parse_listen("[::1]:0") == ("::1", 0)
    assert S.parse_listen(":9857") == (None, 9857)
    assert S.parse_listen("localhost:80") == ("localhost", 80)
    for bad in ("9857", "host:", "host:port", "::1:9857", "h:70000"):
        with pytest.raises(ValueError):
            S.parse_listen(bad)


def test_parse_head():
    assert S.parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*") == \
        S.Request("GET", "/metrics")
    assert S.parse_head(b"GET /metrics?a=b HTTP/1.0") == S.Request("GET", "/metrics")
    assert S.parse_head(b"GET http://h:1/metrics HTTP/1.1\nHost: h") == S.Request("GET", "/metrics")
    assert S.parse_head(b"HEAD / HTTP/1.1").path == "/"
    for bad, status in ((b"GARBAGE", 400), (b"GET /metrics", 400), (b"GET  /metrics HTTP/1.1", 400),
                        (b"GET /metrics HTTP/1.1\r\nno colon", 400),
                        (b"GET /metrics HTTP/1.1\r\n folded", 400),
                        (b"G(T /metrics HTTP/1.1", 400), (b"GET metrics HTTP/1.1", 400),
                        (b"GET /m\xe9trics HTTP/1.1", 400), (b"GET /metrics HTTP/2.0", 505),
                        (b"GET /metrics HTTPS/1.1", 400)):
        with pytest.raises(S.BadRequest) as e:
            S.parse_head(bad)
        assert e.value.status == status, bad


async def exchange(port: int, data: bytes, half_close: bool = True) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if half_close:
            await stream.send_eof()
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_serving_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "REQUEST_TIMEOUT", 0.3)
    monkeypatch.setattr(S, "CONNECTION_TIMEOUT", 0.6)
    monkeypatch.setattr(S, "MAX_CONNECTIONS", 4)
    path = tmp_path / "metrics"
    path.write_bytes(b"# HELP a b\n# TYPE a gauge\na 1\n")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(S.Server(str(path)).serve, listeners)
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert status_of(answer) == 200 and body == path.read_bytes()
        assert f"Content-Type: {S.CONTENT_TYPE}".encode() in head
        assert f"Content-Length: {len(body)}".encode() in head and b"Connection: close" in head
        path.write_bytes(b"a 2\n")                  # read anew at each request
        assert (await exchange(port, b"GET /metrics HTTP/1.0\n\n")).endswith(b"\r\n\r\na 2\n")
        assert (await exchange(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")
        assert status_of(await exchange(port, b"GET / HTTP/1.1\r\n\r\n")) == 404
        assert status_of(await exchange(port, b"DELETE /metrics HTTP/1.1\r\n\r\n")) == 405
        assert status_of(await exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n")) \
            == 400
        assert status_of(await exchange(port, b"X" * 100_000, half_close=False)) == 431
        assert status_of(await exchange(port, b"GET /metrics HTTP/1.1\r\n")) == 400  # closed

        # clients that send nothing, fewer than the connection slots: answered 408 on
        # time, and the others meanwhile
        start = trio.current_time()
        async with trio.open_nursery() as clients:
            for _ in range(3):
                async def idle():
                    assert status_of(await exchange(port, b"", half_close=False)) == 408
                clients.start_soon(idle)
            await trio.sleep(0.05)
            for _ in range(5):
                assert status_of(await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200
        assert trio.current_time() - start < 2

        # a client that does not read its (large) answer is dropped after CONNECTION_TIMEOUT
        big = b"a 1\n" * (8 << 20)
        path.write_bytes(big)
        stuck = await trio.open_tcp_stream("127.0.0.1", port)
        await stuck.send_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        await trio.sleep(0.3)                       # it has read the file
        path.write_bytes(b"a 3\n")
        assert (await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).endswith(b"a 3\n")
        await trio.sleep(1.0)
        received = 0
        with trio.fail_after(5):
            try:
                while chunk := await stuck.receive_some(1 << 20):
                    received += len(chunk)
            except trio.BrokenResourceError:
                pass
        assert 0 < received < len(big)
        await stuck.aclose()

        # a file that cannot be read: 503, and the server serves on
        path.unlink()
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 503 and b"No such file" in answer
        nursery.cancel_scope.cancel()
