"""Start-up: each command imports only what it uses, and the controllers of a mount
open at once, in the order given, closed again if one of them fails."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import trio

from nvmefs import backends, mount
from nvmefs.backends import TransportError, opened_all
from nvmefs.backends.sim import SimController

# what a command that neither talks to a controller nor mounts must not import
HEAVY = ("trio", "pyfuse3", "cffi", "_cffi_backend", "nvmefs._nvme", "nvmefs.backends",
         "nvmefs.fs", "nvmefs.mount")

DELAY = 0.5             # seconds each slowed controller takes to answer its first Identify
IDENTIFY_FAILS = "fault=status:admin:0x06:1:INVALID_FIELD"


def imported_by(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running `code`."""
    r = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\n"
                               "print(json.dumps(sorted(sys.modules)), file=sys.stderr)"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return json.loads(r.stderr.splitlines()[-1])


def cli_imports(*argv: str) -> list[str]:
    return imported_by("import contextlib, nvmefs.cli\n"
                       "with contextlib.suppress(SystemExit):\n"
                       f"    nvmefs.cli.main({list(argv)!r})")


def among(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["completion", "bash"],
                                  ["decode", "--help"], ["mount", "--help"]])
def test_commands_that_need_no_controller_import_none_of_it(argv):
    assert among(cli_imports(*argv), *HEAVY) == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["umount", "--help"]])
def test_version_and_help_import_no_decoder(argv):
    assert among(cli_imports(*argv), "nvmefs.spec") == []


def test_decode_imports_only_the_decoders(tmp_path):
    blob = tmp_path / "smart.bin"
    blob.write_bytes(bytes(512))
    assert among(cli_imports("decode", "--as", "smart", str(blob)), *HEAVY) == []


def test_umount_imports_no_daemon(tmp_path):
    modules = cli_imports("umount", str(tmp_path))
    assert among(modules, "trio", "pyfuse3", "cffi", "nvmefs.backends", "nvmefs.fs") == []


def test_the_fstab_form_is_parsed_without_the_daemon():
    modules = imported_by(
        "from nvmefs import cli, fstab\n"
        "argv, flags = fstab.mount_argv(['sim+sim', '/mnt', '-o', 'passthru=all,noatime'])\n"
        "cli.parser().parse_args(argv)")
    assert among(modules, *HEAVY) == []


def slow(serial: str) -> str:
    """A sim that answers its first Identify DELAY seconds late (its start waits on it)."""
    return f"sim:serial={serial},fault=delay:admin:0x06:1:{DELAY}"


async def test_controllers_open_at_once_in_the_order_given():
    serials = ["S0", "S1", "S2", "S3"]
    start = trio.current_time()
    async with opened_all([slow(s) for s in serials]) as ctrls:
        took = trio.current_time() - start
        assert [c.id_ctrl["sn"].strip() for c in ctrls] == serials
        assert mount.controller_names(ctrls) == ["nvme0", "nvme1", "nvme2", "nvme3"]
        assert all(c.state == "live" for c in ctrls)
    assert DELAY <= took < 3 * DELAY        # one delay, not four
    assert all(c.state == "closed" for c in ctrls)


@pytest.fixture
def closed(monkeypatch) -> list[str]:
    """The serials of the sim controllers closed, in the order they were."""
    seen: list[str] = []
    aclose = SimController.aclose

    async def spy(self):
        seen.append(self.config.serial)
        await aclose(self)

    monkeypatch.setattr(SimController, "aclose", spy)
    return seen


async def test_one_failing_closes_the_others_and_says_why(closed):
    uris = ["sim:serial=A", f"sim:serial=B,{IDENTIFY_FAILS}", slow("C")]
    start = trio.current_time()
    with pytest.raises(TransportError) as failure:
        await mount.serve(mount.MountOptions("/nonexistent", uris), lambda: None)
    assert str(failure.value) == f"{uris[1]}: Identify Controller failed: INVALID_FIELD"
    assert sorted(closed) == ["A", "B", "C"]
    assert trio.current_time() - start < DELAY       # C's start was cancelled, not awaited


async def test_of_several_failures_the_first_given_is_raised(monkeypatch):
    class Failing(SimController):
        async def start(self, nursery):
            raise TransportError(self.uri)     # at once: every start fails

    monkeypatch.setattr(backends, "controller_class", lambda uri: Failing)
    with pytest.raises(BaseExceptionGroup) as group:
        async with opened_all(["sim:serial=X", "sim:serial=Y", "sim:serial=Z"]):
            pytest.fail("opened")
    assert str(mount.sole_exception(group.value)) == "sim:serial=X"


async def test_a_bad_device_fails_before_any_is_opened(closed):
    with pytest.raises(ValueError, match="unknown device 'foo:x'"):
        async with opened_all(["sim", "foo:x", "sim:bogus=1"]):
            pytest.fail("opened")
    assert closed == []
