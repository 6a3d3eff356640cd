"""A zoned namespace through a real mount: ns/N/zones with shell tools, zone state after
writes, appends and resets sent to passthru/io."""

import json
import shutil

from .conftest import foreground, sh

SIM = "sim:size=64M,namespaces=2,zoned=8M,zoned_ns=2"
ZB = (8 << 20) // 512


def zones(d) -> list[dict]:
    return [json.loads(line) for line in (d / "ns/2/zones").read_text().splitlines()]


def test_zones_follow_writes_appends_and_resets(mnt):
    with foreground(mnt, SIM, args=("--passthru", "all")):
        d = mnt / "nvme0"
        assert sh("wc -l < ns/2/zones", d).stdout.strip() == b"8"
        assert not (d / "ns/1/zones").exists()
        first = json.loads(sh("head -n 1 ns/2/zones", d).stdout)
        assert first == {"slba": 0, "wp": 0, "cap": ZB, "state": "EMPTY", "type": "SEQWRITE_REQ",
                         "attrs": 0, "attrs_info": 0}
        block = "00" * 512
        sh(f"echo 'opcode=0x01 nsid=2 cdw12=1 data={block * 2}' > passthru/io.w", d)
        assert sh("head -1 passthru/io.w", d).stdout.startswith(b"status=0x0000")
        sh(f"echo 'opcode=0x7d nsid=2 cdw10={ZB} cdw12=0 data={block}' > passthru/io.a", d)
        line = sh("head -1 passthru/io.a", d).stdout.decode()
        assert line.startswith("status=0x0000") and f"result={ZB:#010x} dw1=0x00000000" in line
        sh(f"echo 'opcode=0x01 nsid=2 cdw10=7 data={block}' > passthru/io.bad", d)
        assert b"name=ZNS_INVALID_WRITE" in sh("head -1 passthru/io.bad", d).stdout
        z = zones(d)
        assert [(x["state"], x["wp"]) for x in z[:3]] == [
            ("IMP_OPENED", 2), ("IMP_OPENED", ZB + 1), ("EMPTY", 2 * ZB)]
        sh("echo 'opcode=0x79 nsid=2 cdw13=0x104' > passthru/io.r", d)      # reset, select all
        assert sh("head -1 passthru/io.r", d).stdout.startswith(b"status=0x0000")
        assert {x["state"] for x in zones(d)} == {"EMPTY"}
        pages = json.loads((d / "log/effects.json").read_text())
        assert [p["command_set_identifier"] for p in pages] == [0, 2]
        if shutil.which("jq"):
            full = sh("jq -c 'select(.state == \"EMPTY\") | .slba' ns/2/zones | wc -l", d)
            assert full.stdout.strip() == b"8"


def test_readonly_reads_zones_but_sends_no_zone_action(mnt):
    with foreground(mnt, SIM):
        d = mnt / "nvme0"
        sh("echo 'opcode=0x7a nsid=2 cdw12=63 cdw13=0x10000 data_len=256' > passthru/io.z", d)
        out = sh("cat passthru/io.z", d).stdout.decode()
        assert out.startswith("status=0x0000")
        r = sh("echo 'opcode=0x79 nsid=2 cdw13=4' > passthru/io.s", d, check=False)
        assert r.returncode and b"Permission denied" in r.stderr
        r = sh("echo 'opcode=0x7a nsid=1 cdw12=63 data_len=256' > passthru/io.n", d, check=False)
        assert r.returncode and b"Operation not supported" in r.stderr
        assert (d / "ns/2/identify-zns.json").exists()
        assert json.loads((d / "ns/2/identify-zns.json").read_text())["lbafe"][0]["zsze"] == ZB
