"""The command table: dword fields, builders and parsers, data lengths, opcode rows."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmefs.spec import commands as C
from nvmefs.spec import features
from nvmefs.spec.identify import CNS_CTRL
from nvmefs.spec.opcodes import (ADMIN, ALL, INFO, IO, OPCODES, POLICIES, READONLY, XFER_FROM_CTRL,
                                 XFER_NONE, XFER_TO_CTRL, changes_namespaces, lookup, name_of)
from nvmefs.spec.queue import Command


def test_fields_read_and_write_their_bits():
    assert C.NLB.put(7) == {"cdw12": 7} and C.NLB.get(Command(0x02, cdw12=0xABCD0007)) == 7
    assert C.FID.put(0x0E) == {"cdw10": 0x0E} and C.SEL.put(3) == {"cdw10": 3 << 8}
    assert C.SV.put(1) == {"cdw10": 1 << 31} and C.CSI.put(2) == {"cdw11": 2 << 24}
    # NUMD runs from NUMDL (CDW10 31:16) into NUMDU (CDW11 15:0)
    assert C.NUMD.put(0x12345) == {"cdw10": 0x2345 << 16, "cdw11": 0x1}
    assert C.NUMD.get(Command(0x02, cdw10=0xFFFF0002, cdw11=0xFFFF0001)) == 0x1FFFF
    assert C.SLBA.put(5 << 32 | 3) == {"cdw10": 3, "cdw11": 5}
    assert C.LPO.get(Command(0x02, cdw12=12, cdw13=5)) == 5 << 32 | 12
    for bits, bad in ((C.NLB, 0x10000), (C.SEL, 8), (C.RAE, 2), (C.LID, -1)):
        with pytest.raises(ValueError):
            bits.put(bad)


@given(st.sampled_from([C.CNS, C.CNTID, C.CSI, C.LID, C.LSP, C.RAE, C.NUMD, C.LSI, C.LPO, C.LOG_CSI,
                        C.FID, C.SEL, C.SV, C.EXHID, C.SLBA, C.NLB, C.LBAFL, C.SES, C.LBAFU]),
       st.integers(0, (1 << 64) - 1))
def test_a_field_gives_back_what_was_put_and_touches_nothing_else(bits, value):
    value &= bits.mask
    cmd = C.command(0x7E, 0, (bits, value))
    assert bits.get(cmd) == value
    for other in (C.CNS, C.NLB, C.SES):
        if other.dword != bits.dword:
            assert other.get(cmd) == 0


def test_builders_and_parsers():
    assert C.identify(CNS_CTRL, nsid=3, cntid=2, csi=2) == \
        Command(C.OP_IDENTIFY, nsid=3, cdw10=1 | 2 << 16, cdw11=2 << 24)
    cmd = C.get_log_page(C.LID_SMART, 512, rae=False)
    assert cmd == Command(C.OP_GET_LOG_PAGE, nsid=C.NSID_ALL, cdw10=0x02 | 127 << 16)
    assert C.log_page_fields(cmd) == (C.LID_SMART, 0, 512, 0, 0)
    assert C.get_features(C.FID_TEMP_THRESH, sel=2, cdw11=1 << 16) == \
        Command(C.OP_GET_FEATURES, cdw10=0x04 | 2 << 8, cdw11=1 << 16)
    assert C.set_features(C.FID_VOLATILE_WC, 1, save=True) == \
        Command(C.OP_SET_FEATURES, cdw10=0x06 | 1 << 31, cdw11=1)
    assert C.rw_fields(C.rw(C.OP_READ, 1, 1 << 40, 65536)) == (1 << 40, 65536)
    for nlb in (0, 65537):
        with pytest.raises(ValueError):
            C.rw(C.OP_WRITE, 1, 0, nlb)


def test_data_length_rules():
    assert C.identify_len(C.identify(CNS_CTRL)) == 4096
    assert C.log_page_len(C.get_log_page(C.LID_TELEMETRY_HOST, 0x40008)) == 0x40008
    read = C.rw(C.OP_READ, 1, 0, 8)
    assert C.lba_len(read, 512) == 4096 and C.lba_len(read, 4096) == 32768
    assert C.lba_len(read, 0) is None                   # block size unknown: no rule
    get, put = C.get_features, lambda fid, **kw: C.set_features(fid, 0, **kw)
    assert [C.feature_len(get(f)) for f in (C.FID_TIMESTAMP, C.FID_AUTO_PST, C.FID_HOST_BEHAVIOR,
                                            C.FID_LBA_RANGE, C.FID_PLM_CONFIG, C.FID_NS_METADATA)] == \
        [8, 256, 512, 4096, 512, 4096]
    assert C.feature_len(get(C.FID_HOST_MEM_BUF)) == 4096
    assert C.feature_len(put(C.FID_HOST_MEM_BUF)) == 0           # Set takes its list in CDW12..15
    assert C.feature_len(get(C.FID_HOST_ID)) == 8 and C.feature_len(get(C.FID_HOST_ID, cdw11=1)) == 16
    assert C.feature_len(put(C.FID_ARBITRATION)) == 0 and C.feature_len(get(C.FID_KATO)) == 0
    assert C.feature_len(get(0xC0)) is None             # vendor specific: no rule


def test_feature_sizes_agree_with_the_feature_files():
    for fid, feat in features.FEATURES.items():
        assert C.FEATURE_DATA[fid][0] == feat.data_len, feat.name


def test_opcode_rows():
    assert {r.queue for q in OPCODES.values() for r in q.values()} == {ADMIN, IO}
    assert all(op == row.opcode for q in OPCODES.values() for op, row in q.items())
    assert name_of(ADMIN, C.OP_FORMAT_NVM) == "Format NVM" and name_of(IO, C.OP_READ) == "Read"
    assert name_of(IO, 0x7E) == "Unknown" and lookup(ADMIN, 0xC0) is None
    assert [lookup(ADMIN, op).direction for op in (C.OP_IDENTIFY, C.OP_SET_FEATURES, C.OP_ABORT)] == \
        [XFER_FROM_CTRL, XFER_TO_CTRL, XFER_NONE]
    info = {(r.queue, r.opcode) for q in OPCODES.values() for r in q.values() if r.policy == INFO}
    assert info == {(ADMIN, C.OP_IDENTIFY), (ADMIN, C.OP_GET_LOG_PAGE), (ADMIN, C.OP_GET_FEATURES)}
    assert lookup(IO, C.OP_READ).read_only and lookup(IO, C.OP_READ).policy == READONLY
    assert not lookup(IO, C.OP_WRITE).read_only and lookup(IO, C.OP_WRITE).policy == ALL
    assert POLICIES == ("off", "info", "readonly", "all")
    mgmt = {(r.queue, r.opcode) for q in OPCODES.values() for r in q.values() if r.queue_mgmt}
    admin = (0x00, 0x01, 0x04, 0x05, 0x08, 0x0C, 0x18, 0x45, 0x7C, 0x7F)
    assert mgmt == {(ADMIN, op) for op in admin} | {(IO, 0x18), (IO, 0x7F)}


def test_commands_that_change_namespaces():
    for op in (C.OP_FORMAT_NVM, C.OP_NS_MGMT, C.OP_NS_ATTACH, C.OP_CAPACITY_MGMT, C.OP_FW_COMMIT):
        assert changes_namespaces(op, ADMIN), name_of(ADMIN, op)
    for op in (C.OP_SANITIZE, C.OP_SET_FEATURES, C.OP_IDENTIFY, 0xC0):
        assert not changes_namespaces(op, ADMIN), name_of(ADMIN, op)
    assert not changes_namespaces(C.OP_WRITE, IO)


def test_a_field_is_read_from_one_or_two_dwords_and_never_three():
    cmd = Command(0x02, cdw10=0x89ABCDEF, cdw11=0x01234567, cdw12=0x0007_0003)
    assert C.SLBA.get(cmd) == 0x0123456789ABCDEF and C.NLB.get(cmd) == 3
    with pytest.raises(ValueError):
        C.Bits(10, 4, (1 << 64) - 1)


def test_queue_management_builders_the_driver_sends():
    """Create I/O CQ/SQ (§5.4, §5.5), Abort (§5.1), Number of Queues (§5.27.1.5)."""
    cq = C.create_io_cq(3, 1024, 0x12000, vector=2)
    assert (cq.opcode, cq.cdw10, cq.cdw11, cq.prp1) == (0x05, 1023 << 16 | 3, 2 << 16 | 0b11,
                                                          0x12000)
    assert C.create_io_cq(1, 2, 0x1000, vector=None).cdw11 == 0b01      # polled: IEN clear
    sq = C.create_io_sq(3, 64, 0x40000, cqid=3)
    assert (sq.opcode, sq.cdw10, sq.cdw11, sq.prp1) == (0x01, 63 << 16 | 3, 3 << 16 | 1, 0x40000)
    assert (C.abort(1, 0x1234).opcode, C.abort(1, 0x1234).cdw10) == (0x08, 0x1234 << 16 | 1)
    nq = C.number_of_queues(4)
    assert (nq.opcode, nq.cdw10, nq.cdw11) == (0x09, 0x07, 3 << 16 | 3)
    assert C.queues_granted(7 << 16 | 3) == 4 and C.queues_granted(0) == 1


def test_firmware_download_and_dataset_management_lengths():
    assert lookup(ADMIN, C.OP_FW_DOWNLOAD).data_len(Command(0x11, cdw10=1023), 0) == 4096
    assert lookup(IO, C.OP_DSM).data_len(Command(0x09, cdw10=0), 512) == 16
    assert lookup(IO, C.OP_DSM).data_len(Command(0x09, cdw10=0xFFFFFF05), 512) == 6 * 16
