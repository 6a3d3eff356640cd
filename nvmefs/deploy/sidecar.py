"""The container image's entry point: `nvmefs mount -f --allow-other ARGS`, after
creating the mount point when it is missing.

Readers share a sidecar's mount through a volume mounted at the mount point's *parent*
(the image mounts at /mnt/nvme, the volume goes on /mnt): a container that bound the
FUSE mount itself would keep the dead mount after the sidecar restarted, while one that
bound the parent sees the new mount appear (mount propagation). Such a volume starts
empty, so the mount point has to be made here.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from nvmefs import cli

PREFIX = ["mount", "-f", "--allow-other"]


def mountpoint(args: list[str]) -> str | None:
    """The mount point `nvmefs mount` would take from `args`, None if they don't parse
    (nvmefs itself then says what is wrong)."""
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            return cli.parser().parse_args(PREFIX + args).mountpoint
    except SystemExit:
        return None


def make_mountpoint(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        pass    # a directory, or a mount left by a killed daemon: nvmefs detaches that


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    mp = mountpoint(args)
    if mp is not None:
        try:
            make_mountpoint(mp)
        except OSError as e:
            print(f"nvmefs sidecar: cannot create {mp}: {e.strerror}", file=sys.stderr)
    # the nvmefs beside this Python (the image's venv), else the one on PATH
    beside = Path(sys.executable).with_name("nvmefs")
    nvmefs = str(beside) if beside.exists() else "nvmefs"
    os.execvp(nvmefs, [nvmefs, *PREFIX, *args])


if __name__ == "__main__":
    main()
