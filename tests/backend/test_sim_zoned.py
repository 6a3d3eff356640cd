"""The simulator's zoned namespaces (sim:zoned): the command set it names, its
Identify and effects log per command set, the zone state machine, writes at the
write pointer, Zone Append, Zone Management Send and Receive."""

import os
import tempfile

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvmefs.backends import Request
from nvmefs.backends.sim.config import parse_uri
from nvmefs.backends.sim.zones import ZoneSet
from nvmefs.spec import commands as C
from nvmefs.spec import identify as ID
from nvmefs.spec import iocs
from nvmefs.spec import logs as L
from nvmefs.spec import status as S
from nvmefs.spec import zones as Z
from nvmefs.spec.opcodes import IO
from nvmefs.spec.queue import Command

from ..conftest import controller

URI = "sim:size=64M,namespaces=2,zoned=8M,zoned_ns=2"    # ns 1 NVM, ns 2 zoned: 8 zones
ZB = (8 << 20) // 512                                    # blocks per zone
BLOCK = bytes(range(256)) * 2


async def report(c, nsid=2, slba=0, zones=8, zrasf=0, partial=True):
    length = Z.report_length(zones)
    cpl = await c.io(C.zone_mgmt_recv(nsid, slba, length, zrasf=zrasf, partial=partial),
                     data_in_len=length)
    assert cpl.ok, S.describe(cpl.status).name
    return Z.decode_report_json(cpl.data, {})


async def state(c, zone: int) -> tuple[str, int]:
    z = (await report(c, slba=zone * ZB, zones=1))["zone_list"][0]
    return z["state"], z["wp"]


def write(nsid, slba, nlb=1):
    return C.rw(C.OP_WRITE, nsid, slba, nlb)


async def status(c, cmd, data=b""):
    return S.code((await c.io(cmd, data_out=data)).status)


def test_uri_options():
    cfg = parse_uri("sim:namespaces=3,zoned=1M,zoned_ns=1:3")
    assert cfg.zoned == 1 << 20 and cfg.zoned_nsids() == {1, 3}
    assert parse_uri("sim:namespaces=2,zoned=4K").zoned_nsids() == {1, 2}
    assert parse_uri("sim").zoned_nsids() == frozenset()
    for bad in ("sim:zoned=1000", "sim:zoned=2G", "sim:zoned_ns=1", "sim:zoned=1M,zoned_ns=2",
                "sim:zoned=1M,zoned_ns=a", "sim:zoned=1M,zoned_ns=1,2"):
        with pytest.raises(ValueError):
            parse_uri(bad)


async def test_the_namespaces_name_their_command_sets():
    async with controller(URI) as c:
        assert c.csis == {1: C.CSI_NVM, 2: C.CSI_ZNS} and c.command_sets() == [0, 2]
        assert c.csi(2) == 2 and c.csi(1) == 0 and c.csi(9) == 0
        descs = await c.admin(C.identify(ID.CNS_NS_DESC_LIST, nsid=2), data_in_len=4096)
        assert [t for t, _ in iocs.decode_ns_descs(descs.data)] == [1, 2, 4]
    async with controller("sim:size=64M") as c:
        assert c.command_sets() == [0]


async def test_command_set_specific_identify():
    async with controller(URI) as c:
        async def ident(cns, nsid, csi):
            return await c.admin(C.identify(cns, nsid, csi=csi), data_in_len=4096)
        zns = iocs.decode_zns_id_ns((await ident(ID.CNS_NS_CS, 2, 2)).data, {"nlbaf": 1})
        assert zns["lbafe"][0] == {"zsze": ZB, "zdes": 0} and zns["lbafe"][1]["zsze"] == ZB // 8
        assert (zns["mar"], zns["mor"], zns["ozcs"]) == (-1, -1, iocs.OZCS_RAZB)   # as nvme-cli
        assert (await ident(ID.CNS_NS_CS, 1, 0)).ok and (await ident(ID.CNS_NS_CS, 2, 0)).ok
        assert S.code((await ident(ID.CNS_NS_CS, 1, 2)).status) == S.code(S.INVALID_IOCS)
        assert S.code((await ident(ID.CNS_NS_CS, 9, 2)).status) == S.code(S.INVALID_NS)
        assert S.code((await ident(ID.CNS_NS_CS, 1, 1)).status) == S.code(S.INVALID_IOCS)
        assert (await ident(ID.CNS_CTRL_CS, 0, 2)).data[0] == 0           # ZASL: MDTS
        assert (await ident(ID.CNS_CTRL_CS, 0, 0)).ok
        assert not (await ident(ID.CNS_CTRL_CS, 0, 1)).ok
    async with controller("sim:size=64M") as c:
        assert not (await c.admin(C.identify(ID.CNS_CTRL_CS, csi=2), data_in_len=4096)).ok


