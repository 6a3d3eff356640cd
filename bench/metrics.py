"""`metrics` of a mount of 64 simulated controllers: what a scrape costs, and what it
costs the controllers.

Mount: `nvmefs mount MNT sim:null=1` x 64 (daemon mode). After one warm-up scrape
(Identify Namespace is then cached, every SMART page sampled), scrapes run back
to back, open + read to EOF + close as `cat` does, until there were at least
SCRAPES of them and RUN_SECONDS passed. Figures: median and p99 latency; the
commands the scrapes sent to the controllers (the difference of the summed
`nvmefs_commands_submitted_total` between the warm-up's snapshot and the last
one: nothing else uses the mount, so they are the SMART Get Log Pages), which
must be at most 64 per second of wall time (one per controller per second).

Peers, same run: the same SMART information read the uncached way, `log/smart.json`
of all 64 controllers (64 Get Log Pages per round); and a regular file of the
same size in the page cache (the floor of an open + read + close). Also `cat(1)`
processes of `metrics` and of the regular file (fork + exec included). Ratios:
the metrics scrape's median over the peer's. The max column shows the scrapes
that sampled the controllers (once a second; the p99 of a run of over a
thousand scrapes does not).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

NVMEFS = str(Path(sys.executable).parent / "nvmefs")
CONTROLLERS = 64
SCRAPES = 50
RUN_SECONDS = 3.0
PEER_ROUNDS = 30
CAT_RUNS = 20


def read(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        chunks = []
        while chunk := f.read(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def submitted(text: bytes) -> int:
    return int(sum(s.value for f in text_string_to_metric_families(text.decode())
                   for s in f.samples if s.name == "nvmefs_commands_submitted_total"))


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def figures(samples: list[float]) -> tuple[float, float, float]:
    """(median, p99, max) in milliseconds."""
    ms = [s * 1e3 for s in samples]
    return statistics.median(ms), statistics.quantiles(ms, n=100, method="inclusive")[98], max(ms)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        subprocess.run([NVMEFS, "mount", mnt, *["sim:null=1"] * CONTROLLERS], check=True,
                       stdin=subprocess.DEVNULL, timeout=300)
        try:
            metrics = os.path.join(mnt, "metrics")
            first = time.perf_counter()
            warm = read(metrics)
            before = submitted(warm)
            lat, last = [], warm
            while len(lat) < SCRAPES or time.perf_counter() - first < RUN_SECONDS:
                start = time.perf_counter()
                last = read(metrics)
                lat.append(time.perf_counter() - start)
            wall = time.perf_counter() - first
            sent = submitted(last) - before
            smart_files = [os.path.join(mnt, f"nvme{i}", "log", "smart.json")
                           for i in range(CONTROLLERS)]
            peer_smart = timed(lambda: [read(p) for p in smart_files], PEER_ROUNDS)
            regular = os.path.join(tmp, "regular.prom")
            Path(regular).write_bytes(last)
            read(regular)
            peer_file = timed(lambda: read(regular), max(SCRAPES, len(lat)))

            def cat(path: str) -> None:
                subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True, timeout=60)
            cat_metrics = timed(lambda: cat(metrics), CAT_RUNS)
            cat_file = timed(lambda: cat(regular), CAT_RUNS)
        finally:
            subprocess.run([NVMEFS, "umount", mnt], check=True, timeout=60)

    lines = last.count(b"\n")
    print(f"metrics: {CONTROLLERS} sim controllers, {len(last)} bytes, {lines} lines")
    med, p99, top = figures(lat)
    print(f"  {'what':<44}{'median ms':>10}{'p99 ms':>9}{'max ms':>9}{'ratio':>8}")
    print(f"  {f'metrics, {len(lat)} scrapes back to back':<44}{med:>10.2f}{p99:>9.2f}"
          f"{top:>9.2f}")
    for name, samples in ((f"peer: {CONTROLLERS} x log/smart.json", peer_smart),
                          ("peer: regular file, same size", peer_file)):
        m, p, t = figures(samples)
        print(f"  {name:<44}{m:>10.2f}{p:>9.2f}{t:>9.2f}{med / m:>8.2f}")
    cm, cp, ct = figures(cat_metrics)
    fm, fp, ft = figures(cat_file)
    print(f"  {'cat(1) metrics':<44}{cm:>10.2f}{cp:>9.2f}{ct:>9.2f}")
    print(f"  {'cat(1) regular file (peer)':<44}{fm:>10.2f}{fp:>9.2f}{ft:>9.2f}{cm / fm:>8.2f}")
    bound = CONTROLLERS * wall
    verdict = "ok" if sent <= bound else "OVER THE BOUND"
    print(f"  SMART Get Log Pages during {len(lat)} scrapes in {wall:.2f} s: {sent} "
          f"({sent / wall:.1f}/s; bound {CONTROLLERS}/s: {verdict})")
    print(f"  scrapes per SMART read: {len(lat) * CONTROLLERS / max(sent, 1):.1f} "
          f"(uncached, every scrape would send {CONTROLLERS})")


if __name__ == "__main__":
    main()
