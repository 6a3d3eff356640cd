"""A do-nothing pyfuse3 file system: the floor nvmefs is measured against (bench/floor.py).

    python bench/floor/nothing.py MOUNTPOINT [--json-size N]

It serves the part of nvmefs's tree the benchmark touches, with the same
shape as nvmefs gives it (same paths, modes, entry and attribute timeouts,
direct_io, no flush handler, the same mount options and pyfuse3 task limits),
and does no work at all:

    nvme0/identify          4096 fixed bytes
    nvme0/identify.json     N fixed bytes (default 2735, the sim's size)
    nvme0/passthru/io       a mailbox: each write of k x 64 bytes makes
                            k x 4112 bytes (zeros) readable on that open file;
                            nothing is validated, nothing waits

It runs in the foreground until unmounted (or SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import signal
import stat
import sys
import time

import pyfuse3
import trio
from pyfuse3 import FUSEError

REQUEST, ANSWER = 64, 16 + 4096         # a passthru request and a 4 KiB Read's answer
ZEROS = bytes(1 << 20)                  # larger than any FUSE read (max_pages 256)

ROOT, CTRL, IDENTIFY, IDENTIFY_JSON, PASSTHRU, IO = range(pyfuse3.ROOT_INODE,
                                                          pyfuse3.ROOT_INODE + 6)


def json_bytes(size: int) -> bytes:
    """`size` fixed bytes of JSON (as identify.json is)."""
    head, tail = b'{\n  "pad": "', b'"\n}\n'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


class Mailbox:
    __slots__ = ("pending", "partial")

    def __init__(self):
        self.pending = 0        # answer bytes readable
        self.partial = 0        # bytes of a request not yet whole


class Nothing(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, json_size: int):
        super().__init__()
        self.now_ns = time.time_ns()
        self.uid, self.gid = os.getuid(), os.getgid()
        identify = bytes(range(256)) * 16
        # inode: (mode, content or None, attr_timeout), as nvmefs gives them
        self.nodes = {
            ROOT: (stat.S_IFDIR | 0o555, None, 1.0),
            CTRL: (stat.S_IFDIR | 0o555, None, 1.0),
            IDENTIFY: (stat.S_IFREG | 0o444, identify, 1.0),
            IDENTIFY_JSON: (stat.S_IFREG | 0o444, json_bytes(json_size), 0.0),
            PASSTHRU: (stat.S_IFDIR | 0o1777, None, 1.0),
            IO: (stat.S_IFREG | 0o666, None, 0.0),
        }
        self.children = {ROOT: {b"nvme0": CTRL},
                         CTRL: {b"identify": IDENTIFY, b"identify.json": IDENTIFY_JSON,
                                b"passthru": PASSTHRU},
                         PASSTHRU: {b"io": IO}}
        self.names = {ino: name for kids in self.children.values() for name, ino in kids.items()}
        self.open_files: dict[int, bytes | Mailbox] = {}
        self.ids = itertools.count(1)

    def attr(self, inode: int) -> pyfuse3.EntryAttributes:
        mode, data, timeout = self.nodes[inode]
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.st_mode = mode
        a.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        a.st_uid, a.st_gid = self.uid, self.gid
        a.st_size = len(data) if data is not None else 0
        a.st_blksize = 4096
        a.st_blocks = (a.st_size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.now_ns
        a.attr_timeout = timeout
        a.entry_timeout = 1
        return a

    async def lookup(self, parent_inode, name, ctx=None):
        inode = self.children.get(parent_inode, {}).get(name)
        if inode is None:
            raise FUSEError(errno.ENOENT)
        return self.attr(inode)

    async def getattr(self, inode, ctx=None):
        if inode not in self.nodes:
            raise FUSEError(errno.ENOENT)
        return self.attr(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        if fields.update_size and not (inode == IO and attr.st_size == 0):
            raise FUSEError(errno.EACCES)
        return self.attr(inode)

    async def opendir(self, inode, ctx):
        if inode not in self.children:
            raise FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        entries = list(self.children[fh].items())
        for i in range(start_id, len(entries)):
            name, inode = entries[i]
            if not pyfuse3.readdir_reply(token, name, self.attr(inode), i + 1):
                break

    async def releasedir(self, fh):
        pass

    async def open(self, inode, flags, ctx):
        mode, data, _ = self.nodes.get(inode, (stat.S_IFDIR, None, 0))
        if stat.S_ISDIR(mode):
            raise FUSEError(errno.EISDIR)
        if inode != IO and flags & os.O_ACCMODE != os.O_RDONLY:
            raise FUSEError(errno.EACCES)
        fh = next(self.ids)
        self.open_files[fh] = data if inode != IO else Mailbox()
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=False)

    async def read(self, fh, off, size):
        f = self.open_files.get(fh)
        if f is None:
            raise FUSEError(errno.EBADF)
        if isinstance(f, Mailbox):
            n = min(size, f.pending, len(ZEROS))
            f.pending -= n
            return ZEROS[:n]
        return f[off:off + size]

    async def write(self, fh, off, buf):
        f = self.open_files.get(fh)
        if not isinstance(f, Mailbox):
            raise FUSEError(errno.EBADF)
        whole, f.partial = divmod(f.partial + len(buf), REQUEST)
        f.pending += whole * ANSWER
        return len(buf)

    async def release(self, fh):
        self.open_files.pop(fh, None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mountpoint")
    p.add_argument("--json-size", type=int, default=2735,
                   help="bytes of identify.json (nvmefs's size on the sim)")
    args = p.parse_args(argv)
    ops = Nothing(args.json_size)
    options = {"fsname=nothing", "subtype=nothing", "default_permissions", "nodev", "nosuid"}
    pyfuse3.init(ops, args.mountpoint, options)

    async def serve():
        async with trio.open_nursery() as nursery:
            async def fuse():
                await pyfuse3.main(min_tasks=1, max_tasks=1024)     # as nvmefs
                nursery.cancel_scope.cancel()

            async def signals():
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                    async for _ in received:
                        nursery.cancel_scope.cancel()
                        return
            nursery.start_soon(fuse)
            nursery.start_soon(signals)

    try:
        trio.run(serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