async def test_the_effects_log_per_command_set_is_what_is_implemented():
    async with controller(URI) as c:
        _, nvm = L.effects_tables((await c.get_log(C.LID_EFFECTS, 4096)).data)
        acs, zns = L.effects_tables((await c.get_log(C.LID_EFFECTS, 4096, csi=2)).data)
        _, kv = L.effects_tables((await c.get_log(C.LID_EFFECTS, 4096, csi=1)).data)
        on = lambda table: {op for op, e in enumerate(table) if e & L.CSUPP}   # noqa: E731
        assert {0x79, 0x7A, 0x7D} <= on(zns) and not {0x79, 0x7A, 0x7D} & on(nvm)
        assert {0x09, 0x19} <= on(nvm) and not {0x09, 0x19} & on(zns)      # no DSM, Copy
        assert zns[0x7A] == L.CSUPP and zns[0x79] == zns[0x7D] == L.CSUPP | L.LBCC
        assert on(kv) == set() and acs[0x06] & L.CSUPP
        for op in on(zns):
            # every one it lists is carried (a malformed one is refused, never unknown)
            cpl = await c.io(Command(op, nsid=2))
            assert S.code(cpl.status) != S.code(S.INVALID_OPCODE), hex(op)
        # and what a zoned namespace lacks is an invalid opcode there
        assert await status(c, C.command(C.OP_DSM, 2)) == S.code(S.INVALID_OPCODE)
        assert await status(c, C.command(C.OP_ZONE_MGMT_RECV, 1)) == S.code(S.INVALID_OPCODE)


async def test_writes_go_to_the_write_pointer():
    async with controller(URI) as c:
        assert (await report(c))["zone_list"][0]["state"] == "EMPTY"
        assert await status(c, write(2, 0, 2), BLOCK * 2) == 0
        assert await state(c, 0) == ("IMP_OPENED", 2)
        assert await status(c, write(2, 0), BLOCK) == S.code(S.ZONE_INVALID_WRITE)
        assert await status(c, write(2, 5), BLOCK) == S.code(S.ZONE_INVALID_WRITE)
        assert await status(c, write(2, ZB - 1, 2), BLOCK * 2) == S.code(S.ZONE_BOUNDARY_ERROR)
        assert await status(c, C.rw(C.OP_WRITE_ZEROES, 2, 2, 4)) == 0
        assert await state(c, 0) == ("IMP_OPENED", 6)
        data = await c.io(C.rw(C.OP_READ, 2, 0, 2), data_in_len=1024)
        assert data.data == BLOCK * 2
        # a zone written to its capacity is full; its write pointer is no longer valid
        assert await status(c, C.rw(C.OP_WRITE_ZEROES, 2, 6, ZB - 6)) == 0
        assert await state(c, 0) == ("FULL", Z.WP_INVALID)
        assert await status(c, write(2, ZB), BLOCK) == 0          # the next zone
        assert await status(c, write(2, 2 ** 40), BLOCK) == S.code(S.LBA_RANGE)
        # an NVM namespace has none of this
        assert await status(c, write(1, 77), BLOCK) == 0


async def test_zone_append_returns_the_lba_written():
    async with controller(URI + ",command_log=50") as c:
        assert await status(c, write(2, ZB), BLOCK) == 0
        cpl = await c.io(C.rw(C.OP_ZONE_APPEND, 2, ZB, 2), data_out=b"\xab" * 1024)
        assert cpl.ok and (cpl.dw0, cpl.dw1) == (ZB + 1, 0)
        assert (await c.io(C.rw(C.OP_READ, 2, ZB + 1, 2), data_in_len=1024)).data == b"\xab" * 1024
        assert await state(c, 1) == ("IMP_OPENED", ZB + 3)
        # ZSLBA must be a zone's start; a full zone takes nothing
        assert await status(c, C.rw(C.OP_ZONE_APPEND, 2, ZB + 1, 1), BLOCK) == \
            S.code(S.INVALID_FIELD)
        assert await status(c, C.zone_mgmt_send(2, ZB, Z.ZSA_FINISH)) == 0
        assert await status(c, C.rw(C.OP_ZONE_APPEND, 2, ZB, 1), BLOCK) == S.code(S.ZONE_IS_FULL)
        assert await status(c, C.rw(C.OP_ZONE_APPEND, 2, 0, 16), BLOCK) == \
            S.code(S.DATA_XFER_ERROR)                       # too little data: nothing moves
        assert await state(c, 0) == ("EMPTY", 0)


