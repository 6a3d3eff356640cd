"""The file tree (DESIGN §2): node classes behind a thin pyfuse3.Operations."""

from __future__ import annotations

import time
from typing import Sequence

import trio

from ..backends.base import Controller
from .access import Access
from .budget import MOUNT, SESSION, MountMemory
from .controller import controller_dir
from .metrics import MetricsFile
from .nodes import StaticDir, Tree
from .operations import Operations


def build(controllers: Sequence[Controller], nursery: trio.Nursery, uid: int, gid: int,
          umask: int = 0, access: Access | None = None, max_buffer: int = MOUNT,
          session_budget: int = SESSION) -> Operations:
    """Operations serving one directory per controller, named by `Controller.name`,
    and `metrics` (fs.metrics) beside them.
    `access` gives each user's passthru policy (Set Features, passthru/, reset);
    `max_buffer` bounds the answers the whole mount holds, `session_budget` one open's."""
    tree = Tree(uid, gid, umask, time.time(), nursery, access or Access(uid),
                MountMemory(max_buffer), session_budget)
    tree.register(StaticDir("", [*[controller_dir(c) for c in controllers],
                                 MetricsFile(controllers)]))
    return Operations(tree)
