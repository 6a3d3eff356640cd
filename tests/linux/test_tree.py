"""The tree over QEMU's controller through the Linux driver, with nvme-cli as the peer."""

import json
import os
import select
import struct
import subprocess

import pytest

from nvmefs.spec.commands import OP_READ, OP_WRITE
from nvmefs.spec.passthru import encode_request
from nvmefs.spec.queue import Completion

from ..mount.conftest import foreground, sh
from ..unit.test_vectors import contains

COUNTERS = {"data_units_read", "data_units_written", "host_read_commands", "host_write_commands",
            "controller_busy_time", "power_on_hours"}


def nvme_cli(*args: str):
    r = subprocess.run(["nvme", *args, "-o", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    mnt = tmp_path_factory.mktemp("guest") / "mnt"
    with foreground(mnt, args=("--passthru", "all"), default=()):    # every local controller
        yield mnt


@pytest.mark.parametrize("ours,cli", [
    ("identify.json", ("id-ctrl", "/dev/nvme0")),
    ("ns/1/identify.json", ("id-ns", "/dev/nvme0n1")),
    ("log/error.json", ("error-log", "/dev/nvme0")),
    ("log/fw-slot.json", ("fw-log", "/dev/nvme0")),
    ("log/effects.json", ("effects-log", "/dev/nvme0", "--csi=0")),
])
def test_json_equals_nvme_cli_key_for_key(mounted, ours, cli):
    expected = nvme_cli(*cli)
    contains(json.loads((mounted / "nvme0" / ours).read_text()), expected)


def test_smart_equals_nvme_cli_but_for_live_counters(mounted):
    before = nvme_cli("smart-log", "/dev/nvme0")
    ours = json.loads((mounted / "nvme0/log/smart.json").read_text())
    after = nvme_cli("smart-log", "/dev/nvme0")
    assert set(before) <= set(ours)
    for key, value in before.items():
        if key in COUNTERS:       # it may move between the reads, within what they saw
            assert int(before[key]) <= int(ours[key]) <= int(after[key]), key
        else:
            assert ours[key] == value, key


def test_the_same_tree_as_on_sim(mounted):
    d = mounted / "nvme0"
    assert sorted(os.listdir(mounted)) == ["metrics", "nvme0"]
    # QEMU 7.2 names the namespace's command set (NVM) in its descriptor list
    assert sorted(os.listdir(d)) == sorted(["info", "identify", "identify.json", "identify.txt",
                                            "identify-nvm", "identify-nvm.json", "identify-nvm.txt",
                                            "log", "features", "ns", "passthru", "cdq",
                                            "events", "reset"])
    assert os.listdir(d / "ns") == ["1"]
    for page in ("error", "smart", "fw-slot", "effects"):
        assert (d / "log" / page).stat().st_size > 0
    assert "self-test" not in os.listdir(d / "log")       # QEMU 7.2 has no OACS self-test bit
    info = dict(line.split(": ", 1) for line in (d / "info").read_text().splitlines())
    assert info["backend"] == "linux" and info["transport"] == "pcie" and info["device"] == "/dev/nvme0"
    assert (d / "identify").read_bytes()[4:14] == b"nvmefs0001"
    assert json.loads((d / "features/number-of-queues.json").read_text())["nsqa"] >= 0
    assert sh("cat log/by-id/0xbf", d, check=False).returncode != 0


def test_write_then_read_through_passthru_and_the_block_device_sees_it(mounted):
    d = mounted / "nvme0"
    data = os.urandom(4096)
    fd = os.open(d / "passthru/io", os.O_RDWR)
    try:
        write = encode_request(OP_WRITE, cid=1, nsid=1, cdw10=64, cdw12=7, data=data)
        read = encode_request(OP_READ, cid=2, nsid=1, cdw10=64, cdw12=7, data_len=4096)
        # the commands of one batch may run in any order (an NVMe queue keeps none):
        # the Read goes in a later write, once the Write is answered
        os.write(fd, write)
        written = os.read(fd, 16)
        os.write(fd, read)
        out = b""
        while len(out) < 16 + 4096:
            out += os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    assert (Completion.decode(written).cid, Completion.decode(written).ok) == (1, True)
    assert (Completion.decode(out[:16]).cid, Completion.decode(out[:16]).ok) == (2, True)
    assert out[16:] == data
    dd = subprocess.run(["dd", "if=/dev/nvme0n1", "bs=512", "skip=64", "count=8", "iflag=direct",
                         "status=none"], capture_output=True, timeout=60)
    assert dd.returncode == 0 and dd.stdout == data           # the kernel's own path agrees


def test_text_requests_and_controller_statuses(mounted):
    d = mounted / "nvme0"
    sh("echo 'opcode=0x02 nsid=0xffffffff cdw10=0x007f0002 data_len=512' > passthru/admin.smart", d)
    text = sh("cat passthru/admin.smart", d).stdout.decode()
    assert text.startswith("status=0x0000") and "name=SUCCESS" in text
    sh("echo 'opcode=0x02 nsid=0xffffffff cdw10=0x007f00bf data_len=512' > passthru/admin.bad", d)
    line = sh("head -1 passthru/admin.bad", d).stdout.decode()
    assert line.startswith("status=0x4002 sct=0x0 sc=0x02 dnr=1") and "name=INVALID_FIELD" in line
    r = sh("echo 'opcode=0x01 cdw10=1' > passthru/admin", d, check=False)
    assert r.returncode and b"Operation not permitted" in r.stderr


def test_batch_of_64_reads(mounted):
    d = mounted / "nvme0"
    fd = os.open(d / "passthru/io", os.O_RDWR)
    try:
        reqs = b"".join(encode_request(OP_READ, cid=i, nsid=1, cdw10=8 * i, cdw12=7, data_len=4096)
                        for i in range(64))
        os.write(fd, reqs)
        out = b""
        while len(out) < 64 * 4112:
            out += os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    assert [struct.unpack_from("<H", out, i * 4112 + 12)[0] for i in range(64)] == list(range(64))
    assert all(struct.unpack_from("<H", out, i * 4112 + 14)[0] >> 1 == 0 for i in range(64))


def test_default_policy_on_a_real_controller(tmp_path):
    mnt = tmp_path / "ro"
    with foreground(mnt, "/dev/nvme0"):
        d = mnt / "nvme0"
        r = sh("echo 'opcode=0x80 nsid=1' > passthru/admin", d, check=False)
        assert r.returncode and b"Permission denied" in r.stderr
        sh("echo 'opcode=0x06 cdw10=1 data_len=4096' > passthru/admin.id", d)
        assert sh("tail -n +2 passthru/admin.id | xxd -r | cmp - identify", d).returncode == 0


def test_nvmefs_list():
    r = subprocess.run(["nvmefs", "list"], capture_output=True, text=True, timeout=30)
    subsystem, ctrl, *_ = r.stdout.splitlines()
    assert r.returncode == 0 and subsystem == "nqn.2019-08.org.qemu:nvmefs0001"
    assert ctrl.startswith("  /dev/nvme0  QEMU NVMe Ctrl") and "cntlid 0" in ctrl
    assert ctrl.endswith("namespaces: /dev/ng0n1")


def events_after(root, action, timeout: float = 20) -> dict:
    """The first event `events` shows after `action()` (an open before it, so only new)."""
    fd = os.open(root / "events", os.O_RDONLY | os.O_NONBLOCK)
    try:
        action()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(timeout * 1000), f"no event within {timeout} s"
        return json.loads(os.read(fd, 65536).splitlines()[0])
    finally:
        os.close(fd)


def admin(root, text: str) -> None:
    """Text requests through a private admin mailbox; every answer must be SUCCESS."""
    fd = os.open(root / "passthru/admin.events", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    answers = (root / "passthru/admin.events").read_text().split()
    assert [w for w in answers if w.startswith("name=")] == ["name=SUCCESS"] * text.count("\n")


def test_events_show_a_smart_warning_the_kernel_reported_as_a_uevent(mounted):
    """The kernel keeps the Asynchronous Event Requests and passes a SMART / Health event
    on as a uevent (NVME_AEN); nvmefs reads the SMART log with RAE clear for it. QEMU
    sends the event when the temperature threshold drops below its temperature, if the
    host enabled it (the kernel enables only notices)."""
    root = mounted / "nvme0"
    admin(root, "opcode=0x09 cdw10=0x0b cdw11=0x102\n")           # + SMART temperature
    try:
        event = events_after(root, lambda: admin(root, "opcode=0x09 cdw10=0x04 cdw11=300\n"))
    finally:
        admin(root, "opcode=0x09 cdw10=0x04 cdw11=343\nopcode=0x09 cdw10=0x0b cdw11=0x100\n")
    assert (event["source"], event["type_name"], event["info_name"], event["lid"]) == \
        ("uevent", "smart", "temperature-threshold", 2)
    assert event["aen"] == "0x00020101" and event["log"]["critical_warning"] & 2


def test_cdq_through_a_kernel_without_the_ioctl_is_refused(mounted):
    r = sh("echo 'create m entries=64' > nvme0/cdq/ctl", mounted, check=False)
    assert r.returncode and b"Operation not supported" in r.stderr
    assert os.listdir(mounted / "nvme0/cdq") == ["ctl"]
