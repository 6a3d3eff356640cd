"""mount(8), fstab and umount(8) through fuse3's mount.fuse3.

`mount -t fuse.nvmefs SOURCE MNT -o OPTS` runs /sbin/mount.fuse3, which runs
`nvmefs SOURCE MNT -o OPTS` with /bin/sh. mount(8) clears PATH first (util-linux
sanitizes the environment of the helpers it runs), so sh finds `nvmefs` only in
its default PATH, which starts with /usr/local/sbin. Rather than installing into
the system, the mount(8) tests run in a private mount namespace (unshare -m) where
a directory holding `nvmefs` -> this checkout's command is bind-mounted over
/usr/local/sbin; the mount they make lives in that namespace, so each test's
shell does its mount, reads and umount there. mount.fuse3 itself keeps PATH:
called directly, with this checkout's bin first in PATH, it mounts in the test's
own namespace.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import NVMEFS, is_mounted, run, wait_for
from .test_shell import daemons_for

MOUNT_FUSE3 = next((p for p in ("/sbin/mount.fuse3", "/usr/sbin/mount.fuse3") if os.access(p, os.X_OK)),
                   None)


def _missing() -> str | None:
    if not MOUNT_FUSE3:
        return "no /sbin/mount.fuse3 (Debian package fuse3)"
    if os.geteuid() != 0:
        return "mount(8) of an fstab-less FUSE type needs root"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@contextlib.contextmanager
def no_daemon_left(mnt: Path):
    """Afterwards the daemon must be gone; one still there is killed (in a namespace of
    its own, its mount goes with it), and the test fails."""
    try:
        yield
        wait_for(lambda: not daemons_for(mnt), 10, f"the daemon of {mnt} to exit")
    finally:
        for pid in daemons_for(mnt):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def in_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace where sh's default PATH finds
    this checkout's nvmefs (see the module's docstring)."""
    shadow = tmp_path / "sbin"
    shadow.mkdir()
    (shadow / "nvmefs").symlink_to(NVMEFS)
    prologue = f"set -e\nmount --bind {shlex.quote(str(shadow))} /usr/local/sbin\n"
    return run(["unshare", "--mount", "--propagation", "private", "bash", "-c", prologue + script],
               timeout=120, text=True)


@pytest.fixture
def mount8(tmp_path):
    if not shutil.which("unshare") or not os.path.isdir("/usr/local/sbin"):
        pytest.skip("needs unshare(1) and /usr/local/sbin")
    probe = run(["unshare", "--mount", "--propagation", "private", "true"], timeout=30)
    if probe.returncode:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.decode().strip()}")
    return lambda script: in_namespace(script, tmp_path)


def test_mount_fuse3_runs_nvmefs_and_umount_ends_the_daemon(mnt):
    """What mount(8) runs for `mount -t fuse.nvmefs sim MNT -o passthru=readonly`."""
    mnt.mkdir()
    env = {**os.environ, "PATH": f"{Path(NVMEFS).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    with no_daemon_left(mnt):
        r = run([MOUNT_FUSE3, "sim", str(mnt), "-o", "rw,passthru=readonly", "-t", "fuse.nvmefs"],
                env=env, text=True)
        assert r.returncode == 0, r.stderr
        try:
            assert "backend: sim" in (mnt / "nvme0/info").read_text()
            fields = next(line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                          if f" {mnt} " in line).split(" - ")[1].split()
            assert fields[0] == "fuse.nvmefs"
            assert daemons_for(mnt)
        finally:
            r = run(["umount", str(mnt)], text=True)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)


def test_mount_8_cat_and_umount(mount8, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with no_daemon_left(mnt):
        r = mount8(f"""
            mount -t fuse.nvmefs sim {mnt} -o passthru=readonly
            grep -q ' {mnt} .* - fuse.nvmefs nvmefs ' /proc/self/mountinfo
            cat {mnt}/nvme0/info
            umount {mnt}
            ! grep -q ' {mnt} ' /proc/self/mountinfo
        """)
        assert r.returncode == 0, r.stderr
        assert "backend: sim" in r.stdout and "name: nvme0" in r.stdout


def test_an_fstab_line(mount8, tmp_path):
    """Several devices joined by +, a device URI with , and = and a space written
    \\040, fstab's and systemd's options ignored, a kernel flag (noexec) applied."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# nvmefs\n"
        f"sim+sim:size=64M,namespaces=2,model=fstab\\040model  {mnt}  fuse.nvmefs  "
        "nofail,x-systemd.requires=foo,_netdev,noexec,passthru=all,others=off,umask=027  0  0\n")
    with no_daemon_left(mnt):
        r = mount8(f"""
            mount -T {fstab} {mnt}
            ls {mnt}
            grep ^model: {mnt}/nvme1/info
            grep ^bytes: {mnt}/nvme1/ns/1/info
            ls {mnt}/nvme1/ns | tr '\\n' ' '; echo
            stat -c %a {mnt}/nvme0/log/smart
            grep ' {mnt} ' /proc/self/mountinfo
            umount {mnt}
        """)
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert {"nvme0", "nvme1"} <= set(out[:3])
        assert "model: fstab model" in out and "bytes: 67108864" in out and "1 2 " in out
        assert "440" in out                                 # umask=027 took effect
        mountinfo = out[-1]
        assert "fuse.nvmefs" in mountinfo and "noexec" in mountinfo.split(" - ")[0]


def test_a_bad_option_fails_the_mount_with_its_name(mount8, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with no_daemon_left(mnt):
        r = mount8(f"""
            set +e
            mount -t fuse.nvmefs sim {mnt} -o passthru=readonly,bogus,colour=blue
            echo "exit $?"
            grep -c ' {mnt} ' /proc/self/mountinfo
        """)
        assert "unknown mount options: bogus, colour=blue" in r.stderr
        assert "exit 0" not in r.stdout and r.stdout.splitlines()[-1] == "0"
