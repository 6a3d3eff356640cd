"""Handing PCI NVMe functions between nvme and vfio-pci, on a fake sysfs and /proc;
the VFIO structs' sizes; what VfioTransport says before it reaches any ioctl."""

import os
from pathlib import Path

import pytest

from nvmefs import cli
from nvmefs.backends import Unsupported, sysfs
from nvmefs.backends.base import TransportError
from nvmefs.backends.vfio import bind

NVME = "0000:00:03.0"
OTHER = "0000:00:04.0"
NIC = "0000:00:02.0"


class FakeSystem:
    """A sysfs and /proc under tmp_path; sysfs writes act as the kernel would."""

    def __init__(self, root: Path):
        self.sys, self.proc = root / "sys", root / "proc"
        self.writes: list[tuple[str, str]] = []
        self.minor = 0
        for drv in ("nvme", "vfio-pci", "e1000e"):
            d = self.drivers / drv
            d.mkdir(parents=True)
            (d / "unbind").write_text("")
        (self.sys / "bus/pci/drivers_probe").write_text("")
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "self/mountinfo").write_text(
            "22 1 0:21 / /proc rw - proc proc rw\n"
            "30 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
        (self.proc / "swaps").write_text("Filename Type Size Used Priority\n")

    @property
    def drivers(self) -> Path:
        return self.sys / "bus/pci/drivers"

    def dev(self, bdf: str) -> Path:
        return self.sys / "bus/pci/devices" / bdf

    def add(self, bdf: str, driver: str, group: str | None, klass: str = "0x010802",
            ctrl: str | None = None, namespaces: int = 1) -> Path:
        d = self.dev(bdf)
        d.mkdir(parents=True)
        (d / "class").write_text(klass + "\n")
        (d / "vendor").write_text("0x1b36\n")
        (d / "device").write_text("0x0010\n")
        (d / "driver_override").write_text("(null)\n")
        if group is not None:
            g = self.sys / "kernel/iommu_groups" / group
            (g / "devices").mkdir(parents=True, exist_ok=True)
            (d / "iommu_group").symlink_to(g)
        if driver:
            self.attach(bdf, driver)
        if ctrl:
            for n in range(1, namespaces + 1):
                ns = d / "nvme" / ctrl / f"{ctrl}n{n}"
                (ns / "holders").mkdir(parents=True)
                (ns / "dev").write_text(f"259:{self.minor}\n")
                self.minor += 1
        return d

    def attach(self, bdf: str, driver: str) -> None:
        link = self.dev(bdf) / "driver"
        if link.is_symlink():
            link.unlink()
        if driver:
            link.symlink_to(self.drivers / driver)

    def write(self, path: str, text: str) -> None:
        """bind._write as the kernel answers it."""
        p = Path(path)
        self.writes.append((str(p.relative_to(self.sys)), text))
        p.write_text(text)
        if p.name == "unbind":
            self.attach(text, "")
        elif p.name == "drivers_probe" and not (self.dev(text) / "driver").exists():
            override = (self.dev(text) / "driver_override").read_text().strip()
            self.attach(text, "vfio-pci" if override == "vfio-pci" else "nvme")

    def open_fd(self, pid: int, comm: str, target: str) -> None:
        fd = self.proc / str(pid) / "fd"
        fd.mkdir(parents=True, exist_ok=True)
        (self.proc / str(pid) / "comm").write_text(comm + "\n")
        (fd / str(len(os.listdir(fd)) + 3)).symlink_to(target)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    f = FakeSystem(tmp_path)
    monkeypatch.setattr(bind, "SYSFS", str(f.sys))
    monkeypatch.setattr(bind, "PROC", str(f.proc))
    monkeypatch.setattr(bind, "_write", f.write)
    monkeypatch.setattr(sysfs, "SYS", str(tmp_path / "no-sys"))
    return f


def driver(f: FakeSystem, bdf: str) -> str:
    return os.path.basename(os.readlink(f.dev(bdf) / "driver"))


# ---------------------------------------------------------------------- listing

def test_lists_nvme_functions_with_their_drivers(fake):
    fake.add(NIC, "e1000e", "1", klass="0x020000")
    fake.add(OTHER, "vfio-pci", "4")
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    fns = bind.pci_nvme_functions()
    assert [(f.address, f.driver, f.iommu_group, f.uri) for f in fns] == [
        (NVME, "nvme", "3", "vfio:0000:00:03.0"), (OTHER, "vfio-pci", "4", "vfio:0000:00:04.0")]
    assert (fns[0].vendor, fns[0].device) == (0x1B36, 0x0010)
    assert bind.kernel_controllers(NVME) == ["nvme0"]


def test_no_pci_bus_lists_nothing(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(bind, "SYSFS", str(tmp_path / "nowhere"))
    assert bind.pci_nvme_functions() == []


@pytest.mark.parametrize("text, canonical", [
    ("0000:00:03.0", "0000:00:03.0"), ("00:03.0", "0000:00:03.0"),
    ("0001:5E:1f.7", "0001:5e:1f.7"), (" 0000:00:03.0\n", "0000:00:03.0")])
def test_addresses_are_normalized(text, canonical):
    assert bind.normalize(text) == canonical


@pytest.mark.parametrize("text", ["nvme0", "0000:00:03", "0000:00:20.0", "0000:00:03.8", ""])
def test_bad_addresses_say_the_form(text):
    with pytest.raises(bind.BindError, match="DOMAIN:BUS:DEVICE.FUNCTION"):
        bind.normalize(text)


# ---------------------------------------------------------------------- bind

def test_bind_hands_over_then_is_idempotent(fake):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    assert bind.bind(NVME) is True
    assert driver(fake, NVME) == "vfio-pci"
    assert fake.writes == [
        (f"bus/pci/devices/{NVME}/driver_override", "vfio-pci"),
        (f"bus/pci/devices/{NVME}/driver/unbind", NVME),
        ("bus/pci/drivers_probe", NVME)]
    fake.writes.clear()
    assert bind.bind("00:03.0") is False
    assert fake.writes == []


def test_bind_refuses_a_mounted_namespace(fake):
    fake.add(NVME, "nvme", "3", ctrl="nvme0", namespaces=2)
    with open(fake.proc / "self/mountinfo", "a") as f:
        f.write("40 30 259:1 / /srv/my\\040data rw,relatime - xfs /dev/nvme0n2 rw\n")
    with pytest.raises(bind.BindError, match=r"/dev/nvme0n2 is mounted on /srv/my data"):
        bind.bind(NVME)
    assert fake.writes == [] and driver(fake, NVME) == "nvme"


def test_bind_refuses_a_btrfs_mount_by_its_source(fake):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    with open(fake.proc / "self/mountinfo", "a") as f:
        f.write("41 30 0:45 /@home /home rw - btrfs /dev/nvme0n1 rw\n")
    with pytest.raises(bind.BindError, match="/dev/nvme0n1 is mounted on /home"):
        bind.bind(NVME)


def test_bind_refuses_a_mounted_partition(fake):
    d = fake.add(NVME, "nvme", "3", ctrl="nvme0")
    part = d / "nvme/nvme0/nvme0n1/nvme0n1p2"
    part.mkdir()
    (part / "dev").write_text("259:5\n")
    with open(fake.proc / "self/mountinfo", "a") as f:
        f.write("42 30 259:5 / /boot rw - ext4 /dev/nvme0n1p2 rw\n")
    with pytest.raises(bind.BindError, match="/dev/nvme0n1p2 is mounted on /boot"):
        bind.bind(NVME)


def test_bind_refuses_a_held_namespace(fake):
    d = fake.add(NVME, "nvme", "3", ctrl="nvme0")
    (d / "nvme/nvme0/nvme0n1/holders/dm-0").mkdir()
    with pytest.raises(bind.BindError, match="/dev/nvme0n1 is held by dm-0"):
        bind.bind(NVME)
    assert fake.writes == []


def test_bind_refuses_an_open_device_node(fake):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    fake.open_fd(4242, "nvmefs", "/dev/nvme0")
    with pytest.raises(bind.BindError, match=r"pid 4242 \(nvmefs\) has /dev/nvme0 open"):
        bind.bind(NVME)


def test_bind_refuses_without_iommu_or_for_other_classes(fake):
    fake.add(NVME, "nvme", None, ctrl="nvme0")
    with pytest.raises(bind.BindError, match="intel_iommu=on"):
        bind.bind(NVME)
    fake.add(NIC, "e1000e", "1", klass="0x020000")
    with pytest.raises(bind.BindError, match="not an NVMe controller"):
        bind.bind(NIC)
    with pytest.raises(bind.BindError, match="no PCI function 0000:00:09.0"):
        bind.bind("0000:00:09.0")
    assert fake.writes == []


def test_bind_gives_back_when_vfio_pci_does_not_take_it(fake, monkeypatch):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")

    def stubborn(path, text):
        if not path.endswith("drivers_probe"):          # nothing binds on a probe
            fake.write(path, text)
    monkeypatch.setattr(bind, "_write", stubborn)
    with pytest.raises(bind.BindError, match="vfio-pci did not take"):
        bind.bind(NVME)
    assert (fake.dev(NVME) / "driver_override").read_text() == "\n"


def test_bind_loads_vfio_pci_when_missing(fake, monkeypatch):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    (fake.drivers / "vfio-pci/unbind").unlink()
    (fake.drivers / "vfio-pci").rmdir()
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        (fake.drivers / "vfio-pci").mkdir()

        class R:
            returncode, stderr = 0, ""
        return R
    monkeypatch.setattr(bind.subprocess, "run", run)
    assert bind.bind(NVME)
    assert calls == [["modprobe", "vfio-pci"]]


# ---------------------------------------------------------------------- unbind

def test_unbind_gives_back_then_is_idempotent(fake):
    d = fake.add(NVME, "vfio-pci", "3")
    (d / "driver_override").write_text("vfio-pci\n")
    assert bind.unbind(NVME) is True
    assert driver(fake, NVME) == "nvme"
    assert (d / "driver_override").read_text() == "\n"
    assert fake.writes[-2:] == [(f"bus/pci/devices/{NVME}/driver/unbind", NVME),
                                ("bus/pci/drivers_probe", NVME)]
    fake.writes.clear()
    assert bind.unbind(NVME) is False
    assert fake.writes == []


def test_unbind_refuses_an_open_group(fake):
    fake.add(NVME, "vfio-pci", "3")
    fake.open_fd(1, "init", "/dev/console")
    fake.open_fd(321, "python3", "/dev/vfio/vfio")
    fake.open_fd(321, "python3", "/dev/vfio/3")
    with pytest.raises(bind.BindError, match=r"pid 321 \(python3\) has /dev/vfio/3 open") as e:
        bind.unbind(NVME)
    assert e.value.errno == 16             # EBUSY
    assert fake.writes == [] and driver(fake, NVME) == "vfio-pci"


def test_unbind_of_a_driverless_function_probes_it(fake):
    d = fake.add(NVME, "", "3")
    (d / "driver_override").write_text("vfio-pci\n")
    assert bind.unbind(NVME) is True
    assert driver(fake, NVME) == "nvme"


# ---------------------------------------------------------------------- command line

def test_cli_bind_unbind_and_list(fake, capsys):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    fake.add(OTHER, "nvme", "4", ctrl="nvme1")
    with open(fake.proc / "self/mountinfo", "a") as f:
        f.write("40 30 259:1 / /data rw - ext4 /dev/nvme1n1 rw\n")
    assert cli.main(["list"]) == 1
    assert cli.main(["vfio", "bind", "0000:00:03.0"]) == 0
    assert "bound to vfio-pci (/dev/vfio/3); mount it as vfio:0000:00:03.0" in capsys.readouterr().out
    assert cli.main(["vfio", "bind", OTHER]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nvmefs vfio bind: 0000:00:04.0 is in use: ") and "/data" in err
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().out == "vfio-pci\n  vfio:0000:00:03.0  pci 1b36:0010  /dev/vfio/3\n"
    assert cli.main(["vfio", "unbind", NVME]) == 0
    assert "given back" in capsys.readouterr().out
    assert cli.main(["vfio", "unbind", NVME]) == 0
    assert "not bound to vfio-pci" in capsys.readouterr().out


# ---------------------------------------------------------------------- VFIO structs

@pytest.fixture
def pci():
    try:
        from nvmefs.backends.vfio import pci
    except Unsupported as e:
        pytest.skip(str(e))
    return pci


def test_vfio_struct_sizes(pci):
    sizes = {"GROUP_STATUS": 8, "DEVICE_INFO": 20, "REGION_INFO": 32, "IRQ_INFO": 16,
             "IRQ_SET": 20, "DMA_MAP": 32, "DMA_UNMAP": 24}
    assert {name: getattr(pci, name).size for name in sizes} == sizes
    assert (pci.GROUP_GET_DEVICE_FD, pci.DEVICE_SET_IRQS, pci.IOMMU_UNMAP_DMA) == (
        0x3B6A, 0x3B6E, 0x3B72)


def test_transport_validates_its_address(pci):
    assert pci.VfioTransport("00:03.0").address == NVME
    with pytest.raises(TransportError, match="not a PCI address"):
        pci.VfioTransport("/dev/nvme0")


async def test_transport_says_to_bind_first(fake, pci):
    fake.add(NVME, "nvme", "3", ctrl="nvme0")
    t = pci.VfioTransport(NVME)
    with pytest.raises(TransportError, match=r"bound to nvme, not vfio-pci: run "
                                             r"`nvmefs vfio bind 0000:00:03.0`"):
        await t.open(None)
    fake.add(OTHER, "nvme", None, ctrl="nvme1")
    with pytest.raises(TransportError, match="no IOMMU group: boot with intel_iommu=on"):
        await pci.VfioTransport(OTHER).open(None)
    with pytest.raises(TransportError, match="no such PCI function"):
        await pci.VfioTransport("0000:00:09.0").open(None)
    t.close()
    t.close()
    assert t.info()["vectors"] == "0"
