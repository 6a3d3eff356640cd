"""Metadata formats and the Zoned Namespace command set through the Linux driver (the
shapes of tests/vm/shapes.py), with nvme-cli as the peer: nvme2's NSID 5 has extended
LBAs (512+8), nvme3's NSID 2 separate metadata (512, 8 bytes apart), NSID 1 is zoned."""

import json
import os
import subprocess

import pytest

from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.passthru import encode_request
from nvmefs.spec.queue import Completion

from ..linux.test_tree import nvme_cli
from ..mount.conftest import foreground, sh
from ..unit.test_vectors import contains
from .conftest import nodes
from .test_paths import passthru

OP_ZONE_MGMT_RECV = 0x7A


@pytest.fixture(scope="module")
def mounted(tmp_path_factory, ctrl):
    mnt = tmp_path_factory.mktemp("formats") / "mnt"
    with foreground(mnt, f"/dev/{ctrl['gaps']}", f"/dev/{ctrl['zns']}", args=("--passthru", "all")):
        yield mnt


def nvme_read(tmp_path, node: str, lba: int, blocks: int, data_size: int, metadata_size: int = 0):
    """`nvme read` of `blocks` blocks: (data, metadata) as nvme-cli gives them."""
    data, meta = tmp_path / "data", tmp_path / "meta"
    args = ["nvme", "read", node, "-s", str(lba), "-c", str(blocks - 1), "-z", str(data_size),
            "-d", str(data)]
    if metadata_size:
        args += ["-y", str(metadata_size), "-M", str(meta)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return data.read_bytes(), meta.read_bytes() if metadata_size else b""


def test_extended_lbas_move_data_and_metadata_together(mounted, ctrl, tmp_path):
    d = mounted / ctrl["gaps"]
    info = dict(line.split(": ", 1) for line in (d / "ns/5/info").read_text().splitlines())
    assert (info["block_size"], info["ms"], info["mset"]) == ("512", "8", "1")
    blocks = os.urandom(2 * 520)
    cpl = Completion.decode(passthru(d / "passthru/io", encode_request(
        OP_WRITE, nsid=5, cdw10=40, cdw12=1, data=blocks), 16))
    assert cpl.ok, cpl
    assert nvme_read(tmp_path, f"/dev/{nodes(ctrl['gaps'], 5)[1]}", 40, 2, 1040)[0] == blocks
    out = passthru(d / "passthru/io", encode_request(OP_READ, nsid=5, cdw10=40, cdw12=1,
                                                     data_len=1040), 16 + 1040)
    assert Completion.decode(out[:16]).ok and out[16:] == blocks
    r = sh("echo 'opcode=0x02 nsid=5 cdw12=1 data_len=1024' > passthru/io", d, check=False)
    assert r.returncode and b"Invalid argument" in r.stderr


def test_separate_metadata_goes_after_the_data_both_ways(mounted, ctrl, tmp_path):
    d = mounted / ctrl["zns"]
    data, meta = os.urandom(1024), os.urandom(16)
    cpl = Completion.decode(passthru(d / "passthru/io", encode_request(
        OP_WRITE, nsid=2, cdw10=60, cdw12=1, data=data, metadata_len=16) + meta, 16))
    assert cpl.ok, cpl
    assert nvme_read(tmp_path, f"/dev/{nodes(ctrl['zns'], 2)[1]}", 60, 2, 1024, 16) == (data, meta)
    out = passthru(d / "passthru/io", encode_request(OP_READ, nsid=2, cdw10=60, cdw12=1,
                                                     data_len=1024, metadata_len=16), 16 + 1040)
    assert Completion.decode(out[:16]).ok and (out[16:1040], out[1040:]) == (data, meta)


def test_effects_per_command_set_equal_nvme_cli(mounted, ctrl):
    ours = json.loads((mounted / ctrl["zns"] / "log/effects.json").read_text())
    by_csi = {entry["command_set_identifier"]: entry for entry in ours}
    for csi in (0, 2):
        (expected,) = nvme_cli("effects-log", f"/dev/{ctrl['zns']}", f"--csi={csi}")
        contains(by_csi[csi], expected)


def test_zone_report_equals_nvme_cli(mounted, ctrl):
    zones = [json.loads(line) for line in
             (mounted / ctrl["zns"] / "ns/1/zones").read_text().splitlines()]
    expected = nvme_cli("zns", "report-zones", f"/dev/{nodes(ctrl['zns'], 1)[0]}")
    assert len(zones) == expected["nr_zones"] == 8
    for ours, theirs in zip(zones, expected["zone_list"], strict=True):
        contains(ours, theirs)


def test_readonly_admits_zone_management_receive_from_the_zns_effects_log(tmp_path, ctrl):
    mnt = tmp_path / "ro"
    with foreground(mnt, f"/dev/{ctrl['zns']}", args=("--passthru", "readonly")):
        d = mnt / ctrl["zns"]
        report = encode_request(OP_ZONE_MGMT_RECV, nsid=1, cdw12=4096 // 4 - 1, data_len=4096)
        out = passthru(d / "passthru/io", report, 16 + 4096)
        assert Completion.decode(out[:16]).ok
        assert int.from_bytes(out[16:24], "little") == 8        # nr_zones
        r = sh("echo 'opcode=0x79 nsid=1 cdw13=4' > passthru/io", d, check=False)  # reset zone
        assert r.returncode and b"Permission denied" in r.stderr


@pytest.mark.parametrize("role,ns,ours,cli", [
    ("zns", 1, "identify-zns.json", ("zns", "id-ns")),
    ("zns", 1, "identify-nvm.json", ("nvm-id-ns",)),
    ("zns", 2, "identify-nvm.json", ("nvm-id-ns",)),
    ("gaps", 5, "identify-nvm.json", ("nvm-id-ns",)),
])
def test_command_set_identify_namespace_equals_nvme_cli(mounted, ctrl, role, ns, ours, cli):
    expected = nvme_cli(*cli, f"/dev/{ctrl[role]}", "-n", str(ns))
    contains(json.loads((mounted / ctrl[role] / "ns" / str(ns) / ours).read_text()), expected)


@pytest.mark.parametrize("role,ours,cli", [("zns", "identify-zns.json", ("zns", "id-ctrl")),
                                           ("zns", "identify-nvm.json", ("nvm-id-ctrl",)),
                                           ("gaps", "identify-nvm.json", ("nvm-id-ctrl",))])
def test_command_set_identify_controller_equals_nvme_cli(mounted, ctrl, role, ours, cli):
    contains(json.loads((mounted / ctrl[role] / ours).read_text()),
             nvme_cli(*cli, f"/dev/{ctrl[role]}"))
