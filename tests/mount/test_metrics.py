"""`metrics` on a real mount, and `nvmefs serve-metrics` serving it over HTTP."""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import NVMEFS, foreground, sh

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def values(text: str, name: str) -> dict[str, float]:
    """controller -> value of one series."""
    return {s.labels["controller"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


@contextlib.contextmanager
def serving(mnt, listen: str = "127.0.0.1:0"):
    """`nvmefs serve-metrics` in the background; yields (process, base URL)."""
    proc = subprocess.Popen([NVMEFS, "serve-metrics", "--listen", listen, str(mnt)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=30):
                raise AssertionError("serve-metrics said nothing in 30 s")
        line = proc.stdout.readline()
        assert line.startswith("serving "), (line, proc.poll())
        yield proc, line.split(" at ")[1].strip().removesuffix("/metrics")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def get(url: str, method: str = "GET"):
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=15) as r:
        return r.status, r.headers, r.read()


def raw_exchange(base: str, data: bytes, half_close: bool = True) -> bytes:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_the_file_from_a_shell(mnt, tmp_path):
    with foreground(mnt, "sim", "sim:namespaces=2,size=128M"):
        # the node_exporter textfile collector recipe of the README
        prom = tmp_path / "nvmefs.prom"
        sh(f"cat metrics > {prom}.$$ && mv {prom}.$$ {prom}", mnt)
        text = prom.read_text()
        assert values(text, "nvmefs_controller_up") == {"nvme0": 1, "nvme1": 1}
        sizes = [s for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "nvmefs_namespace_size_bytes" and s.labels["controller"] == "nvme1"]
        assert [(s.labels["nsid"], s.value) for s in sizes] == [("1", 128 << 20), ("2", 128 << 20)]
        assert sorted(p.name for p in mnt.iterdir()) == ["metrics", "nvme0", "nvme1"]


def test_serve_metrics(mnt):
    with foreground(mnt, "sim", "sim:namespaces=2"), serving(mnt) as (proc, base):
        status, headers, body = get(base + "/metrics")
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE
        assert int(headers["Content-Length"]) == len(body)
        text = body.decode()
        assert values(text, "nvmefs_controller_up") == {"nvme0": 1, "nvme1": 1}
        assert values(text, "nvmefs_smart_temperature_kelvin") == {"nvme0": 313, "nvme1": 313}
        assert get(base + "/metrics?x=1", "HEAD")[2] == b""

        with pytest.raises(urllib.error.HTTPError) as e:
            get(base + "/other")
        assert e.value.code == 404

        # a client that sends nothing holds nobody up; bad requests get 400 and 431
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=15):
            assert raw_exchange(base, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
            assert raw_exchange(base, b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n") \
                .startswith(b"HTTP/1.1 400 ")
            assert raw_exchange(base, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 20000 +
                                b"\r\n\r\n", half_close=False).startswith(b"HTTP/1.1 431 ")
            assert raw_exchange(base, b"POST /metrics HTTP/1.1\r\n\r\n") \
                .startswith(b"HTTP/1.1 405 ")
            answer = raw_exchange(base, b"GET /metrics HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n# HELP nvmefs_" in answer

        # the server lives on, and each request reads the file anew
        sh("echo 'opcode=0x06 cdw10=1 data_len=4096' > nvme1/passthru/admin", mnt)
        status, _, body = get(base + "/metrics")
        assert status == 200 and proc.poll() is None
        assert values(body.decode(), "nvmefs_passthru_batches_total") == {"nvme0": 0, "nvme1": 1}

        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"], input=body,
                               capture_output=True, timeout=60)
            assert r.returncode == 0 and r.stdout == r.stderr == b"", r
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.skipif(not shutil.which("promtool"),
                    reason="promtool is not installed (Debian: prometheus, ~96 MB installed)")
def test_promtool_accepts_the_file(mnt):
    with foreground(mnt, "sim", "sim:namespaces=2", "sim:lba=4096"):
        r = subprocess.run(["promtool", "check", "metrics"], input=(mnt / "metrics").read_bytes(),
                           capture_output=True, timeout=60)
        assert r.returncode == 0 and r.stdout == r.stderr == b"", r


def test_serve_metrics_refuses_what_is_not_a_mount(tmp_path):
    r = subprocess.run([NVMEFS, "serve-metrics", "--listen", "127.0.0.1:0", str(tmp_path)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no such file" in r.stderr
    r = subprocess.run([NVMEFS, "serve-metrics", "--listen", "nowhere", str(tmp_path)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "HOST:PORT" in r.stderr
