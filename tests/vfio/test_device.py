"""The vfio driver against QEMU's NVMe controller, with the Linux driver as the
peer on the same controller: the same tree, data that crosses between them, PRP
lists at unaligned offsets up to MDTS, a clean hand-back after unmount and a
remount after `kill -9`."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import trio

from nvmefs.backends import Request, opened
from nvmefs.backends.vfio.pci import VfioTransport
from nvmefs.spec import commands as C
from nvmefs.spec import registers as R

from ..mount.conftest import NVMEFS, fuse_device, foreground, run, sh, wait_for
from .conftest import kernel, vfio

SAME = ("identify.json", "ns/1/identify.json", "log/fw-slot.json", "log/effects.json",
        "log/error.json", "features/arbitration.json", "features/number-of-queues.json")
STABLE_SMART = ("critical_warning", "temperature", "avail_spare", "spare_thresh",
                "percent_used")
LBA = 4096


def snapshot(root) -> dict[str, object]:
    out = {p: json.loads((root / p).read_text()) for p in SAME}
    smart = json.loads((root / "log/smart.json").read_text())
    out["smart"] = {k: smart[k] for k in STABLE_SMART}
    return out


def test_bind_and_unbind_refuse_a_device_in_use(bdf, tmp_path):
    dev = kernel(bdf)
    with open(f"{dev}n1", "rb") as disk:
        holder = subprocess.Popen(["sleep", "60"], stdin=disk)
    try:
        r = run([NVMEFS, "vfio", "bind", bdf])
        assert r.returncode == 1 and f"pid {holder.pid} (sleep)" in r.stderr.decode()
    finally:
        holder.kill()
        holder.wait()
    assert run([NVMEFS, "vfio", "bind", bdf]).returncode == 0
    assert b"already bound" in run([NVMEFS, "vfio", "bind", bdf]).stdout
    assert f"vfio:{bdf}".encode() in run([NVMEFS, "list"]).stdout
    with foreground(tmp_path / "mnt", f"vfio:{bdf}"):
        r = run([NVMEFS, "vfio", "unbind", bdf])
        assert r.returncode == 1 and b"in use through VFIO" in r.stderr
    kernel(bdf)


def test_the_tree_on_vfio_equals_the_linux_backends(bdf, tmp_path):
    mnt = tmp_path / "mnt"
    dev = kernel(bdf)
    with foreground(mnt, dev):
        name = os.listdir(mnt)[0]
        linux = snapshot(mnt / name)
    uri = vfio(bdf)
    with foreground(mnt, uri):
        root = mnt / os.listdir(mnt)[0]
        assert snapshot(root) == linux
        regs = json.loads((root / "regs.json").read_text())
        assert regs["vs"]["value"] == 0x00010400 and regs["cap"]["mqes"] == 2047
        assert regs["cc"]["en"] == 1 and regs["csts"]["rdy"] == 1
        assert regs["cc"]["iosqes"] == 6 and regs["cc"]["iocqes"] == 4
        info = (root / "info").read_text()
        assert "backend: vfio" in info and f"address: {bdf}" in info and "iommu: type1" in info


def test_data_written_on_vfio_is_read_by_dd_through_the_kernel(bdf, tmp_path):
    mnt = tmp_path / "mnt"
    pattern = os.urandom(4096)
    with foreground(mnt, vfio(bdf), args=("--passthru", "all")):
        d = mnt / os.listdir(mnt)[0]
        sh(f"echo 'opcode=0x01 nsid=1 cdw10={LBA} cdw12=7 data_len=4096 data={pattern.hex()}'"
           " > passthru/io.w", d)
        assert "name=SUCCESS" in sh("cat passthru/io.w", d).stdout.decode()
    dev = kernel(bdf)
    got = run(["dd", f"if={dev}n1", "bs=512", f"skip={LBA}", "count=8", "iflag=direct",
               "status=none"]).stdout
    assert got == pattern


def test_mdts_transfers_through_prp_lists_at_unaligned_offsets(bdf):
    """After a 512-byte piece every transfer of the batch starts 512 bytes into a
    page, so an MDTS-sized one needs a PRP list whose first page is partial."""
    async def main():
        async with opened(vfio(bdf)) as c:
            mdts = c.max_transfer
            assert mdts >= 64 << 10
            nlb = mdts // 512
            data = os.urandom(mdts)
            small = os.urandom(512)
            out = await c.submit_batch([
                Request("io", C.rw(C.OP_WRITE, 1, 0, 1), data_out=small),
                Request("io", C.rw(C.OP_WRITE, 1, 8, nlb), data_out=data)])
            assert all(x.ok for x in out), out
            out = await c.submit_batch([
                Request("io", C.rw(C.OP_READ, 1, 0, 1), data_in_len=512),
                Request("io", C.rw(C.OP_READ, 1, 8, nlb), data_in_len=mdts)])
            assert [x.data for x in out] == [small, data]
            too_big = await c.io(C.rw(C.OP_READ, 1, 0, 2 * nlb), data_in_len=2 * mdts)
            assert not too_big.ok                       # the controller enforces MDTS itself
            stats = c.statistics()
            assert stats.timeouts == 0 and stats.resets == 0
            assert stats.extra["stray_completions"] == 0 and stats.extra["vectors"] > 1
    trio.run(main)


def test_unmount_leaves_the_controller_disabled_for_the_next_driver(bdf, tmp_path):
    mnt = tmp_path / "mnt"
    with foreground(mnt, vfio(bdf)):
        pass

    async def registers():
        t = VfioTransport(bdf)
        async with trio.open_nursery() as nursery:
            await t.open(nursery)
            try:
                return t.read32(R.CC), t.read32(R.CSTS)
            finally:
                t.close()
    cc, csts = trio.run(registers)
    assert not R.CC_EN.get(cc) and not R.CSTS_RDY.get(csts)
    dev = kernel(bdf)
    assert b"QEMU" in run(["nvme", "id-ctrl", dev]).stdout


def test_kill_9_then_the_next_mount_resets_and_serves(bdf, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    uri = vfio(bdf)
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([NVMEFS, "mount", "-f", "--passthru", "all", str(mnt), uri],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: fuse_device(mnt) or proc.poll() is not None, 60, "mount")
    name = os.listdir(mnt)[0]
    # commands in flight when it dies
    busy = subprocess.Popen([sys.executable, "-c", f"""
