"""backends.sysfs on the two layouts Debian's 6.1 kernel gives one machine's controllers
(recorded in the QEMU guest of tests/vm with the shapes of tests/vm/shapes.py): native
multipath on (a two-controller subsystem has heads only) and off (nvme_core.multipath=N)."""

import pytest

from nvmefs.backends import sysfs
from nvmefs.backends.sysfs import SysPath

MP = "nqn.2019-08.org.qemu:nvmefs-mp"
GAPS = "nqn.2019-08.org.qemu:nvmefs-gaps"


def write(root, path: str, text: str = "") -> None:
    f = root / path
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text + "\n")


def controller(root, name: str, cntlid: int, nqn: str, subsys: str, children: dict[str, int]):
    """A controller's sysfs directory: its attributes, its children (name -> NSID; a
    generic node has none) and its link in the subsystem."""
    for attr, value in {"model": "QEMU NVMe Ctrl", "serial": "nvmefs-mp", "firmware_rev": "7.2",
                        "transport": "pcie", "address": f"0000:00:0{3 + cntlid}.0",
                        "state": "live", "cntlid": str(cntlid), "subsysnqn": nqn}.items():
        write(root, f"class/nvme/{name}/{attr}", value)
    for child, nsid in children.items():
        write(root, f"class/nvme/{name}/{child}/nsid" if nsid else
              f"class/nvme/{name}/{child}/dev", str(nsid or "245:0"))
    write(root, f"class/nvme-subsystem/{subsys}/{name}/cntlid", str(cntlid))
    write(root, f"class/nvme-subsystem/{subsys}/iopolicy", "numa")


@pytest.fixture
def multipath(tmp_path, monkeypatch):
    monkeypatch.setattr(sysfs, "SYS", str(tmp_path))
    controller(tmp_path, "nvme0", 0, MP, "nvme-subsys0", {"nvme0c0n1": 1})
    controller(tmp_path, "nvme1", 1, MP, "nvme-subsys0", {"nvme0c1n1": 1, "nvme0c1n2": 2})
    controller(tmp_path, "nvme2", 0, GAPS, "nvme-subsys2",
               {"ng2n1": 0, "ng2n2": 0, "ng2n10": 0, "nvme2n1": 1, "nvme2n2": 2, "nvme2n10": 5})
    write(tmp_path, "class/nvme/nvme1/nvme0c1n2/ana_state", "optimized")
    return tmp_path


@pytest.fixture
def no_multipath(tmp_path, monkeypatch):
    monkeypatch.setattr(sysfs, "SYS", str(tmp_path))
    controller(tmp_path, "nvme0", 0, MP, "nvme-subsys1", {"ng0n1": 0, "nvme0n1": 1})
    controller(tmp_path, "nvme1", 1, MP, "nvme-subsys1",
               {"ng1n1": 0, "ng1n2": 0, "nvme1n1": 1, "nvme1n2": 2})
    return tmp_path


def test_multipath_controllers_reach_their_namespaces_through_the_heads(multipath):
    c0, c1, c2 = sysfs.controllers()
    assert (c0.name, c0.subsystem, c0.subsysnqn, c0.cntlid, c0.iopolicy) == \
        ("nvme0", "nvme-subsys0", MP, "0", "numa")
    assert c0.generic == [] and c0.paths == [SysPath("nvme0c0n1", "ng0n1", 1)]
    assert c1.paths == [SysPath("nvme0c1n1", "ng0n1", 1),
                        SysPath("nvme0c1n2", "ng0n2", 2, "optimized")]
    # a subsystem of one controller keeps per-controller nodes, in number order
    assert c2.generic == ["ng2n1", "ng2n2", "ng2n10"] and c2.paths == []


def test_without_multipath_each_controller_has_its_own_nodes(no_multipath):
    c0, c1 = sysfs.controllers()
    assert c0.generic == ["ng0n1"] and c1.generic == ["ng1n1", "ng1n2"]
    assert c0.paths == c1.paths == [] and c0.subsystem == c1.subsystem == "nvme-subsys1"


def test_controllers_are_grouped_by_subsystem(multipath):
    groups = sysfs.subsystems(sysfs.controllers())
    assert [(nqn, [c.name for c in cs]) for nqn, cs in groups.items()] == \
        [(MP, ["nvme0", "nvme1"]), (GAPS, ["nvme2"])]


def test_the_kernel_limit_comes_from_a_head_path_disk_too(multipath):
    write(multipath, "block/nvme0c0n1/queue/max_hw_sectors_kb", "512")
    assert sysfs.controller("nvme0").max_transfer_kernel() == 512 * 1024
    assert sysfs.controller("nvme2").max_transfer_kernel() == 0


def test_a_controller_that_is_not_there(multipath):
    with pytest.raises(FileNotFoundError):
        sysfs.controller("nvme9")
    sysfs.SYS = str(multipath / "nothing")
    assert sysfs.controllers() == []
