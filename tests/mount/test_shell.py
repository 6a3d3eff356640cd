"""A mounted simulated controller, used the way operators use it: ls, cat, jq, xxd, dd."""

import json
import os
import signal
import stat
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import foreground, is_mounted, nvmefs, sh, wait_for


def test_shell_tour(mnt):
    with foreground(mnt, "sim:model=tour model,serial=TOUR1"):
        listing = sh("ls nvme0 nvme0/log", mnt).stdout.decode()
        for name in ("identify", "identify.json", "info", "log", "features", "ns",
                     "smart", "smart.json", "smart.txt", "error", "fw-slot", "by-id"):
            assert name in listing.split()
        assert sh("jq -r .mn nvme0/identify.json", mnt).stdout.decode().rstrip() == "tour model"
        head = sh("xxd nvme0/identify | head -2", mnt).stdout.decode()
        assert head.startswith("00000000: 0000 0000 544f 5552 3120") and "TOUR1" in head
        assert sh("xxd nvme0/identify | xxd -r | cmp - nvme0/identify", mnt).returncode == 0
        assert sh("jq .temperature nvme0/log/smart.json", mnt).stdout.strip() == b"313"
        text = sh("cat nvme0/log/smart.txt", mnt).stdout.decode()
        assert "temperature" in text and "40°C (313 Kelvin)" in text
        assert os.stat(mnt / "nvme0/log/smart").st_size == 512
        assert sh("wc -c < nvme0/log/smart", mnt).stdout.strip() == b"512"
        info = sh("grep ^model: nvme0/info", mnt).stdout.decode()
        assert info == "model: tour model\n"


def test_several_controllers(mnt):
    with foreground(mnt, "sim", "sim:namespaces=2,size=128M"):
        assert sorted(os.listdir(mnt)) == ["metrics", "nvme0", "nvme1"]
        serials = {json.loads((mnt / f"nvme{i}/identify.json").read_text())["sn"] for i in (0, 1)}
        assert len(serials) == 2
        assert sorted(os.listdir(mnt / "nvme1/ns")) == ["1", "2"]


def test_seek_into_a_large_log(mnt):
    with foreground(mnt):
        out = sh("dd if=nvme0/log/telemetry-host bs=512 skip=2000 count=1 status=none | head -c 40",
                 mnt).stdout
        assert out.startswith(b"nvmefs-sim telemetry gen=") and b"block=2000" in out
        assert sh("tail -c 512 nvme0/log/telemetry-host | head -c 40", mnt).stdout \
            .split(b"block=")[1].startswith(b"2047")


def test_errors_reach_the_shell(mnt):
    with foreground(mnt):
        r = sh("cat nvme0/log/by-id/0xc0", mnt, check=False)
        assert r.returncode and b"Operation not supported" in r.stderr
        r = sh("echo 1 > nvme0/identify", mnt, check=False)
        assert r.returncode and b"Permission denied" in r.stderr
        assert not os.path.exists(mnt / "nvme0/log/by-id/0x2")


def test_owner_and_mode_options(mnt):
    with foreground(mnt, args=("--uid", "1234", "--gid", "5678", "--umask", "027")):
        st = os.stat(mnt / "nvme0/log/smart")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o440)
        assert stat.S_IMODE(os.stat(mnt / "nvme0/log").st_mode) == 0o550


def test_concurrent_readers(mnt):
    with foreground(mnt):
        procs = [subprocess.Popen("jq -r .sn nvme0/identify.json && jq .temperature nvme0/log/smart.json",
                                  shell=True, cwd=mnt, stdout=subprocess.PIPE) for _ in range(8)]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs) and len(set(outs)) == 1


def test_signals_unmount_cleanly(mnt):
    for sig in (signal.SIGTERM, signal.SIGINT):
        with foreground(mnt) as proc:
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0
            assert not is_mounted(mnt)


def test_daemon_mode_and_umount(mnt):
    mnt.mkdir()
    nvmefs("mount", str(mnt), "sim")         # returns once the mount is ready
    try:
        assert json.loads((mnt / "nvme0/identify.json").read_text())["mn"].strip()
        r = nvmefs("mount", str(mnt), "sim", check=False)
        assert r.returncode == 1 and "already serving" in r.stderr
    finally:
        nvmefs("umount", str(mnt))
    assert not is_mounted(mnt)
    wait_for(lambda: not daemons_for(mnt), 10, "daemon exit")
    r = nvmefs("umount", str(mnt), check=False)
    assert r.returncode == 1 and "not mounted" in r.stderr


def daemons_for(mnt) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if str(mnt).encode() in args and any(a.endswith(b"nvmefs") for a in args[:2]):
            pids.append(int(pid))
    return pids


def test_stale_mount_of_a_killed_daemon_is_recovered(mnt):
    with foreground(mnt) as proc:
        proc.kill()
        proc.wait(timeout=10)
        assert is_mounted(mnt)
        try:
            os.stat(mnt)
        except OSError as e:
            assert e.errno == 107      # ENOTCONN: Transport endpoint is not connected
        r = nvmefs("mount", str(mnt), "sim")
        try:
            assert "left mounted by a daemon that is gone" in r.stderr
            assert (mnt / "nvme0/identify").stat().st_size == 4096
        finally:
            nvmefs("umount", str(mnt))


