"""The tcp backend against Linux's nvmet-tcp in the QEMU guest of tests/vm, with the
kernel's own NVMe/TCP host (nvme-cli) as the peer on the same subsystem. Only in the
guest (VM_GUEST=1 and /sys/kernel/config): it configures nvmet through configfs."""

import os
import subprocess
import time
from pathlib import Path

import pytest

NQN = "nqn.2026-12.io.nvmefs:guest"
NVMET = Path("/sys/kernel/config/nvmet")
PORT, DISCOVERY_PORT = "4420", "8009"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    if os.environ.get("VM_GUEST") == "1" and os.path.isdir("/sys/kernel/config"):
        return
    skip = pytest.mark.skip(reason="needs the QEMU guest of tests/vm (VM_GUEST=1 and configfs)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class Nvmet:
    """A subsystem with a 256 MiB file namespace on 127.0.0.1:4420, and a port on 8009
    for discovery."""

    def __init__(self, tmp: Path):
        # nvmet, nvmet-tcp and nvme-tcp are loaded by the guest's init (tests/vm/assets.py);
        # what an earlier process of this boot configured is kept
        self.sub = NVMET / "subsystems" / NQN
        self.sub.mkdir(exist_ok=True)
        (self.sub / "attr_allow_any_host").write_text("1")
        ns = self.sub / "namespaces/1"
        ns.mkdir(exist_ok=True)
        if _read(ns / "enable") != "1":
            image = tmp / "ns1.img"
            with open(image, "wb") as f:
                f.truncate(256 << 20)
            (ns / "device_path").write_text(str(image))
            (ns / "buffered_io").write_text("1")        # tmpfs has no O_DIRECT
            (ns / "enable").write_text("1")
        self.ports = {}
        for number, port in (("1", PORT), ("2", DISCOVERY_PORT)):
            p = NVMET / "ports" / number
            self.ports[port] = p
            if p.is_dir():
                continue
            p.mkdir()
            for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"),
                                ("addr_traddr", "127.0.0.1"), ("addr_trsvcid", port)):
                (p / attr).write_text(value)
            self.link(port)

    def link(self, port: str = PORT) -> None:
        (self.ports[port] / "subsystems" / NQN).symlink_to(self.sub)

    def unlink(self, port: str = PORT) -> None:
        (self.ports[port] / "subsystems" / NQN).unlink()

    def kernel_host(self) -> tuple[str, str]:
        """Connect the kernel's host: its /dev/nvmeN and the namespace's block device
        (named by the subsystem under native multipath), once both are there."""
        subprocess.run(["nvme", "connect", "-t", "tcp", "-a", "127.0.0.1", "-s", PORT,
                        "-n", NQN], check=True, capture_output=True, timeout=60)
        for _ in range(300):
            ctrls = [c.name for c in Path("/sys/class/nvme").iterdir()
                     if _read(c / "subsysnqn") == NQN and _read(c / "transport") == "tcp"]
            disks = [b.name for b in Path("/sys/block").glob("nvme*n1")      # not the hidden
                     if _read(b / "device/subsysnqn") == NQN and "c" not in b.name[4:]]  # paths
            if ctrls and disks and Path(f"/dev/{disks[0]}").exists():
                return f"/dev/{ctrls[0]}", f"/dev/{disks[0]}"
            time.sleep(0.1)
        raise AssertionError("the kernel's NVMe/TCP host did not connect")

    def disconnect_kernel_host(self) -> None:
        subprocess.run(["nvme", "disconnect", "-n", NQN], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def nvmet(tmp_path_factory):
    yield Nvmet(tmp_path_factory.mktemp("nvmet"))
