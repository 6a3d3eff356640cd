"""The status table: (SCT, SC) -> name and errno."""

import errno

from nvmefs.spec import status as S
from nvmefs.spec.queue import make_status


def test_every_status_type_has_a_table():
    sct_seen = {sct for sct, _ in S.STATUS}
    assert sct_seen == {S.GENERIC, S.CMD_SPECIFIC, S.MEDIA, S.PATH}
    assert len(S.STATUS) > 120


def test_names_are_unique_within_a_type():
    for sct in (S.GENERIC, S.CMD_SPECIFIC, S.MEDIA, S.PATH):
        names = [s.name for (t, _), s in S.STATUS.items() if t == sct]
        assert len(names) == len(set(names))


def test_errno_mapping_is_specific():
    assert S.errno_of(S.INVALID_FIELD) == errno.EINVAL
    assert S.errno_of(S.INVALID_NS) == errno.EINVAL
    assert S.errno_of(S.LBA_RANGE) == errno.EREMOTEIO
    assert S.errno_of(S.COMPARE_FAILED) == errno.EILSEQ
    assert S.errno_of(S.HOST_ABORTED) == errno.ETIMEDOUT
    assert S.errno_of(make_status(S.CMD_SPECIFIC, 0x0D)) == errno.EPERM     # not saveable
    assert S.errno_of(make_status(S.GENERIC, 0x84)) == errno.EINPROGRESS    # format in progress
    assert S.errno_of(make_status(S.MEDIA, 0x86)) == errno.EACCES
    assert S.errno_of(0) == 0
    # not everything is EIO
    assert len({s.errno for s in S.STATUS.values()}) >= 12


def test_names_and_unknown_codes():
    assert S.describe(S.HOST_ABORTED).name == "CMD_ABORTED_BY_HOST"
    assert S.describe(S.INVALID_LOG_PAGE).name == "INVALID_LOG_PAGE"
    assert S.describe(make_status(S.GENERIC, 0x02, dnr=True, more=True)).name == "INVALID_FIELD"
    unknown = S.describe(make_status(S.VENDOR, 0xC3))
    assert unknown.name == "VENDOR_SC_0xc3" and unknown.errno == errno.EIO
    assert S.describe(make_status(5, 0x01)).name == "SCT5_SC_0x01"
