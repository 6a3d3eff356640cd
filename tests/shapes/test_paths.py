"""Multipath subsystems, NSID gaps and MDTS through the Linux driver (the shapes of
tests/vm/shapes.py), with nvme-cli and dd as the peers; namespaces attached while
mounted; passthru batches and tree reads through controller resets."""

import errno
import json
import os
import subprocess
import threading
import time

import pytest

from nvmefs.backends.sysfs import read_attr
from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.passthru import encode_request
from nvmefs.spec.queue import Completion

from ..linux.test_tree import nvme_cli
from ..mount.conftest import foreground, sh
from ..unit.test_vectors import contains
from ..vm.shapes import MULTIPATH_NQN
from .conftest import nodes

HOST_PATH_ERROR, HOST_ABORTED = (3, 0x70), (3, 0x71)
# native multipath (Debian's default) or nvme_core.multipath=N: names differ, nothing else
MULTIPATH = read_attr("/sys/module/nvme_core/parameters/multipath") != "N"


def info(path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines())


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"no {what} within {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    mnt = tmp_path_factory.mktemp("shapes") / "mnt"
    with foreground(mnt, args=("--passthru", "all"), default=()):    # every local controller
        yield mnt


def test_every_controller_sees_its_namespaces_whatever_the_kernel_named_them(mounted, ctrl):
    assert sorted(os.listdir(mounted)) == sorted(["metrics", *ctrl.values()])
    expected = {"mp0": ["1"], "mp1": ["1", "2"], "gaps": ["1", "2", "5"], "zns": ["1", "2"]}
    assert {role: sorted(os.listdir(mounted / ctrl[role] / "ns"), key=int) for role in expected} \
        == expected
    mp = [info(mounted / ctrl[role] / "info") for role in ("mp0", "mp1")]
    assert mp[0]["subsystem"] == mp[1]["subsystem"] != info(mounted / ctrl["gaps"] / "info")["subsystem"]
    assert read_attr(f"/sys/class/nvme-subsystem/{mp[0]['subsystem']}/subsysnqn") == MULTIPATH_NQN
    assert [(i["subnqn"], i["cntlid"], i["path_state"]) for i in mp] == \
        [(MULTIPATH_NQN, "0", "live"), (MULTIPATH_NQN, "1", "live")]
    shared = info(mounted / ctrl["mp1"] / "ns/1/info")["io_path"]
    _, node = nodes(ctrl["mp1"], 1)
    if MULTIPATH:
        assert shared.startswith(f"multipath head /dev/{node}: the kernel picks the controller")
    else:
        assert shared == f"{ctrl['mp1']} (/dev/{node})"
    assert info(mounted / ctrl["gaps"] / "ns/5/info")["io_path"] == \
        f"{ctrl['gaps']} (/dev/{nodes(ctrl['gaps'], 5)[1]})"


