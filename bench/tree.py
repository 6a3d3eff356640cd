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

from nvmefs.backends import open_controller
from nvmefs.spec import render

ROUNDS = 2000


def per_op(fn, rounds: int = ROUNDS) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def direct() -> dict[str, float]:
    async def run():
        ctrl = await open_controller("sim")
        out = {}
        t0 = time.perf_counter()
        for _ in range(ROUNDS):
            render.render("id-ctrl", ctrl.id_ctrl_raw, "json")
        out["identify.json"] = (time.perf_counter() - t0) / ROUNDS * 1e6
        t0 = time.perf_counter()
        for _ in range(ROUNDS):
            await ctrl.get_log(2, 512)
        out["log/smart"] = (time.perf_counter() - t0) / ROUNDS * 1e6
        t0 = time.perf_counter()
        for _ in range(ROUNDS):
            render.render("smart", (await ctrl.get_log(2, 512)).data, "json")
        out["log/smart.json"] = (time.perf_counter() - t0) / ROUNDS * 1e6
        await ctrl.aclose()
        return out
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