async def test_zone_management_send_actions():
    async with controller(URI) as c:
        send = lambda slba, zsa, all_=False: status(c, C.zone_mgmt_send(2, slba, zsa, all_))  # noqa
        assert await send(0, Z.ZSA_OPEN) == 0 and await state(c, 0) == ("EXP_OPENED", 0)
        assert await send(0, Z.ZSA_CLOSE) == 0 and await state(c, 0) == ("CLOSED", 0)
        assert await send(0, Z.ZSA_CLOSE) == 0                                  # already
        assert await status(c, write(2, 0, 2), BLOCK * 2) == 0
        assert await state(c, 0) == ("IMP_OPENED", 2)                           # reopened
        assert await send(0, Z.ZSA_FINISH) == 0 and await state(c, 0) == ("FULL", Z.WP_INVALID)
        assert await send(0, Z.ZSA_OPEN) == S.code(S.INVALID_ZONE_STATE_TRANSITION)
        assert await send(0, Z.ZSA_CLOSE) == S.code(S.INVALID_ZONE_STATE_TRANSITION)
        assert await send(0, Z.ZSA_RESET) == 0 and await state(c, 0) == ("EMPTY", 0)
        # the data of a reset zone is gone
        assert (await c.io(C.rw(C.OP_READ, 2, 0, 2), data_in_len=1024)).data == bytes(1024)
        assert await send(0, Z.ZSA_OFFLINE) == S.code(S.INVALID_ZONE_STATE_TRANSITION)
        assert await send(1, Z.ZSA_OPEN) == S.code(S.INVALID_FIELD)              # not a start
        assert await send(8 * ZB, Z.ZSA_OPEN) == S.code(S.LBA_RANGE)
        assert await send(0, Z.ZSA_SET_ZDE) == S.code(S.INVALID_FIELD)
        assert await send(0, 0x42) == S.code(S.INVALID_FIELD)
        # Select All: the zones the action applies to, whatever SLBA says
        for zone in (1, 2, 3):
            assert await status(c, write(2, zone * ZB), BLOCK) == 0
        assert await send(ZB, Z.ZSA_CLOSE) == 0
        assert await send(12345, Z.ZSA_CLOSE, True) == 0
        states = [z["state"] for z in (await report(c))["zone_list"]]
        assert states[:5] == ["EMPTY", "CLOSED", "CLOSED", "CLOSED", "EMPTY"]
        assert await send(0, Z.ZSA_OPEN, True) == 0
        assert [z["state"] for z in (await report(c))["zone_list"]][:5] == \
            ["EMPTY", "EXP_OPENED", "EXP_OPENED", "EXP_OPENED", "EMPTY"]
        assert await send(0, Z.ZSA_RESET, True) == 0
        assert {z["state"] for z in (await report(c))["zone_list"]} == {"EMPTY"}


async def test_zone_management_receive_filters_and_partial_reports():
    async with controller(URI) as c:
        for zone in (1, 3, 6):
            assert await status(c, write(2, zone * ZB), BLOCK) == 0
        assert await status(c, C.zone_mgmt_send(2, 3 * ZB, Z.ZSA_FINISH)) == 0
        everything = await report(c)
        assert everything["nr_zones"] == 8
        assert [z["slba"] for z in everything["zone_list"]] == [i * ZB for i in range(8)]
        assert all(z["cap"] == ZB and z["type"] == "SEQWRITE_REQ" for z in everything["zone_list"])
        opened = await report(c, zrasf=0x02)
        assert [z["slba"] for z in opened["zone_list"]] == [ZB, 6 * ZB]
        assert [z["slba"] for z in (await report(c, zrasf=0x05))["zone_list"]] == [3 * ZB]
        # from the zone holding SLBA on
        assert (await report(c, slba=ZB + 5))["zone_list"][0]["slba"] == ZB
        # partial: the count is of the zones listed; else of all that match
        part = await report(c, zones=2, partial=True)
        full = await report(c, zones=2, partial=False)
        assert (part["nr_zones"], full["nr_zones"], len(full["zone_list"])) == (2, 8, 2)
        assert (await report(c, zones=2, zrasf=0x01, partial=False))["nr_zones"] == 5
        header_only = await c.io(C.zone_mgmt_recv(2, 0, 64), data_in_len=64)
        assert Z.decode_report(header_only.data) == (0, [])
        bad = [C.zone_mgmt_recv(2, 0, 60), C.zone_mgmt_recv(2, 0, 128, zra=1),
               C.zone_mgmt_recv(2, 0, 128, zrasf=8)]
        for cmd in bad:
            cpl = await c.io(cmd, data_in_len=(C.ZMR_NUMD.get(cmd) + 1) * 4)
            assert S.code(cpl.status) == S.code(S.INVALID_FIELD)
        cpl = await c.io(C.zone_mgmt_recv(2, 8 * ZB, 128), data_in_len=128)
        assert S.code(cpl.status) == S.code(S.LBA_RANGE)


