"""This host's NVMe Qualified Name and Host Identifier (NVMe over Fabrics §7.9):
/etc/nvme/hostnqn and /etc/nvme/hostid when present, as nvme-cli reads them;
else generated once (`nqn.2014-08.org.nvmexpress:uuid:<hostid>`, as `nvme
gen-hostnqn` makes them) and kept in nvmefs's state directory.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ETC = Path("/etc/nvme")
UUID_NQN = "nqn.2014-08.org.nvmexpress:uuid:"


def state_dir() -> Path:
    """$NVMEFS_STATE_DIR, else /var/lib/nvmefs for root, ~/.local/state/nvmefs otherwise."""
    if os.environ.get("NVMEFS_STATE_DIR"):
        return Path(os.environ["NVMEFS_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/nvmefs")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "nvmefs"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def identity() -> tuple[str, str]:
    """(hostnqn, hostid)."""
    nqn, hostid = _read(ETC / "hostnqn"), _read(ETC / "hostid")
    if nqn and not hostid and nqn.startswith(UUID_NQN):
        hostid = nqn.removeprefix(UUID_NQN)
    if nqn and hostid:
        return nqn, str(uuid.UUID(hostid))
    state = state_dir()
    hostid = _read(state / "hostid")
    if not hostid:
        hostid = str(uuid.uuid4())
        state.mkdir(parents=True, exist_ok=True)
        tmp = state / f"hostid.{os.getpid()}"
        tmp.write_text(hostid + "\n")
        os.replace(tmp, state / "hostid")
    return nqn or UUID_NQN + hostid, hostid
