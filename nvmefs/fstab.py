"""`nvmefs SOURCE MOUNTPOINT [-o OPTIONS]`: the form mount(8) and fstab use.

`mount -t fuse.nvmefs SOURCE MNT -o OPTS` runs /sbin/mount.fuse3 (Debian fuse3),
which runs `nvmefs SOURCE MNT -o OPTS` through /bin/sh, found in sh's default
PATH (mount(8) clears PATH: /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin,
/sbin, /bin). Before that, mount(8) drops its own options (`defaults`, `nofail`,
`noauto`, `x-*`, `comment=`, ..., and turns `user`/`users` into
`noexec,nosuid,nodev`) and mount.fuse3 handles `setuid=` and `drop_privileges`
itself, drops `user`, `nouser`, `users`, `auto`, `noauto`, `nofail`, `_netdev`, and
adds `dev` and `suid` unless `nodev`/`nosuid` were given. Whatever reaches nvmefs
is translated here into the arguments of `nvmefs mount`, so both forms mount
(and daemonize) exactly alike: SOURCE is the devices joined by `+` (or `auto`:
every local controller), each nvmefs option has an -o spelling, mount(8)'s and
systemd's options are ignored, the kernel's generic mount flags (`ro`, `noexec`,
`noatime`, ...) are passed to the FUSE mount, and anything else is an error.
"""

from __future__ import annotations

import argparse

AUTO = "auto"           # SOURCE meaning every controller of this machine
SEPARATOR = "+"         # between the devices of SOURCE

# -o NAME=VALUE -> `nvmefs mount` option (a dash may stand for the underscore)
VALUED = {"passthru": "--passthru", "others": "--others", "uid": "--uid", "gid": "--gid",
          "umask": "--umask", "max_buffer": "--max-buffer", "log": "--log"}
# -o NAME -> `nvmefs mount` flag
FLAGS = {"allow_other": "--allow-other", "debug": "--debug", "foreground": "--foreground"}
# mount(8)'s, fstab's, systemd's and mount.fuse3's own options: not ours, ignored.
# nvmefs mounts are always nodev,nosuid (mount.fuse3 adds dev,suid by default).
IGNORED = {"defaults", "rw", "auto", "noauto", "nofail", "user", "nouser", "users", "owner",
           "group", "_netdev", "dev", "suid", "nodev", "nosuid", "sloppy"}
IGNORED_PREFIXES = ("x-", "comment=", "user=")
# the kernel's generic mount flags, handed to the FUSE mount as they are
KERNEL_FLAGS = {"ro", "exec", "noexec", "sync", "async", "dirsync", "atime", "noatime",
                "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
                "nostrictatime", "lazytime", "nolazytime"}


class OptionError(ValueError):
    pass


def is_helper_form(argv: list[str], commands) -> bool:
    """True if `argv` is `SOURCE MOUNTPOINT ...` rather than a subcommand."""
    return len(argv) >= 2 and not argv[0].startswith("-") and argv[0] not in commands


def devices(source: str) -> list[str]:
    """SOURCE as the devices of `nvmefs mount` (none for `auto`: every local one)."""
    if source == AUTO:
        return []
    parts = source.split(SEPARATOR)
    if not source or not all(parts):
        raise OptionError(f"{source!r}: expected DEVICE[{SEPARATOR}DEVICE...] or {AUTO}")
    return parts


def translate(options: list[str]) -> tuple[list[str], list[str]]:
    """-o option lists as `nvmefs mount` arguments, and the kernel flags to mount with.
    Raises OptionError naming every option it does not know."""
    args: list[str] = []
    flags: list[str] = []
    unknown: list[str] = []
    for opt in (o for group in options for o in group.split(",")):
        name, eq, value = opt.partition("=")
        key = name.replace("-", "_")
        if not opt or opt in IGNORED or opt.startswith(IGNORED_PREFIXES):
            continue
        if opt in KERNEL_FLAGS:
            flags.append(opt)
        elif key in VALUED:
            if not value:
                raise OptionError(f"option {name} needs a value ({name}=...)")
            args += [VALUED[key], value]
        elif key in FLAGS:
            if eq:
                raise OptionError(f"option {name} takes no value")
            args.append(FLAGS[key])
        else:
            unknown.append(opt)
    if unknown:
        raise OptionError(f"unknown mount option{'s' if len(unknown) > 1 else ''}: "
                          f"{', '.join(unknown)}")
    return args, flags


def helper_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nvmefs", usage="%(prog)s SOURCE MOUNTPOINT [-o OPTION[,OPTION...]]",
        description="Mount as `nvmefs mount` does, in the form mount(8) uses "
                    "(mount -t fuse.nvmefs SOURCE MOUNTPOINT -o OPTIONS).")
    p.add_argument("source", metavar="SOURCE",
                   help=f"devices joined by {SEPARATOR} (sim+/dev/nvme0), or {AUTO}")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="comma-separated: passthru=, others=, allow_other, uid=, gid=, "
                        "umask=, max_buffer=, log=, debug, foreground")
    return p


def mount_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """`SOURCE MOUNTPOINT -o OPTS` as `nvmefs mount` arguments and kernel flags;
    a usage error exits 2 with its message, as argparse does."""
    p = helper_parser()
    ns = p.parse_args(argv)
    if ns.mountpoint.startswith("/dev/fd/"):
        p.error("mount.fuse3's drop_privileges is not supported: nvmefs needs its "
                "privileges to reach the controllers")
    try:
        args, flags = translate(ns.options)
        devs = devices(ns.source)
    except OptionError as e:
        p.error(str(e))
    return ["mount", *args, "--", ns.mountpoint, *devs], flags
