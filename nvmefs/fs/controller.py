"""nvmeX/: one controller's directory (DESIGN §2)."""

from __future__ import annotations

from ..backends.base import Controller
from ..spec import identify as ID
from ..spec import registers as R
from .cdq import CdqDir
from .errors import check
from .events import EventsFile
from .features import feature_dir
from .logs import log_dir
from .nodes import Dir, Node, SnapshotFile
from .passthru import PassthruDir, ResetFile
from .faults import sim_files
from .iocs import CommandSetDir, controller_set_nodes, namespace_set_nodes, namespace_sets
from .views import text_lines, views


def controller_info(ctrl: Controller) -> dict[str, object]:
    idc = ctrl.id_ctrl
    return {"name": ctrl.name, **ctrl.info(), "model": idc["mn"].strip(),
            "serial": idc["sn"].strip(), "firmware": idc["fr"].strip(), "nn": idc["nn"],
            "subnqn": idc["subnqn"], "cntlid": idc["cntlid"],
            "mdts": ctrl.max_transfer, "state": ctrl.state,
            "namespaces": " ".join(map(str, ctrl.nsids))}


def namespace_dir(ctrl: Controller, nsid: int) -> Dir:
    async def fetch() -> bytes:
        return check(await ctrl.identify_ns(nsid))

    async def info() -> bytes:
        d = ID.decode_id_ns(check(await ctrl.identify_ns(nsid)))
        fmt = ID.ns_format(d)
        return text_lines({"nsid": nsid, "blocks": d["nsze"], "block_size": fmt.block,
                           "bytes": d["nsze"] * fmt.block, "capacity_blocks": d["ncap"],
                           "used_blocks": d["nuse"], "nguid": d["nguid"], "eui64": d["eui64"],
                           "ms": fmt.ms, "mset": int(fmt.extended), "dps": fmt.dps,
                           "csi": ctrl.csi(nsid),
                           **ctrl.namespace_info(nsid)})

    return CommandSetDir(str(nsid), [*views("identify", "id-ns", fetch, raw_size=ID.IDENTIFY_SIZE),
                                     SnapshotFile("info", info)], "identify.txt",
                         namespace_sets(ctrl, nsid), lambda csi: namespace_set_nodes(ctrl, nsid, csi))


class NamespacesDir(Dir):
    """ns/: a directory per active namespace."""

    def __init__(self, ctrl: Controller):
        super().__init__("ns")
        self.ctrl = ctrl

    async def entries(self) -> list[Node]:
        return [self.child(str(n), lambda n=n: namespace_dir(self.ctrl, n)) for n in self.ctrl.nsids]


def register_files(ctrl: Controller) -> list[Node]:
    """`regs`, `regs.json`, `regs.txt`: BAR0's registers, where the backend reads them
    itself (vfio); read at open, as everything else."""
    registers = getattr(ctrl, "registers", None)
    if registers is None:
        return []

    async def fetch() -> bytes:
        return registers()

    return views("regs", "regs", fetch, raw_size=R.REGISTERS_SIZE, waits=False)


def controller_dir(ctrl: Controller) -> Dir:
    async def identify() -> bytes:
        return ctrl.id_ctrl_raw

    async def info() -> bytes:
        return text_lines(controller_info(ctrl))

    return CommandSetDir(ctrl.name, [
        SnapshotFile("info", info, waits=False),
        *views("identify", "id-ctrl", identify, raw_size=ID.IDENTIFY_SIZE, waits=False),
        log_dir(ctrl), feature_dir(ctrl), NamespacesDir(ctrl),
        PassthruDir(ctrl), CdqDir(ctrl), EventsFile(ctrl), ResetFile(ctrl), *sim_files(ctrl),
        *register_files(ctrl),
    ], "identify.txt", ctrl.command_sets, lambda csi: controller_set_nodes(ctrl, csi))
