"""The thin pyfuse3.Operations over the node tree.

Every handler is wrapped so that only FUSEError leaves it: transport failures
become their errno, anything unexpected is logged and answered EIO. The
daemon never dies on a request.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..backends.base import TransportError
from .nodes import Dir, File, Handle, Tree

log = logging.getLogger(__name__)


def handler(fn):
    @functools.wraps(fn)
    async def wrapped(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except FUSEError:
            raise
        except TransportError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise FUSEError(e.errno) from None
        except trio.TooSlowError:
            raise FUSEError(errno.ETIMEDOUT) from None
        except OSError as e:
            raise FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise FUSEError(errno.EIO) from None
    return wrapped


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, tree: Tree):
        super().__init__()
        self.tree = tree
        self._fh: dict[int, Handle] = {}
        self._dirs: dict[int, list] = {}
        self._ids = itertools.count(1)

    def _dir(self, inode: int) -> Dir:
        node = self.tree.get(inode)
        if not isinstance(node, Dir):
            raise FUSEError(errno.ENOTDIR)
        return node

    def _handle(self, fh: int) -> Handle:
        h = self._fh.get(fh)
        if h is None:
            raise FUSEError(errno.EBADF)
        return h

    @handler
    async def lookup(self, parent_inode, name, ctx=None):
        node = await self._dir(parent_inode).lookup(os.fsdecode(name))
        if node is None:
            raise FUSEError(errno.ENOENT)
        return await self.tree.attr(node)

    @handler
    async def getattr(self, inode, ctx=None):
        return await self.tree.attr(self.tree.get(inode))

    @handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self.tree.get(inode)
        # O_TRUNC on a writable file arrives as a size change to 0: nothing to truncate
        if fields.update_size and not (attr.st_size == 0 and getattr(node, "writable", False)):
            raise FUSEError(errno.EACCES)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise FUSEError(errno.EPERM)
        return await self.tree.attr(node)

    @handler
    async def opendir(self, inode, ctx):
        entries = await self._dir(inode).entries()
        fh = next(self._ids)
        self._dirs[fh] = entries
        return fh

    @handler
    async def readdir(self, fh, start_id, token):
        entries = self._dirs.get(fh)
        if entries is None:
            raise FUSEError(errno.EBADF)
        for i in range(start_id, len(entries)):
            node = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name),
                                         await self.tree.attr(node), i + 1):
                break

    @handler
    async def releasedir(self, fh):
        self._dirs.pop(fh, None)

    @handler
    async def open(self, inode, flags, ctx):
        node = self.tree.get(inode)
        if not isinstance(node, File):
            raise FUSEError(errno.EISDIR)
        h = await node.open(flags, ctx)
        fh = next(self._ids)
        self._fh[fh] = h
        return pyfuse3.FileInfo(fh=fh, direct_io=h.direct_io, keep_cache=False,
                                nonseekable=h.nonseekable)

    @handler
    async def read(self, fh, off, size):
        return await self._handle(fh).read(off, size)

    @handler
    async def write(self, fh, off, buf):
        return await self._handle(fh).write(off, bytes(buf))

    @handler
    async def flush(self, fh):
        await self._handle(fh).flush()

    @handler
    async def release(self, fh):
        h = self._fh.pop(fh, None)
        if h is not None:
            await h.release()

    @handler
    async def poll(self, inode, fh, poll_handle, ctx):
        return await self._handle(fh).poll(poll_handle)

    @handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self._dir(parent_inode)
        if not hasattr(parent, "create"):
            raise FUSEError(errno.EACCES)
        node = await parent.create(os.fsdecode(name), ctx)
        info = await self.open(node.inode, flags, ctx)
        return info, await self.tree.attr(node)

    @handler
    async def unlink(self, parent_inode, name, ctx):
        parent = self._dir(parent_inode)
        if not hasattr(parent, "unlink"):
            raise FUSEError(errno.EACCES)
        await parent.unlink(os.fsdecode(name), ctx)

    @handler
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_files = len(self.tree.nodes)
        s.f_namemax = 255
        return s
