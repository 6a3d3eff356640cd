"""Drive the Operations directly, without a mount."""

from __future__ import annotations

import contextlib
import os

import trio

from nvmefs import fs
from nvmefs.fs.access import Access
from nvmefs.fs.budget import MOUNT, SESSION
from nvmefs.backends import opened


class Ctx:
    def __init__(self, uid: int = 0, gid: int = 0, pid: int = os.getpid()):
        self.uid, self.gid, self.pid, self.umask = uid, gid, pid, 0o022


@contextlib.asynccontextmanager
async def mounted_ops(*uris: str, passthru: str = "readonly", others: str = "info",
                      max_buffer: int = MOUNT, session_budget: int = SESSION):
    """Operations over opened controllers named nvme0, nvme1, ..., with a nursery
    for the work requests leave behind (passthru batches). The mounting user is
    this process's; Ctx() is root, Ctx(uid=1000) another user."""
    async with trio.open_nursery() as nursery:
        async with contextlib.AsyncExitStack() as stack:
            ctrls = []
            for i, uri in enumerate(uris or ("sim:size=64M,command_log=100000",)):
                ctrl = await stack.enter_async_context(opened(uri, i))
                ctrl.name = f"nvme{i}"
                ctrls.append(ctrl)
            ops = fs.build(ctrls, nursery, os.getuid(), os.getgid(),
                           access=Access(os.getuid(), passthru, others),
                           max_buffer=max_buffer, session_budget=session_budget)
            yield ops, ctrls
            nursery.cancel_scope.cancel()


async def inode_of(ops, path: str) -> int:
    inode = 1
    for part in filter(None, path.split("/")):
        inode = (await ops.lookup(inode, os.fsencode(part), Ctx())).st_ino
    return inode


async def listing(ops, path: str) -> list[str]:
    node = ops.tree.get(await inode_of(ops, path))
    return [n.name for n in await node.entries()]


async def open_file(ops, path: str, flags: int = os.O_RDONLY, ctx=None) -> int:
    return (await ops.open(await inode_of(ops, path), flags, ctx or Ctx())).fh


async def read_fh(ops, fh: int) -> bytes:
    chunks, off = [], 0
    while chunk := await ops.read(fh, off, 128 * 1024):
        chunks.append(chunk)
        off += len(chunk)
    return b"".join(chunks)


async def read_all(ops, path: str) -> bytes:
    fh = await open_file(ops, path)
    try:
        return await read_fh(ops, fh)
    finally:
        await ops.release(fh)
