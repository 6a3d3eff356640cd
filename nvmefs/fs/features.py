"""features/: the current value of each supported feature, and by-id/0xNN.

A feature's raw view is Get Features' CDW0 (4 bytes, little-endian) followed
by the data buffer the feature returns, if any.
"""

from __future__ import annotations

from ..backends.base import Controller
from ..spec import features as F
from .errors import check
from .nodes import Node, TableDir
from .views import views


def feature_fetch(ctrl: Controller, fid: int):
    feat = F.FEATURES.get(fid)
    data_len = feat.data_len if feat else 0

    async def fetch() -> bytes:
        # a namespace specific feature is read for the first namespace
        nsid = ctrl.nsids[0] if feat and feat.ns_specific and ctrl.nsids else 0
        cpl = await ctrl.get_feature(fid, F.SEL_CURRENT, nsid=nsid, data_len=data_len)
        return F.encode_feature(cpl.dw0, check(cpl, unsupported_is_eopnotsupp=True))
    return fetch


def feature_dir(ctrl: Controller) -> TableDir:
    async def supported() -> list[int]:
        return [fid for fid, f in F.FEATURES.items() if f.supported(ctrl.id_ctrl)]

    def nodes(fid: int, name: str) -> list[Node]:
        return views(name, "feature", feature_fetch(ctrl, fid), {"fid": fid})

    return TableDir("features", supported, lambda fid: nodes(fid, F.FEATURES[fid].name),
                    lambda fid, name: nodes(fid, name)[0])
