"""The file tree (DESIGN §2): node classes behind a thin pyfuse3.Operations."""

from __future__ import annotations

import time
from typing import Sequence

from ..backends.base import Controller
from .controller import controller_dir
from .nodes import StaticDir, Tree
from .operations import Operations


def build(controllers: Sequence[Controller], uid: int, gid: int, umask: int = 0,
          passthru: str = "readonly") -> Operations:
    """Operations serving one directory per controller, named by `Controller.name`.
    `passthru` is the policy for passthru/, Set Features and reset (spec.passthru)."""
    tree = Tree(uid, gid, umask, time.time())
    tree.register(StaticDir("", [controller_dir(c, passthru) for c in controllers]))
    return Operations(tree)
