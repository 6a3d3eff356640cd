"""systemd: sd_notify from the daemon (Type=notify) and the template unit.

The test plays the service manager: it binds the datagram socket NOTIFY_SOCKET
names (a path, or an abstract address written @name) and runs `nvmefs mount -f`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import nvmefs

from .conftest import NVMEFS, fuse_device, is_mounted, run, stop, wait_for

UNIT = Path(nvmefs.__file__).parent / "deploy" / "nvmefs@.service"


def notify_socket(kind: str, tmp_path: Path) -> tuple[socket.socket, str]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "abstract":
        name = f"nvmefs-test-{uuid.uuid4().hex}"
        s.bind("\0" + name)
        return s, "@" + name
    path = str(tmp_path / "notify")
    s.bind(path)
    return s, path


def receive(s: socket.socket, timeout: float) -> dict[str, str]:
    s.settimeout(timeout)
    data = s.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def start(mnt: Path, env: dict, *devices: str) -> tuple[subprocess.Popen, object]:
    mnt.mkdir(exist_ok=True)
    log = tempfile.NamedTemporaryFile(prefix="nvmefs-daemon-", suffix=".log")
    proc = subprocess.Popen([NVMEFS, "mount", "-f", str(mnt), *(devices or ("sim",))],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **env})
    return proc, log


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_once_the_mount_serves_and_stopping_on_sigterm(mnt, tmp_path, kind):
    s, address = notify_socket(kind, tmp_path)
    mnt = Path(os.path.abspath(mnt))
    proc, log = start(mnt, {"NOTIFY_SOCKET": address}, "sim", "sim:namespaces=2")
    ok = False
    try:
        ready = receive(s, 60)
        listing = os.listdir(mnt)           # at the moment READY=1 arrives, the mount answers
        assert ready["READY"] == "1"
        assert {"nvme0", "nvme1"} <= set(listing)
        assert ready["STATUS"] == f"serving {mnt}: nvme0 (sim), nvme1 (sim:namespaces=2)"
        proc.send_signal(signal.SIGTERM)
        stopping = receive(s, 30)
        assert stopping["STOPPING"] == "1" and stopping["STATUS"] == f"unmounting {mnt}"
        assert proc.wait(timeout=30) == 0
        assert not is_mounted(mnt)
        ok = True
    finally:
        steps = stop(proc, mnt, fuse_device(mnt))
        s.close()
        if steps or not ok:
            log.seek(0)
            print(f"teardown: {steps}\n{log.read().decode(errors='replace')}")
    assert not steps


def test_a_missing_notify_socket_does_not_fail_the_mount(mnt, tmp_path):
    mnt = Path(os.path.abspath(mnt))
    proc, log = start(mnt, {"NOTIFY_SOCKET": str(tmp_path / "gone")})
    try:
        wait_for(lambda: fuse_device(mnt) or proc.poll() is not None, 30, "mount")
        assert proc.poll() is None and "nvme0" in os.listdir(mnt)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc, mnt, fuse_device(mnt))
        log.seek(0)
        text = log.read().decode(errors="replace")
    assert "could not notify the service manager" in text


def test_the_unit_verifies(tmp_path):
    """`systemd-analyze verify` of the template as `make install` writes it (ExecStart
    pointing at the installed command, here this checkout's), with no warning."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("no systemd-analyze (Debian package systemd)")
    text = UNIT.read_text()
    assert "\nExecStart=nvmefs ${SOURCE} %f -o foreground,${OPTIONS}\n" in text
    unit = tmp_path / "nvmefs@.service"
    unit.write_text(text.replace("\nExecStart=nvmefs ", f"\nExecStart={NVMEFS} "))
    instance = tmp_path / "nvmefs@mnt-nvme.service"
    instance.symlink_to(unit.name)
    for name in (unit, instance):
        r = run([analyze, "verify", "--man=no", str(name)], text=True, cwd=tmp_path)
        if r.returncode and "Failed to initialize manager" in r.stderr:
            pytest.skip(f"systemd-analyze cannot run here: {r.stderr.strip()}")
        assert (r.returncode, r.stderr) == (0, ""), name
    for line in ("Type=notify", "EnvironmentFile=/etc/nvmefs/%i.env", "Restart=on-failure",
                 "ExecStop=-fusermount3 -u %f", "DeviceAllow=/dev/fuse rw", "LimitMEMLOCK=infinity"):
        assert f"\n{line}\n" in text, line
    # any file system namespacing would keep the mount from the host
    for setting in ("ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateDevices=",
                    "PrivateMounts=", "ReadOnlyPaths=", "ReadWritePaths=", "InaccessiblePaths=",
                    "ProtectKernelModules=", "ProtectKernelTunables=", "ProtectControlGroups=",
                    "ProtectKernelLogs=", "MountFlags="):
        assert f"\n{setting}" not in text, setting


def test_the_instance_is_the_escaped_mount_point():
    """The README's `nvmefs@$(systemd-escape --path /mnt/nvme).service` reads
    /etc/nvmefs/mnt-nvme.env and mounts at %f, the instance unescaped: /mnt/nvme."""
    if not shutil.which("systemd-escape"):
        pytest.skip("no systemd-escape (Debian package systemd)")
    assert run(["systemd-escape", "--path", "/mnt/nvme"], text=True).stdout.strip() == "mnt-nvme"
    assert run(["systemd-escape", "--unescape", "--path", "mnt-nvme"],
               text=True).stdout.strip() == "/mnt/nvme"