async def test_a_format_empties_the_zones_in_the_new_block_size():
    async with controller(URI) as c:
        assert await status(c, write(2, 0), BLOCK) == 0
        assert (await c.admin(C.command(C.OP_FORMAT_NVM, 2, cdw10=1))).ok      # 4096-byte blocks
        z = (await report(c))["zone_list"]
        assert (z[1]["slba"], z[0]["state"], z[0]["cap"]) == (ZB // 8, "EMPTY", ZB // 8)


async def test_zones_on_a_file_backed_namespace():
    with tempfile.TemporaryDirectory() as path:
        async with controller(f"{URI},path={path}") as c:
            assert await status(c, write(2, 0, 2), BLOCK * 2) == 0
            assert await status(c, C.zone_mgmt_send(2, 0, Z.ZSA_RESET)) == 0
            assert (await c.io(C.rw(C.OP_READ, 2, 0, 2), data_in_len=1024)).data == bytes(1024)
            assert os.listdir(path)


def test_a_last_zone_shorter_than_the_zone_size():
    zones = ZoneSet(100, 32)
    assert zones.count == 4 and zones.capacity(3) == 4
    assert zones.write(96, 4) == 0 and zones.state[3] == Z.ZS_FULL
    assert zones.write(64, 33) == S.ZONE_BOUNDARY_ERROR
    _, data = zones.report(0, Z.ZRA_REPORT, Z.ZRASF_ALL, True, Z.report_length(4))
    assert [d["zcap"] for d, _ in Z.decode_report(data)[1]] == [32, 32, 32, 4]
    assert zones.send(Z.ZSA_RESET, 96, False) == (0, [(96, 4)])


# ---------------------------------------------------------------- nothing a command carries raises

ZONE_OPS = sorted({0x00, 0x01, 0x02, 0x05, 0x08, 0x09, 0x0C, 0x19, 0x79, 0x7A, 0x7D})
SMALL = st.one_of(st.integers(0, 40), st.sampled_from([0xFFFFFFFF, 0x1FF, 0x10, 0x104, 0x10000]))


@st.composite
def zoned_requests(draw):
    """I/O commands a zoned namespace sees, with dwords near what matters (zone starts,
    small counts, the action and filter fields) and any data."""
    cmd = Command(draw(st.sampled_from(ZONE_OPS)), nsid=draw(st.sampled_from([1, 2, 3])),
                  cdw10=draw(st.sampled_from([0, 8, 16, 24, 31, 5])), cdw11=draw(SMALL),
                  cdw12=draw(SMALL), cdw13=draw(SMALL), cid=draw(st.integers(0, 0xFFFF)))
    return Request(IO, cmd, draw(st.integers(0, 9000).map(bytes)), draw(st.integers(0, 9000)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(zoned_requests(), min_size=1, max_size=16))
def test_random_zoned_commands_always_complete_and_keep_the_zones_consistent(reqs):
    async def main():
        async with controller("sim:size=1M,namespaces=2,zoned=4K,zoned_ns=2") as c:
            cpls = await c.submit_batch(reqs)
            assert [cpl.cid for cpl in cpls] == [r.cmd.cid for r in reqs]
            zones = c.device.namespaces[2].zones
            for i in range(zones.count):
                start, cap = zones.start(i), zones.capacity(i)
                assert start <= zones.wp[i] <= start + cap
                assert (zones.state[i] == Z.ZS_EMPTY) <= (zones.wp[i] == start)
                assert (zones.wp[i] == start + cap) == (zones.state[i] == Z.ZS_FULL)
            assert (await report(c, zones=4))["nr_zones"] == 4
    trio.run(main)
