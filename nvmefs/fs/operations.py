"""The thin pyfuse3.Operations over the node tree.

Every handler runs inside one `handling` context per FUSE request: node code
learns who asks with `interrupt.caller()`, the request's FUSE_INTERRUPT
cancels it (answered EINTR), and only FUSEError leaves it: transport failures
become their errno, anything unexpected is logged and answered EIO. The
daemon never dies on a request.

There is no flush handler: libfuse answers FLUSH with ENOSYS and the kernel
stops sending it, so close() never waits on the daemon.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..backends.base import TransportError
from . import interrupt
from .nodes import Dir, File, Handle, Tree

log = logging.getLogger(__name__)


class handling(interrupt.Request):
    """The context of one FUSE request's handler (an interrupt.Request).

    `ctx`: pyfuse3's RequestContext where the handler has one, else the
    opener's interrupt.Caller (the caller is taken from libfuse where it can
    be: the request's own). `read=(fh, offset, size)` on reads only (it lets
    fs.interrupt check where pyfuse3 keeps the request). `waits`: the handler
    may wait on the controller, so all of it is armed for FUSE_INTERRUPT; one
    that says no arms only its own waits (fs.waits)."""

    __slots__ = ("armed",)

    def __init__(self, ctx=None, read: tuple[int, int, int] | None = None, waits: bool = True):
        super().__init__(ctx, read)
        self.armed = interrupt.armed() if waits else None

    def __enter__(self) -> interrupt.Request:
        super().__enter__()
        if self.armed is not None:
            self.armed.__enter__()
        return self

    def __exit__(self, etype, exc, tb) -> bool:
        try:
            if self.armed is not None:
                self.armed.__exit__(etype, exc, tb)
        except InterruptedError as e:
            etype, exc = InterruptedError, e
        finally:
            super().__exit__(etype, exc, tb)
        if etype is None or issubclass(etype, FUSEError) or not issubclass(etype, Exception):
            return False            # an answer, or a cancellation of the whole daemon
        if issubclass(etype, InterruptedError):
            log.debug("%s of pid %d: interrupted", self.op, self.caller.pid)
            raise FUSEError(errno.EINTR) from None
        if issubclass(etype, TransportError):
            log.warning("%s: %s", self.op, exc)
            raise FUSEError(exc.errno) from None
        if issubclass(etype, trio.TooSlowError):
            raise FUSEError(errno.ETIMEDOUT) from None
        if issubclass(etype, OSError):
            raise FUSEError(exc.errno or errno.EIO) from None
        log.error("%s failed", self.op, exc_info=(etype, exc, tb))
        raise FUSEError(errno.EIO) from None


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, tree: Tree):
        super().__init__()
        self.tree = tree
        self._fh: dict[int, tuple[Handle, interrupt.Caller]] = {}     # handle, its opener
        self._dirs: dict[int, list] = {}
        self._ids = itertools.count(1)

    def _dir(self, inode: int) -> Dir:
        node = self.tree.get(inode)
        if not isinstance(node, Dir):
            raise FUSEError(errno.ENOTDIR)
        return node

    def _entry(self, fh: int) -> tuple[Handle, interrupt.Caller]:
        entry = self._fh.get(fh)
        if entry is None:
            raise FUSEError(errno.EBADF)
        return entry

    async def _open(self, node, flags: int, ctx) -> pyfuse3.FileInfo:
        if not isinstance(node, File):
            raise FUSEError(errno.EISDIR)
        h = await node.open(flags, ctx)
        fh = next(self._ids)
        self._fh[fh] = (h, interrupt.caller())
        return pyfuse3.FileInfo(fh=fh, direct_io=h.direct_io, keep_cache=False,
                                nonseekable=h.nonseekable)

    async def lookup(self, parent_inode, name, ctx=None):
        with handling(ctx):
            node = await self._dir(parent_inode).lookup(os.fsdecode(name))
            if node is None:
                raise FUSEError(errno.ENOENT)
            return await self.tree.attr(node)

    async def getattr(self, inode, ctx=None):
        with handling(ctx, waits=False):       # sizes never fetch
            return await self.tree.attr(self.tree.get(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        with handling(ctx, waits=False):
            node = self.tree.get(inode)
            # O_TRUNC on a writable file arrives as a size change to 0: nothing to truncate
            if fields.update_size and not (attr.st_size == 0 and getattr(node, "writable", False)):
                raise FUSEError(errno.EACCES)
            if fields.update_mode or fields.update_uid or fields.update_gid:
                raise FUSEError(errno.EPERM)
            return await self.tree.attr(node)

    async def opendir(self, inode, ctx):
        with handling(ctx):
            entries = await self._dir(inode).entries()
            fh = next(self._ids)
            self._dirs[fh] = entries
            return fh

    async def readdir(self, fh, start_id, token):
        with handling():
            entries = self._dirs.get(fh)
            if entries is None:
                raise FUSEError(errno.EBADF)
            for i in range(start_id, len(entries)):
                node = entries[i]
                if not pyfuse3.readdir_reply(token, os.fsencode(node.name),
                                             await self.tree.attr(node), i + 1):
                    break

    async def releasedir(self, fh):
        with handling(waits=False):
            self._dirs.pop(fh, None)

    async def open(self, inode, flags, ctx):
        node = self.tree.get(inode)
        with handling(ctx, waits=node.waits):
            return await self._open(node, flags, ctx)

    async def read(self, fh, off, size):
        h, opener = self._entry(fh)
        if h.snapshot is not None and not interrupt.learning():
            return h.snapshot[off:off + size]
        with handling(opener, read=(fh, off, size), waits=h.waits):
            return await h.read(off, size)

    async def write(self, fh, off, buf):
        h, opener = self._entry(fh)
        with handling(opener, waits=h.waits):
            return await h.write(off, bytes(buf))

    async def release(self, fh):
        h, opener = self._entry(fh)
        del self._fh[fh]
        if h.snapshot is None:
            with handling(opener, waits=h.waits):
                await h.release()

    async def poll(self, inode, fh, poll_handle, ctx):
        with handling(ctx, waits=False):
            return await self._entry(fh)[0].poll(poll_handle)

    async def create(self, parent_inode, name, mode, flags, ctx):
        with handling(ctx):
            node = await self._in_dir(parent_inode, "create", name, ctx)
            info = await self._open(node, flags, ctx)
            return info, await self.tree.attr(node)

    async def unlink(self, parent_inode, name, ctx):
        with handling(ctx):
            await self._in_dir(parent_inode, "unlink", name, ctx)

    async def rmdir(self, parent_inode, name, ctx):
        with handling(ctx):
            await self._in_dir(parent_inode, "rmdir", name, ctx)

    async def _in_dir(self, parent_inode, op: str, name: bytes, ctx):
        """A directory's own `op` (create, unlink, rmdir) on `name`; EACCES where the
        directory has none."""
        parent = self._dir(parent_inode)
        if not hasattr(parent, op):
            raise FUSEError(errno.EACCES)
        return await getattr(parent, op)(os.fsdecode(name), ctx)

    async def statfs(self, ctx):
        with handling(ctx, waits=False):
            s = pyfuse3.StatvfsData()
            s.f_bsize = s.f_frsize = 4096
            s.f_files = len(self.tree.nodes)
            s.f_namemax = 255
            return s
