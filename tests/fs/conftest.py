"""Drive the Operations directly, without a mount."""

from __future__ import annotations

import contextlib
import os

from nvmefs import fs
from nvmefs.backends import open_controller


class Ctx:
    uid, gid, pid, umask = 0, 0, os.getpid(), 0o022


@contextlib.asynccontextmanager
async def mounted_ops(*uris: str):
    """Operations over opened controllers named nvme0, nvme1, ..."""
    ctrls = []
    try:
        for i, uri in enumerate(uris or ("sim:size=64M",)):
            ctrl = await open_controller(uri, i)
            ctrl.name = f"nvme{i}"
            ctrls.append(ctrl)
        yield fs.build(ctrls, os.getuid(), os.getgid()), ctrls
    finally:
        for c in ctrls:
            await c.aclose()


async def inode_of(ops, path: str) -> int:
    inode = 1
    for part in filter(None, path.split("/")):
        inode = (await ops.lookup(inode, os.fsencode(part), Ctx())).st_ino
    return inode


async def listing(ops, path: str) -> list[str]:
    node = ops.tree.get(await inode_of(ops, path))
    return [n.name for n in await node.entries()]


async def open_file(ops, path: str, flags: int = os.O_RDONLY) -> int:
    return (await ops.open(await inode_of(ops, path), flags, Ctx())).fh


async def read_all(ops, path: str) -> bytes:
    fh = await open_file(ops, path)
    try:
        chunks, off = [], 0
        while chunk := await ops.read(fh, off, 128 * 1024):
            chunks.append(chunk)
            off += len(chunk)
        return b"".join(chunks)
    finally:
        await ops.release(fh)
