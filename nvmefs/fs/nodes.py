"""Node classes of the tree: directories, files and the handles of open files.

Nodes are made lazily and kept for the daemon's life, so inode numbers are
stable. File contents are snapshots taken at open(): every read() of one open
file sees the same bytes.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import Counter
from typing import Awaitable, Callable, Iterable

import pyfuse3
import trio
from pyfuse3 import FUSEError

from .access import Access
from .budget import SESSION, Kept, MountMemory
from .waits import Waiters

Fetch = Callable[[], Awaitable[bytes]]


class Node:
    perm = 0o444
    # How long the kernel may keep the attributes (it checks permissions on every
    # path component with them): nodes whose size follows their content say 0.
    attr_timeout = 1.0
    # Whether opening it may wait on the controller: such an open is armed for
    # FUSE_INTERRUPT as a whole (fs.interrupt.armed); one that never waits is not.
    waits = True

    def __init__(self, name: str):
        self.name = name
        self.inode = 0
        self.tree: "Tree | None" = None

    @property
    def mode(self) -> int:
        return stat.S_IFREG | self.perm

    async def size(self) -> int:
        return 0


class Handle:
    """An open file. The default handle is read-only and empty."""
    direct_io = True
    nonseekable = False
    waits = True            # its read, write or release may wait (as Node.waits)
    snapshot: bytes | None = None   # all it reads, when that is fixed bytes in memory

    async def read(self, offset: int, size: int) -> bytes:
        return b""

    async def write(self, offset: int, data: bytes) -> int:
        raise FUSEError(errno.EBADF)

    async def release(self) -> None:
        pass

    async def poll(self, poll_handle=None) -> int:
        return 0x1      # POLLIN: a snapshot is always readable


class SnapshotHandle(Handle):
    """Reads the bytes taken at open; releasing it does nothing (Operations serves
    both without a request context: nothing here waits, fails or asks who calls)."""
    waits = False

    def __init__(self, data: bytes):
        self.snapshot = data

    async def read(self, offset: int, size: int) -> bytes:
        return self.snapshot[offset:offset + size]


class File(Node):
    async def open(self, flags: int, ctx) -> Handle:
        raise NotImplementedError


def wants_write(flags: int) -> bool:
    return flags & os.O_ACCMODE != os.O_RDONLY


class ControlFile(File):
    """Reads its `text()` (as it is at open); a write goes to `handle()`, for a writer
    whose passthru policy is `all`."""
    perm = 0o644
    attr_timeout = 0.0          # the size follows the text
    writable = True

    def text(self) -> bytes:
        raise NotImplementedError

    def handle(self) -> Handle:
        raise NotImplementedError

    async def size(self) -> int:
        return len(self.text())

    async def open(self, flags: int, ctx) -> Handle:
        if not wants_write(flags):
            return SnapshotHandle(self.text())
        require_all(self.tree, ctx.uid)
        return self.handle()


def require_all(tree: "Tree", uid: int) -> None:
    """EACCES unless `uid`'s passthru policy is `all`: what changes the controller
    (Set Features, reset, faults, CDQs) needs it."""
    if tree.access.policy_for(uid) != "all":
        raise FUSEError(errno.EACCES)


class SnapshotFile(File):
    """Bytes fetched at each open. st_size is `fixed_size` when the size is known
    without asking the controller (raw views), else the last snapshot's length
    (0 before the first open): listing and stat never send a command. `waits`:
    False when `fetch` never sends a command (data the controller object holds)."""

    def __init__(self, name: str, fetch: Fetch, fixed_size: int | None = None,
                 waits: bool = True):
        super().__init__(name)
        self.fetch = fetch
        self.fixed_size = fixed_size
        self.waits = waits
        self.last_size = 0
        if fixed_size is None:
            self.attr_timeout = 0.0

    async def size(self) -> int:
        if self.fixed_size is not None:
            return self.fixed_size
        return self.last_size

    async def open(self, flags: int, ctx) -> Handle:
        if wants_write(flags):
            raise FUSEError(errno.EACCES)
        data = await self.fetch()
        self.last_size = len(data)
        return SnapshotHandle(data)


class Dir(Node):
    perm = 0o555

    def __init__(self, name: str):
        super().__init__(name)
        self._children: dict[str, Node] = {}

    @property
    def mode(self) -> int:
        return stat.S_IFDIR | self.perm

    def child(self, name: str, make: Callable[[], Node]) -> Node:
        """The child called `name`, made (and given an inode) on first use."""
        node = self._children.get(name)
        if node is None:
            node = self.tree.register(make())
            self._children[name] = node
        return node

    def forget_child(self, name: str) -> None:
        node = self._children.pop(name, None)
        if node is not None:
            self.tree.unregister(node)

    async def entries(self) -> list[Node]:
        """The listing, in order."""
        return []

    async def lookup(self, name: str) -> Node | None:
        for node in await self.entries():
            if node.name == name:
                return node
        return None


class StaticDir(Dir):
    """A directory whose children are fixed once made."""

    def __init__(self, name: str, children: Iterable[Node] = ()):
        super().__init__(name)
        self._initial = list(children)

    async def entries(self) -> list[Node]:
        return [self.child(n.name, lambda n=n: n) for n in self._initial]


class Tree:
    """Inode registry and the attributes every node shares (owner, mode mask, times)."""

    def __init__(self, uid: int, gid: int, umask: int, now: float, nursery: trio.Nursery,
                 access: Access, memory: MountMemory | None = None, session_budget: int = SESSION):
        self.uid, self.gid, self.umask, self.now = uid, gid, umask, now
        self.nursery = nursery                  # for work that outlives a request
        self.access = access                    # who may do what (fs.access)
        self.memory = memory or MountMemory()   # answers held, mount-wide (fs.budget)
        self.session_budget = session_budget    # answers one open mailbox may hold
        self.kept = Kept(self.memory, session_budget)   # mailboxes' last answers per user
        self.waiters = Waiters()                # handlers waiting for an event
        self.passthru_batches: Counter[str] = Counter()     # by controller name (fs.metrics)
        self.nodes: dict[int, Node] = {}
        self._next_inode = pyfuse3.ROOT_INODE

    def register(self, node: Node) -> Node:
        node.inode = self._next_inode
        node.tree = self
        self._next_inode += 1
        self.nodes[node.inode] = node
        return node

    def unregister(self, node: Node) -> None:
        self.nodes.pop(node.inode, None)

    def get(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return node

    async def attr(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.st_mode = node.mode & ~self.umask
        a.st_nlink = 2 if stat.S_ISDIR(node.mode) else 1
        a.st_uid, a.st_gid = getattr(node, "uid", self.uid), getattr(node, "gid", self.gid)
        a.st_size = await node.size()
        a.st_blksize = 4096
        a.st_blocks = (a.st_size + 511) // 512
        ns = int(self.now * 1e9)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        a.attr_timeout = node.attr_timeout
        a.entry_timeout = 1
        return a


BY_ID_NAME = re.compile(r"0x[0-9a-f]{2}")


class ByIdDir(Dir):
    """by-id/0xNN: any 8-bit identifier (LID, FID) by name; the listing shows the
    supported ones."""

    def __init__(self, make: Callable[[int, str], Node],
                 supported: Callable[[], Awaitable[list[int]]]):
        super().__init__("by-id")
        self.make, self.supported = make, supported

    def _node(self, ident: int) -> Node:
        name = f"0x{ident:02x}"
        return self.child(name, lambda: self.make(ident, name))

    async def entries(self) -> list[Node]:
        return [self._node(i) for i in await self.supported()]

    async def lookup(self, name: str) -> Node | None:
        return self._node(int(name, 16)) if BY_ID_NAME.fullmatch(name) else None


class TableDir(Dir):
    """Named file sets for the supported identifiers of a table, then by-id/.
    `named(ident)` gives the files of an identifier nvmefs has a name for (else [])."""

    def __init__(self, name: str, supported: Callable[[], Awaitable[list[int]]],
                 named: Callable[[int], list[Node]], by_id: Callable[[int, str], Node]):
        super().__init__(name)
        self.supported, self.named, self.by_id = supported, named, by_id

    async def entries(self) -> list[Node]:
        nodes: list[Node] = []
        for ident in await self.supported():
            nodes += [self.child(n.name, lambda n=n: n) for n in self.named(ident)]
        nodes.append(self.child("by-id", lambda: ByIdDir(self.by_id, self.supported)))
        return nodes
