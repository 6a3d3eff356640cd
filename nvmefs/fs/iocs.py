"""The I/O Command Set specific files: `identify-<set>` (Identify CNS 06h in a
controller's directory, CNS 05h in a namespace's) for each command set in use, and
a zoned namespace's `zones`. Which sets are in use comes from the namespaces'
descriptor lists, read with Identify (Controller.csis), so listing sends nothing."""

from __future__ import annotations

from typing import Any, Callable

from ..backends.base import Controller
from ..spec import commands as C
from ..spec import identify as ID
from ..spec import iocs
from ..spec import render
from .errors import check
from .nodes import Node, StaticDir
from .views import decoded_views, views
from .zones import ZonesFile


class CommandSetDir(StaticDir):
    """A directory of fixed children and, after the one named `after`, the files of
    each command set `sets()` names (made once per set, by `make`)."""

    def __init__(self, name: str, children: list[Node], after: str,
                 sets: Callable[[], list[int]], make: Callable[[int], list[Node]]):
        super().__init__(name, children)
        self.after, self.sets, self.make = after, sets, make
        self._made: dict[int, list[Node]] = {}

    async def entries(self) -> list[Node]:
        fixed = await super().entries()
        extra = []
        for csi in self.sets():
            nodes = self._made.get(csi)
            if nodes is None:
                nodes = self._made[csi] = self.make(csi)
            extra += [self.child(n.name, lambda n=n: n) for n in nodes]
        cut = next((i + 1 for i, n in enumerate(fixed) if n.name == self.after), len(fixed))
        return fixed[:cut] + extra + fixed[cut:]


def identify_name(csi: int) -> str:
    return f"identify-{iocs.command_set(csi).name}"


async def _identify_cs(ctrl: Controller, csi: int, nsid: int = 0) -> bytes:
    cns = ID.CNS_NS_CS if nsid else ID.CNS_CTRL_CS
    return check(await ctrl.admin(C.identify(cns, nsid, csi=csi), data_in_len=ID.IDENTIFY_SIZE),
                 unsupported_is_eopnotsupp=True)


def controller_set_nodes(ctrl: Controller, csi: int) -> list[Node]:
    """identify-<set>: the command set's Identify Controller (CNS 06h)."""
    async def fetch() -> bytes:
        return await _identify_cs(ctrl, csi)

    return views(identify_name(csi), iocs.command_set(csi).ctrl_kind, fetch,
                 raw_size=ID.IDENTIFY_SIZE)


def namespace_set_nodes(ctrl: Controller, nsid: int, csi: int) -> list[Node]:
    """identify-<set>: the command set's Identify Namespace (CNS 05h), its LBA format
    extensions as many as Identify Namespace's NLBAF says; `zones` for a zoned set."""
    cs = iocs.command_set(csi)
    name = identify_name(csi)

    async def fetch() -> bytes:
        return await _identify_cs(ctrl, csi, nsid)

    nodes = [*views(name, None, fetch, raw_size=ID.IDENTIFY_SIZE)]
    if cs.ns_kind is not None:
        async def decoded() -> Any:
            raw = await fetch()
            ns = await ctrl.identify_ns(nsid)
            ctx = {"nlbaf": ID.decode_id_ns(ns.data)["nlbaf"]} if ns.ok else {}
            return render.decode(cs.ns_kind, raw, ctx)
        nodes += decoded_views(name, cs.ns_kind, decoded)
    if cs.zoned:
        nodes.append(ZonesFile(ctrl, nsid))
    return nodes


def namespace_sets(ctrl: Controller, nsid: int) -> Callable[[], list[int]]:
    """The namespace's command set and those it extends; none where the controller
    names no command set."""
    def sets() -> list[int]:
        csi = ctrl.csis.get(nsid)
        return [] if csi is None else iocs.with_bases([csi])
    return sets
