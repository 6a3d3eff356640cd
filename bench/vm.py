"""Boot the QEMU guest of tests/vm and run bench/guest.py in it (real NVMe driver,
QEMU's controller, fio and nvme-cli as peers; an IOMMU for the vfio driver).
`python bench/vm.py vfio` (or `tcp`) runs only that part."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.vm import assets  # noqa: E402
from tests.vm.guest import Guest, NvmeDevice  # noqa: E402


def main() -> None:
    assets.prepare()
    with Guest(nvme=[NvmeDevice(serial="nvmefs0001", size="1G", lba=512)], iommu=True) as g:
        r = g.run("python bench/guest.py " + " ".join(sys.argv[1:]), timeout=1800)
    print(r.stdout, end="")
    if r.returncode:
        print(r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(r.returncode)


if __name__ == "__main__":
    main()
