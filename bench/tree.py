"""Reading files of the tree through a real mount, against the same work in-process.

Peer: the same controller call plus rendering, directly in Python without FUSE.
Figures: microseconds per open+read+close of identify.json, log/smart and log/smart.json.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from nvmefs.backends import opened
from nvmefs.spec import render

ROUNDS = 2000


def per_op(fn, rounds: int = ROUNDS) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def direct() -> dict[str, float]:
    async def timed(fn) -> float:
        start = time.perf_counter()
        for _ in range(ROUNDS):
            await fn()
        return (time.perf_counter() - start) / ROUNDS * 1e6

    async def run():
        async with opened("sim") as ctrl:
            async def identify_json():
                render.render("id-ctrl", ctrl.id_ctrl_raw, "json")

            async def smart():
                await ctrl.get_log(2, 512)

            async def smart_json():
                render.render("smart", (await ctrl.get_log(2, 512)).data, "json")

            return {"identify.json": await timed(identify_json), "log/smart": await timed(smart),
                    "log/smart.json": await timed(smart_json)}
    return trio.run(run)


def through_mount() -> dict[str, float]:
    nvmefs = str(Path(sys.executable).parent / "nvmefs")
    with tempfile.TemporaryDirectory() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        subprocess.run([nvmefs, "mount", mnt, "sim"], check=True)
        try:
            out = {}
            for name in ("identify.json", "log/smart", "log/smart.json"):
                path = os.path.join(mnt, "nvme0", name)

                def read(path=path):
                    with open(path, "rb", buffering=0) as f:
                        while f.read(65536):
                            pass
                out[name] = per_op(read)
            return out
        finally:
            subprocess.run([nvmefs, "umount", mnt], check=True)


def main() -> None:
    mine, peer = through_mount(), direct()
    print(f"{'file':<18}{'mount µs/read':>15}{'direct µs':>12}{'ratio':>8}")
    for name in mine:
        print(f"{name:<18}{mine[name]:>15.1f}{peer[name]:>12.1f}{mine[name] / peer[name]:>8.1f}")


if __name__ == "__main__":
    main()
