"""The vfio driver's per-command CPU cost on this machine, on the register-level model
(no VFIO here; the guest figures are bench/vm.py's part (d)).

4 KiB Reads in batches of 1, 32 and 128, the backend called directly (no FUSE),
on `sim:null=1` (the sim backend: no queues, no PRPs) and on `vfio:sim:null=1`
(the driver: SQEs, PRPs and doorbells in C, the model fetching entries,
walking PRPs and posting completions in Python). CPU time (process_time) per
command; the difference is what the driver and the model add per command.
"""

import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nvmefs.backends import Request, opened  # noqa: E402
from nvmefs.spec.commands import OP_READ, rw  # noqa: E402

SECONDS = 2.0
BATCHES = (1, 32, 128)


async def cost(uri: str, batch: int) -> tuple[float, float]:
    """(commands per second, CPU µs per command)."""
    reqs = [Request("io", rw(OP_READ, 1, 8 * i, 8), data_in_len=4096) for i in range(batch)]
    async with opened(uri) as c:
        for _ in range(50):
            await c.submit_batch(reqs)
        done, wall, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall < SECONDS:
            await c.submit_batch(reqs)
            done += batch
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return done / wall, cpu / done * 1e6


def main() -> None:
    print("4 KiB Reads called directly: commands/s and CPU µs per command")
    print(f"{'batch':>6}{'sim cmd/s':>12}{'sim µs':>8}{'vfio cmd/s':>12}{'vfio µs':>9}"
          f"{'added µs':>10}")
    for batch in BATCHES:
        sim_rate, sim_us = trio.run(cost, "sim:null=1", batch)
        vfio_rate, vfio_us = trio.run(cost, "vfio:sim:null=1?queues=1", batch)
        print(f"{batch:>6}{sim_rate:>12.0f}{sim_us:>8.1f}{vfio_rate:>12.0f}{vfio_us:>9.1f}"
              f"{vfio_us - sim_us:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
