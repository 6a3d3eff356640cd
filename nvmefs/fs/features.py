"""features/: the current value of each supported feature, and by-id/0xNN.

A feature's raw view is Get Features' CDW0 (4 bytes, little-endian) followed
by the data buffer the feature returns, if any. With --passthru=all, writing
`VALUE [save]` to the raw view sends Set Features with CDW11 = VALUE.
"""

from __future__ import annotations

import errno

from pyfuse3 import FUSEError

from ..backends.base import Controller
from ..spec import features as F
from ..spec import passthru as P
from ..spec.commands import OP_SET_FEATURES, set_features
from ..spec.opcodes import ADMIN
from .errors import check
from .nodes import Handle, Node, SnapshotFile, TableDir, wants_write
from .views import views


def _nsid(ctrl: Controller, fid: int) -> int:
    """A namespace specific feature is read and set for the first namespace."""
    feat = F.FEATURES.get(fid)
    return ctrl.nsids[0] if feat and feat.ns_specific and ctrl.nsids else 0


def feature_fetch(ctrl: Controller, fid: int):
    feat = F.FEATURES.get(fid)
    data_len = feat.data_len if feat else 0

    async def fetch() -> bytes:
        cpl = await ctrl.get_feature(fid, F.SEL_CURRENT, nsid=_nsid(ctrl, fid), data_len=data_len)
        return F.encode_feature(cpl.dw0, check(cpl, unsupported_is_eopnotsupp=True))
    return fetch


class FeatureFile(SnapshotFile):
    """The raw view; writable (Set Features) by users whose policy admits it."""

    def __init__(self, name: str, ctrl: Controller, fid: int):
        super().__init__(name, feature_fetch(ctrl, fid))
        self.ctrl, self.fid = ctrl, fid

    @property
    def writable(self) -> bool:
        return P.admits(self.tree.access.policy, ADMIN, OP_SET_FEATURES)

    @property
    def perm(self) -> int:
        return 0o644 if self.writable else 0o444

    async def open(self, flags: int, ctx) -> Handle:
        if not wants_write(flags):
            return await super().open(flags, ctx)
        if not P.admits(self.tree.access.policy_for(ctx.uid), ADMIN, OP_SET_FEATURES):
            raise FUSEError(errno.EACCES)
        feat = F.FEATURES.get(self.fid)
        if feat and feat.data_len:      # a data buffer cannot be written as text
            raise FUSEError(errno.EOPNOTSUPP)
        return SetFeatureHandle(self.ctrl, self.fid)


class SetFeatureHandle(Handle):
    def __init__(self, ctrl: Controller, fid: int):
        self.ctrl, self.fid = ctrl, fid

    async def write(self, offset: int, data: bytes) -> int:
        words = data.decode("ascii", "replace").split()
        try:
            value = int(words[0], 0)
        except (IndexError, ValueError):
            raise FUSEError(errno.EINVAL) from None
        if words[1:] not in ([], ["save"]) or not 0 <= value <= 0xFFFFFFFF:
            raise FUSEError(errno.EINVAL)
        cmd = set_features(self.fid, value, save=bool(words[1:]), nsid=_nsid(self.ctrl, self.fid))
        check(await self.ctrl.admin(cmd))
        return len(data)


def feature_dir(ctrl: Controller) -> TableDir:
    async def supported() -> list[int]:
        return [fid for fid, f in F.FEATURES.items() if f.supported(ctrl.id_ctrl)]

    def nodes(fid: int, name: str) -> list[Node]:
        return views(name, "feature", feature_fetch(ctrl, fid), {"fid": fid},
                     raw=lambda n: FeatureFile(n, ctrl, fid))

    return TableDir("features", supported, lambda fid: nodes(fid, F.FEATURES[fid].name),
                    lambda fid, name: nodes(fid, name)[0])