def test_a_daemon_killed_as_soon_as_it_mounts_exits_at_once(mnt):
    """SIGKILL the moment the mount appears, while the daemon may still be starting:
    no thread of the daemon may wait on its own mount (it could never be answered)."""
    for _ in range(8):
        with foreground(mnt) as proc:
            proc.kill()
            proc.wait(timeout=5)
        assert not is_mounted(mnt)


def test_bad_device_fails_without_leaving_a_mount(mnt):
    mnt.mkdir()
    r = nvmefs("mount", str(mnt), "sim:lba=1000", check=False)
    assert r.returncode == 1 and "lba must be 512 or 4096" in r.stderr
    r = nvmefs("mount", str(mnt), "tape:0", check=False)
    assert r.returncode == 1 and "unknown device" in r.stderr
    assert not is_mounted(mnt)


def test_decode_a_saved_blob(mnt, tmp_path):
    with foreground(mnt):
        sh(f"cp nvme0/log/smart {tmp_path}/smart.bin && cp nvme0/identify {tmp_path}/id.bin", mnt)
    smart = json.loads(nvmefs("decode", "--as", "smart", str(tmp_path / "smart.bin")).stdout)
    assert smart["temperature"] == 313
    text = nvmefs("decode", "--as", "id-ctrl", "--format", "txt", str(tmp_path / "id.bin")).stdout
    assert text.startswith("vid ")
    r = nvmefs("decode", "--as", "id-ctrl", str(tmp_path / "smart.bin"), check=False)
    assert r.returncode == 1 and "needs at least 4096 bytes" in r.stderr


def test_list_and_mount_without_a_device_on_a_machine_without_nvme(mnt):
    if os.path.isdir("/sys/class/nvme") and os.listdir("/sys/class/nvme"):
        pytest.skip("this machine has NVMe controllers")
    r = nvmefs("list", check=False)
    assert r.returncode == 1 and "no NVMe controllers" in r.stderr
    mnt.mkdir()
    r = nvmefs("mount", str(mnt), check=False)
    assert r.returncode == 1 and "no NVMe controllers; name a device" in r.stderr
    assert not is_mounted(mnt)


def test_allow_other_lets_the_file_modes_decide():
    base = Path(tempfile.mkdtemp(prefix="nvmefs-other-"))    # pytest's tmp is 0700: not here
    base.chmod(0o755)
    mnt = base / "mnt"

    def as_nobody(cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "sh", "-c", cmd], capture_output=True, text=True, timeout=30)

    try:
        with foreground(mnt, args=("--allow-other",)):
            assert as_nobody(f"jq -r .mn {mnt}/nvme0/identify.json").returncode == 0
        with foreground(mnt, args=("--allow-other", "--umask", "007")):
            r = as_nobody(f"cat {mnt}/nvme0/identify.json")
            assert r.returncode and "Permission denied" in r.stderr
        with foreground(mnt):                # without it, only the owner gets in
            r = as_nobody(f"ls {mnt}")
            assert r.returncode and "Permission denied" in r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_vfio_driver_on_the_model_serves_the_same_tree(mnt):
    """One tree over every backend: the sim and the vfio driver on the sim's register
    model give the same identify data and log pages; only vfio has `regs`."""
    with foreground(mnt, "sim:serial=SAME", "vfio:sim:serial=SAME?queues=2",
                    args=("--passthru", "all")):
        for path in ("ns/1/identify", "log/fw-slot", "log/effects", "log/error"):
            assert sh(f"cmp nvme0/{path} nvme1/{path}", mnt).returncode == 0, path
        same = "diff <(jq 'del(.cntlid)' nvme0/identify.json) <(jq 'del(.cntlid)' nvme1/identify.json)"
        assert sh(f"bash -c \"{same}\"", mnt).returncode == 0     # CNTLID follows the position
        assert not (mnt / "nvme0/regs").exists()
        regs = json.loads(sh("cat nvme1/regs.json", mnt).stdout)
        assert regs["cc"]["en"] == 1 and regs["csts"]["rdy"] == 1 and regs["vs"]["mnr"] == 4
        assert "mqes" in sh("cat nvme1/regs.txt", mnt).stdout.decode()
        assert os.stat(mnt / "nvme1/regs").st_size == 4096
        assert "driver: model" in (mnt / "nvme1/info").read_text()
        d = mnt / "nvme1"           # a write and a read back through the driver's queues
        sh(f"echo 'opcode=0x01 nsid=1 cdw10=64 data_len=512 data={'cd' * 512}' > passthru/io.w", d)
        assert "name=SUCCESS" in sh("cat passthru/io.w", d).stdout.decode()
        sh("echo 'opcode=0x02 nsid=1 cdw10=64 data_len=512' > passthru/io.r", d)
        assert sh("tail -n +2 passthru/io.r | xxd -r", d).stdout == b"\xcd" * 512