import os
fd = os.open({str(mnt / name / 'passthru/io')!r}, os.O_RDWR)
req = ''.join(f'opcode=0x02 nsid=1 cdw10={{i}} cdw12=7 data_len=4096\\n' for i in range(64))
while True:
    os.write(fd, req.encode()); os.read(fd, 1 << 20)
"""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    busy.kill()
    busy.wait(30)
    run(["fusermount3", "-u", "-z", str(mnt)])
    with foreground(mnt, uri, args=("--passthru", "all")):
        d = mnt / os.listdir(mnt)[0]
        assert json.loads((d / "identify.json").read_text())["mn"].startswith("QEMU")
        sh("echo 'opcode=0x02 nsid=1 data_len=512' > passthru/io.r", d)
        assert "name=SUCCESS" in sh("head -1 passthru/io.r", d).stdout.decode()


def test_the_contract_suite_on_vfio(bdf):
    uri = vfio(bdf)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-o", "addopts=", "tests/backend/test_contract.py"],
                       env={**os.environ, "NVMEFS_TEST_DEVICES": uri}, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"^6 passed", r.stdout, re.M), r.stdout[-500:]


def test_events_and_cdq_on_qemus_controller(bdf, tmp_path):
    """The driver keeps Asynchronous Event Requests and enables SMART events: QEMU's
    temperature warning reaches `events` with its log page. QEMU 7.2's controller has
    no Controller Data Queues: create is refused EOPNOTSUPP (Invalid Opcode)."""
    from ..linux.test_tree import admin, events_after
    mnt = tmp_path / "mnt"
    with foreground(mnt, vfio(bdf), args=("--passthru", "all")):
        root = mnt / "nvme0"
        try:
            event = events_after(root, lambda: admin(root, "opcode=0x09 cdw10=0x04 cdw11=300\n"))
        finally:
            admin(root, "opcode=0x09 cdw10=0x04 cdw11=343\n")
        assert (event["source"], event["type_name"], event["info_name"], event["lid"]) == \
            ("aer", "smart", "temperature-threshold", 2)
        assert event["log"]["critical_warning"] & 2
        r = sh("echo 'create m entries=64' > nvme0/cdq/ctl", mnt, check=False)
        assert r.returncode and b"Operation not supported" in r.stderr
    kernel(bdf)
