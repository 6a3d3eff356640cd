"""`nvmefs completion bash`: the script, sourced in bash, its function called as bash
calls it (COMP_WORDS, COMP_CWORD, COMP_LINE, COMP_POINT), COMPREPLY checked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nvmefs import cli, completion, fstab
from nvmefs.spec import render
from nvmefs.spec.passthru import POLICIES

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="no bash")

DRIVER = r"""
source "$1"; shift
line=$1; shift
COMP_LINE=$line COMP_POINT=${#line}
COMP_WORDS=("$@") COMP_CWORD=$(( $# - 1 ))
[[ -n ${NO_LINE-} ]] && unset COMP_LINE COMP_POINT
_nvmefs
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "nvmefs.bash"
    path.write_text(completion.bash(cli.parser()))
    return path


def test_the_command_prints_the_script(capsys):
    assert cli.main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert out == completion.bash(cli.parser()) and out.rstrip().endswith("complete -F _nvmefs nvmefs")


@pytest.fixture(scope="module")
def sysfs(tmp_path_factory) -> Path:
    """/sys with nvme0 (and its subsystem), two NVMe functions (one bound to vfio-pci)
    and a function of another class bound to vfio-pci."""
    root = tmp_path_factory.mktemp("sys")
    for name in ("nvme0", "nvme-subsys0"):
        (root / "class/nvme" / name).mkdir(parents=True)
    devices = root / "bus/pci/devices"
    drivers = root / "bus/pci/drivers"
    for bdf, cls, driver in (("0000:01:00.0", "0x010802", "vfio-pci"),
                             ("0000:02:00.0", "0x020000", "vfio-pci"),
                             ("0000:03:00.0", "0x010802", "nvme")):
        d = devices / bdf
        d.mkdir(parents=True)
        (d / "class").write_text(cls + "\n")
        (drivers / driver).mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(drivers / driver)
        (drivers / driver / bdf).symlink_to(d)
    return root


def complete(script: Path, line: str, words: list[str] | None = None, sysfs: Path | None = None,
             line_too: bool = True) -> list[str]:
    """COMPREPLY for the command line `line` (cursor at its end). `words`: COMP_WORDS
    as bash cut them (default: `line` split at blanks, plus "" after a blank)."""
    if words is None:
        words = line.split() + ([""] if line.endswith(" ") else [])
    env = {**os.environ, "NVMEFS_SYSFS": str(sysfs or "/nonexistent")}
    if not line_too:
        env["NO_LINE"] = "1"
    r = subprocess.run(["bash", "-c", DRIVER, "driver", str(script), line, *words],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout.splitlines()


def test_subcommands_and_options(script):
    commands = list(cli.parser()._subparsers._group_actions[0].choices)
    assert "completion" in commands
    assert complete(script, "nvmefs ") == commands
    assert complete(script, "nvmefs --v") == ["--version"]
    assert complete(script, "nvmefs mount --pa") == ["--passthru"]
    assert set(complete(script, "nvmefs mount -")) >= {"-f", "--allow-other", "--max-buffer", "--others"}
    assert complete(script, "nvmefs completion ") == ["bash"]
    assert complete(script, "nvmefs discover -o ") == ["normal", "json"]


def test_choices_of_options(script):
    assert complete(script, "nvmefs mount --passthru ") == list(POLICIES)
    assert complete(script, "nvmefs mount --others r") == ["readonly"]
    assert complete(script, "nvmefs mount --passthru=r") == ["readonly"]   # bash cut at "="
    assert complete(script, "nvmefs decode --as ") == sorted(render.RENDERERS)
    assert complete(script, "nvmefs decode --as sm") == ["smart"]
    assert complete(script, "nvmefs decode --format j") == ["json"]
    assert "root" in complete(script, "nvmefs mount --uid ro")


def test_device_uris(script, sysfs):
    assert complete(script, "nvmefs mount /mnt ", sysfs=sysfs) == [
        "sim", "sim:", "vfio:sim", "vfio:", "tcp://", "/dev/nvme0", "vfio:0000:01:00.0"]
    after = complete(script, "nvmefs mount -f /mnt sim /dev/nv", sysfs=sysfs)
    assert after == ["/dev/nvme0"]
    # bash cut "vfio:0000:01:" at the colons: only what follows the last one is given back
    assert complete(script, "nvmefs mount /mnt vfio:", sysfs=sysfs) == ["sim", "0000:01:00.0"]
    assert complete(script, "nvmefs mount /mnt vfio:0000:01:", sysfs=sysfs) == ["00.0"]
    # without COMP_LINE, from bash's own words
    words = ["nvmefs", "mount", "/mnt", "vfio", ":", "0000", ":", "01", ":"]
    assert complete(script, "", words, sysfs=sysfs, line_too=False) == ["00.0"]


def test_vfio_functions(script, sysfs):
    assert complete(script, "nvmefs vfio ") == ["bind", "unbind"]
    assert complete(script, "nvmefs vfio bind ", sysfs=sysfs) == ["0000:03:00.0"]
    assert complete(script, "nvmefs vfio unbind ", sysfs=sysfs) == ["0000:01:00.0"]


def test_the_mount_8_form(script, sysfs):
    """nvmefs SOURCE MOUNTPOINT -o OPTIONS: devices joined by +, then -o's options."""
    assert complete(script, "nvmefs sim+/dev/n", sysfs=sysfs) == ["sim+/dev/nvme0"]
    options = complete(script, "nvmefs sim /mnt -o ")
    for name in fstab.VALUED:
        assert f"{name}=" in options
    assert set(fstab.FLAGS) <= set(options) and "nofail" in options
    assert complete(script, "nvmefs sim /mnt -o passthru=") == list(POLICIES)
    assert complete(script, "nvmefs sim /mnt -o passthru=all,allow") == ["all,allow_other"]
    assert complete(script, "nvmefs sim /mnt -") == ["-o"]
