"""`nvmefs SOURCE MOUNTPOINT -o OPTIONS` (mount(8)'s form) as `nvmefs mount` arguments."""

from __future__ import annotations

import pytest

from nvmefs import cli, fstab


def parse(*argv: str):
    """What main() does with the form: the `nvmefs mount` namespace and kernel flags."""
    mount_args, flags = fstab.mount_argv(list(argv))
    return cli.parser().parse_args(mount_args), flags


def test_every_mount_option_has_an_o_spelling():
    mount = cli.parser()._subparsers._group_actions[0].choices["mount"]
    spelled = set(fstab.VALUED.values()) | set(fstab.FLAGS.values())
    for action in mount._actions:
        if action.option_strings and action.dest != "help":
            assert action.option_strings[-1] in spelled, action.option_strings


def test_options_and_devices():
    args, flags = parse("sim+sim:size=64M,namespaces=2+vfio:sim", "/mnt/nvme", "-o",
                        "rw,passthru=all,others=off,allow_other,uid=0,gid=0,umask=027,"
                        "max_buffer=64M,log=/tmp/nvmefs.log,debug,foreground")
    assert args.command == "mount" and args.mountpoint == "/mnt/nvme"
    assert args.devices == ["sim", "sim:size=64M,namespaces=2", "vfio:sim"]
    assert (args.passthru, args.others, args.allow_other, args.uid, args.gid, args.umask) == \
        ("all", "off", True, 0, 0, 0o27)
    assert (args.max_buffer, args.log, args.debug, args.foreground) == \
        (64 << 20, "/tmp/nvmefs.log", True, True)
    assert flags == []
    args, _ = parse("sim", "/m", "-o", "max-buffer=1G", "-o", "allow-other")   # dashes, two -o
    assert args.max_buffer == 1 << 30 and args.allow_other


def test_auto_is_every_local_controller():
    args, flags = parse("auto", "/mnt/nvme")
    assert args.devices == [] and args.passthru == "readonly" and not args.foreground


def test_mount_8_and_systemd_options_are_ignored_kernel_flags_passed():
    opts = ("defaults,rw,nofail,noauto,auto,user,users,nouser,owner,group,_netdev,dev,suid,"
            "nodev,nosuid,x-systemd.requires=foo,x-systemd.automount,x-gvfs-show,comment=x,"
            "user=alice,ro,noexec,noatime,,sync")
    args, flags = parse("sim", "/m", "-o", opts)
    assert flags == ["ro", "noexec", "noatime", "sync"]
    assert not args.allow_other and args.passthru == "readonly"


@pytest.mark.parametrize("argv, message", [
    (["sim", "/m", "-o", "bogus,passthru=all,colour=blue"], "unknown mount options: bogus, colour=blue"),
    (["sim", "/m", "-o", "uid="], "option uid needs a value"),
    (["sim", "/m", "-o", "foreground=yes"], "option foreground takes no value"),
    (["sim++sim", "/m"], "expected DEVICE[+DEVICE...] or auto"),
    (["sim", "/dev/fd/3", "-o", "rw"], "drop_privileges is not supported"),
    (["sim", "/m", "extra"], "unrecognized arguments: extra"),
])
def test_errors_exit_2_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_value_is_the_mount_option_s_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["sim", "/m", "-o", "passthru=everything"])
    assert e.value.code == 2 and "invalid choice: 'everything'" in capsys.readouterr().err


def test_subcommands_are_not_taken_for_a_source():
    assert not fstab.is_helper_form(["mount", "/m"], ["mount", "umount"])
    assert not fstab.is_helper_form(["--version"], ["mount"])
    assert fstab.is_helper_form(["sim", "/m"], ["mount", "umount"])


def test_version_comes_from_the_package_metadata(capsys):
    from importlib import metadata
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"nvmefs {metadata.version('nvmefs')}\n"
