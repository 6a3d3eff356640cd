"""The tcp backend against Linux's nvmet-tcp, the kernel's NVMe/TCP host and nvme-cli
as the peers on the same subsystem: discovery, the tree, data across, digests, and a
port removed and re-added under a running batch."""

import json
import os

import trio

from nvmefs.backends import Request, opened
from nvmefs.spec import commands as C
from nvmefs.spec import status as S
from nvmefs.spec.identify import block_size, decode_id_ns

from ..linux.test_tree import nvme_cli
from ..mount.conftest import NVMEFS, foreground, run, sh
from ..unit.test_vectors import contains
from .conftest import DISCOVERY_PORT, NQN, PORT

URI = f"tcp://127.0.0.1:{PORT}/{NQN}"


def test_discover_prints_what_nvme_discover_prints(nvmet):
    ours = json.loads(run([NVMEFS, "discover", "-o", "json",
                           f"tcp://127.0.0.1:{DISCOVERY_PORT}"]).stdout)
    theirs = nvme_cli("discover", "-t", "tcp", "-a", "127.0.0.1", "-s", DISCOVERY_PORT)
    assert ours["records"] == theirs["records"]
    assert any(r["subnqn"] == NQN and r["trsvcid"] == DISCOVERY_PORT for r in ours["records"])
    text = run([NVMEFS, "discover", f"tcp://127.0.0.1:{DISCOVERY_PORT}"]).stdout.decode()
    assert f"subnqn:  {NQN}" in text


def test_a_mounted_discovery_controller_shows_its_log(nvmet, tmp_path):
    uri = f"tcp://127.0.0.1:{DISCOVERY_PORT}/nqn.2014-08.org.nvmexpress.discovery?kato=0"
    with foreground(tmp_path / "mnt", uri):
        d = tmp_path / "mnt" / os.listdir(tmp_path / "mnt")[0]
        assert "discovery" in os.listdir(d / "log")
        ours = json.loads((d / "log/discovery.json").read_text())
        theirs = nvme_cli("discover", "-t", "tcp", "-a", "127.0.0.1", "-s", DISCOVERY_PORT)
        assert ours["records"] == theirs["records"]
        assert len((d / "log/discovery").read_bytes()) == 1024 * (1 + len(ours["records"]))


def test_the_tree_equals_nvme_cli_through_the_kernel_host(nvmet, tmp_path):
    dev, disk = nvmet.kernel_host()
    try:
        with foreground(tmp_path / "mnt", URI, args=("--passthru", "all")):
            d = tmp_path / "mnt" / os.listdir(tmp_path / "mnt")[0]
            ours = json.loads((d / "identify.json").read_text())
            theirs = nvme_cli("id-ctrl", dev)
            assert ours["cntlid"] != theirs["cntlid"]        # two controllers of one subsystem
            contains({**ours, "cntlid": 0}, {**theirs, "cntlid": 0})
            contains(json.loads((d / "ns/1/identify.json").read_text()),
                     nvme_cli("id-ns", dev, "-n", "1"))
            contains(json.loads((d / "log/error.json").read_text()), nvme_cli("error-log", dev))
            ours_fw = json.loads((d / "log/fw-slot.json").read_text())   # keyed by the
            theirs_fw = nvme_cli("fw-log", dev)                          # device name
            contains(next(iter(ours_fw.values())), next(iter(theirs_fw.values())))
            info = (d / "info").read_text()
            assert "backend: tcp" in info and f"subnqn: {NQN}" in info
            # data written over tcp, read by dd on the kernel host's block device
            bs = int((d / "ns/1/info").read_text().split("block_size: ")[1].split()[0])
            pattern = os.urandom(bs)
            sh(f"echo 'opcode=0x01 nsid=1 cdw10=2048 data_len={bs} "
               f"data={pattern.hex()}' > passthru/io.w", d)
            assert "name=SUCCESS" in sh("cat passthru/io.w", d).stdout.decode()
        got = run(["dd", f"if={disk}", f"bs={bs}", "skip=2048", "count=1", "iflag=direct",
                   "status=none"]).stdout
        assert got == pattern
    finally:
        nvmet.disconnect_kernel_host()


async def lba_size(c) -> int:
    return block_size(decode_id_ns((await c.identify_ns(1)).data))


def test_digests_on_and_off(nvmet):
    async def main():
        for digest in ("none", "header", "data", "header,data"):
            async with opened(f"{URI}?digest={digest}&queues=2") as c:
                bs = await lba_size(c)
                data = os.urandom(64 << 10)                 # R2T (over 16 KiB in-capsule)
                assert (await c.io(C.rw(C.OP_WRITE, 1, 64, len(data) // bs),
                                   data_out=data)).ok
                small = os.urandom(bs)                      # in the capsule
                assert (await c.io(C.rw(C.OP_WRITE, 1, 32, 1), data_out=small)).ok
                out = await c.submit_batch([
                    Request("io", C.rw(C.OP_READ, 1, 64, len(data) // bs),
                            data_in_len=len(data)),
                    Request("io", C.rw(C.OP_READ, 1, 32, 1), data_in_len=bs)])
                assert [x.data for x in out] == [data, small], digest
    trio.run(main)


def test_a_port_removed_under_a_batch_then_back(nvmet):
    async def main():
        async with opened(f"{URI}?queues=2") as c:
            bs = await lba_size(c)
            reads = [Request("io", C.rw(C.OP_READ, 1, i, 1), data_in_len=bs) for i in range(256)]
            answers = []

            async def batches():
                for _ in range(20):
                    answers.extend(await c.submit_batch(reads))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(batches)
                await trio.sleep(0.2)
                await trio.to_thread.run_sync(nvmet.unlink)
                await trio.sleep(1)
                await trio.to_thread.run_sync(nvmet.link)
            assert len(answers) == 20 * 256
            assert all(a.ok or a.status == S.HOST_ABORTED for a in answers)
            assert any(a.status == S.HOST_ABORTED for a in answers)
            with trio.fail_after(60):
                while c.counts["reconnects"] < 1:
                    await trio.sleep(0.1)
            assert (await c.io(C.rw(C.OP_READ, 1, 0, 1), data_in_len=bs)).ok
    trio.run(main)