def test_nvmefs_list_groups_controllers_by_subsystem(ctrl):
    r = subprocess.run(["nvmefs", "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    head = lines.index(MULTIPATH_NQN)
    ports = sorted(lines[head + 1:head + 3])
    assert [p.split()[0] for p in ports] == sorted(f"/dev/{ctrl[r]}" for r in ("mp0", "mp1"))
    mp1 = next(p for p in ports if p.split()[0] == f"/dev/{ctrl['mp1']}")
    assert f"/dev/{nodes(ctrl['mp1'], 2)[1]}" in mp1 and "cntlid 1" in mp1


@pytest.mark.parametrize("role,ns", [("mp0", 1), ("mp1", 1), ("mp1", 2), ("gaps", 1),
                                     ("gaps", 2), ("gaps", 5), ("zns", 2)])
def test_identify_namespace_equals_nvme_cli(mounted, ctrl, role, ns):
    expected = nvme_cli("id-ns", f"/dev/{ctrl[role]}", "-n", str(ns))
    contains(json.loads((mounted / ctrl[role] / "ns" / str(ns) / "identify.json").read_text()),
             expected)


@pytest.mark.parametrize("role", ["mp0", "mp1", "gaps", "zns"])
def test_identify_controller_equals_nvme_cli(mounted, ctrl, role):
    contains(json.loads((mounted / ctrl[role] / "identify.json").read_text()),
             nvme_cli("id-ctrl", f"/dev/{ctrl[role]}"))


def passthru(box, requests: bytes, answer_len: int) -> bytes:
    fd = os.open(box, os.O_RDWR)
    try:
        os.write(fd, requests)
        out = b""
        while len(out) < answer_len:
            chunk = os.read(fd, 1 << 20)
            assert chunk, f"{len(out)} of {answer_len} answer bytes"
            out += chunk
        return out
    finally:
        os.close(fd)


@pytest.mark.parametrize("role,ns,block", [
    ("mp0", 1, 512),        # the shared namespace, from each port
    ("mp1", 1, 512),
    ("mp1", 2, 512),        # private to mp1 (still behind a head with native multipath)
    ("gaps", 2, 4096),      # NSID 2 of 1, 2, 5 on a 4 KiB format
])
def test_data_written_through_each_path_reads_back_with_dd(mounted, ctrl, role, ns, block):
    data = os.urandom(2 * block)
    lba = 100 + 10 * len(role) + ns
    cpl = Completion.decode(passthru(mounted / ctrl[role] / "passthru/io", encode_request(
        OP_WRITE, nsid=ns, cdw10=lba, cdw12=1, data=data), 16))
    assert cpl.ok, cpl
    disk, _ = nodes(ctrl[role], ns)
    got = subprocess.run(["dd", f"if=/dev/{disk}", f"bs={block}", f"skip={lba}", "count=2",
                          "iflag=direct", "status=none"], capture_output=True, timeout=60)
    assert got.returncode == 0 and got.stdout == data, got.stderr


def test_mdts_of_16k_bounds_a_request(mounted, ctrl):
    d = mounted / ctrl["gaps"]
    assert info(d / "info")["mdts"] == "16384"
    r = sh("echo 'opcode=0x02 nsid=1 cdw12=63 data_len=32768' > passthru/io", d, check=False)
    assert r.returncode and b"Argument list too long" in r.stderr       # E2BIG
    out = passthru(d / "passthru/io", encode_request(OP_READ, nsid=1, cdw12=31, data_len=16384),
                   16 + 16384)
    assert Completion.decode(out[:16]).ok


def test_a_namespace_attached_while_mounted_appears_and_goes_when_detached(mounted, ctrl):
    d = mounted / ctrl["mp0"]
    assert "3" not in os.listdir(d / "ns")
    try:
        sh(f"nvme attach-ns /dev/{ctrl['mp0']} -n 3 -c 0", d)
        wait_for(lambda: "3" in os.listdir(d / "ns"), 10, "ns/3 after attaching it")
        assert json.loads((d / "ns/3/identify.json").read_text())["nsze"] > 0
        cpl = Completion.decode(passthru(d / "passthru/io", encode_request(
            OP_READ, nsid=3, cdw12=0, data_len=512), 16 + 512)[:16])
        assert cpl.ok
    finally:
        sh(f"nvme detach-ns /dev/{ctrl['mp0']} -n 3 -c 0", d)
    wait_for(lambda: "3" not in os.listdir(d / "ns"), 10, "ns/3 to go after detaching it")
    r = sh("echo 'opcode=0x02 nsid=3 data_len=512' > passthru/io", d, check=False)
    assert r.returncode and b"No such device or address" in r.stderr     # ENXIO


def test_batches_and_tree_reads_run_through_two_resets(mounted, ctrl):
    """Readers keep batches of 64 Reads going and a reader keeps reading log/smart.json
    while the kernel resets the controller twice: every request is answered exactly
    once, done, host-aborted (the kernel cancelled it: EINTR) or Host Pathing Error
    (Debian's 6.1 ends those in flight with EFAULT); no batch is lost to an errno; no
    tree read fails (they wait for the controller)."""
    name = ctrl["gaps"]
    d = mounted / name
    stop = threading.Event()
    results: list[tuple[int, int]] = []         # (sct, sc) of every answer
    failures: list[str] = []

    def reader(seed: int):
        fd = os.open(d / "passthru/io", os.O_RDWR)
        try:
            n = 0
            while not stop.is_set():
                reqs = b"".join(encode_request(OP_READ, cid=i, nsid=1, cdw10=(seed * 64 + i) % 1000,
                                               cdw12=0, data_len=512) for i in range(64))
                try:
                    os.write(fd, reqs)
                    out = b""
                    while len(out) < 64 * 528:
                        out += os.read(fd, 1 << 20)
                except OSError as e:
                    failures.append(f"batch {n}: {errno.errorcode[e.errno]}")
                    continue
                cpls = [Completion.decode(out[i * 528:i * 528 + 16]) for i in range(64)]
                assert [c.cid for c in cpls] == list(range(64))
                results.extend((c.sct, c.sc) for c in cpls)
                n += 1
        finally:
            os.close(fd)

    def tree_reader():
        while not stop.is_set():
            try:
                json.loads((d / "log/smart.json").read_text())
            except OSError as e:
                failures.append(f"log/smart.json: {errno.errorcode[e.errno]}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=tree_reader))
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            time.sleep(2)
            sh(f"nvme reset /dev/{name}", d)
            wait_for(lambda: read_attr(f"/sys/class/nvme/{name}/state") == "live", 30,
                     f"{name} live again")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert not failures, failures[:10]
    assert results and set(results) <= {(0, 0), HOST_ABORTED, HOST_PATH_ERROR}, set(results)
    print(f"answers: {len(results)}, host-aborted: {results.count(HOST_ABORTED)}, "
          f"host pathing error: {results.count(HOST_PATH_ERROR)}")
    assert info(d / "info")["state"] == "live" and (d / "identify").read_bytes()


@pytest.mark.parametrize("role", ["mp0", "mp1", "gaps", "zns"])
@pytest.mark.parametrize("page,cli", [("error", ("error-log",)), ("fw-slot", ("fw-log",)),
                                      ("effects", ("effects-log", "--csi=0"))])
def test_log_pages_equal_nvme_cli(mounted, ctrl, role, page, cli):
    """(nvme-cli 2.3's effects-log without --csi fails on QEMU: it asks every CSI.)"""
    ours = json.loads((mounted / ctrl[role] / "log" / f"{page}.json").read_text())
    expected = nvme_cli(*cli, f"/dev/{ctrl[role]}")
    contains(ours, expected)
