"""Controller Data Queues and asynchronous events on the sim and on the vfio driver
over its register model: the controller side (backends.sim.cdq), the host side
(backends.cdq) and the events both report (backends.base)."""

from __future__ import annotations

import errno
import json

import pytest
import trio

from nvmefs.backends.cdq import LOST
from nvmefs.fs.waits import Waiters
from nvmefs.spec import cdq as Q
from nvmefs.spec import commands as C
from nvmefs.spec import status as S
from nvmefs.spec.queue import Command

from ..conftest import controller

URIS = ["sim:size=16M", "vfio:sim:size=16M"]
START = {"nsid": 0, "slba": 0, "nlb": 0, "event": "first", "lbacia": Q.LBACIA_NONE, "dlba": 0}
STOP = {**START, "event": "stopped"}


def ranges(raw: bytes) -> list[dict]:
    keys = ("nsid", "slba", "nlb", "event", "lbacia", "dlba")
    return [{k: d[k] for k in keys} for d in map(json.loads, Q.jsonl(raw).splitlines())]


def changed(nsid: int, slba: int, nlb: int, dlba: int = 0, event: str = "range") -> dict:
    return {"nsid": nsid, "slba": slba, "nlb": nlb, "event": event,
            "lbacia": Q.LBACIA_RANGE, "dlba": dlba}


async def write(c, slba: int, blocks: int, nsid: int = 1):
    return await c.io(C.rw(C.OP_WRITE, nsid, slba, blocks), data_out=bytes(512 * blocks))


def dsm(*pairs: tuple[int, int]) -> tuple[Command, bytes]:
    data = b"".join(b"\0" * 4 + n.to_bytes(4, "little") + s.to_bytes(8, "little")
                    for s, n in pairs)
    return C.command(C.OP_DSM, 1, (C.DSM_NR, len(pairs) - 1), cdw11=4), data


def copy(sdlba: int, *pairs: tuple[int, int]) -> tuple[Command, bytes]:
    data = b"".join(bytes(8) + s.to_bytes(8, "little") + (n - 1).to_bytes(2, "little")
                    + bytes(14) for s, n in pairs)
    return C.command(C.OP_COPY, 1, (C.SDLBA, sdlba), (C.COPY_NR, len(pairs) - 1)), data


async def make(c, name: str = "m", entries: int = 64):
    cpl, q = await c.cdq_create(name, entries, c.id_ctrl["cntlid"])
    assert cpl.ok, S.describe(cpl.status).name
    return q


async def wait_events(c, n: int) -> list[dict]:
    with trio.fail_after(2):
        while c.events.count < n:
            await trio.sleep(0.005)
    return [json.loads(line) for line in c.events.since(0)[0]]


@pytest.mark.parametrize("device", URIS)
async def test_tracking_logs_exactly_the_changed_ranges_between_markers(device):
    async with controller(device) as c:
        assert c.id_ctrl["oacs"] >> 11 & 1 and c.id_ctrl["trattr"] & 2
        q = await make(c)
        assert (await write(c, 0, 8)).ok                  # before tracking: not logged
        assert (await c.cdq_track(q, True)).ok
        assert (await c.cdq_track(q, True)).ok            # already on: no second marker
        assert (await write(c, 100, 8)).ok
        assert (await c.io(C.rw(C.OP_READ, 1, 100, 8), data_in_len=4096)).ok    # not a change
        assert not (await write(c, 1 << 40, 1)).ok       # failed: nothing changed
        assert (await c.io(C.rw(C.OP_WRITE_ZEROES, 1, 300, 16))).ok
        cmd, data = dsm((500, 4), (504, 4), (600, 1))    # the first two are adjacent
        assert (await c.io(cmd, data_out=data)).ok
        cmd, data = copy(1000, (0, 2), (100, 3))
        assert (await c.io(cmd, data_out=data)).ok
        assert (await c.cdq_track(q, False)).ok
        assert (await write(c, 2000, 1)).ok               # after tracking: not logged
        got = ranges(await q.take(64))
        assert got == [START, changed(1, 100, 7), changed(1, 300, 15), changed(1, 500, 7, 1),
                       changed(1, 600, 0, 1), changed(1, 1000, 4), STOP]
        assert await q.take(64) == b""
        info = q.info()
        assert (info["read"], info["posted"], info["lost"], info["tracking"]) == (7, 7, 0, "off")


@pytest.mark.parametrize("device", URIS)
async def test_a_small_queue_marks_the_entry_that_fills_it_and_counts_the_loss(device):
    async with controller(device) as c:
        q = await make(c, entries=4)                      # holds 3: one entry stays free
        await c.cdq_track(q, True)
        for slba in range(10, 60, 10):
            assert (await write(c, slba, 1)).ok
        got = ranges(await q.take(64))
        assert got == [START, changed(1, 10, 0), changed(1, 20, 0, event="full")]
        assert (q.info()["lost"], q.info()["full_markers"]) == (3, 1)
        assert (await write(c, 70, 1)).ok                  # room again: logging goes on
        assert ranges(await q.take(64)) == [changed(1, 70, 0)]
        events = await wait_events(c, 1)
        assert [(e["type_name"], e["info_name"], e["cdqid"]) for e in events] == \
            [("one-shot", "cdq-full", q.cdqid)]


@pytest.mark.parametrize("device", URIS)
async def test_the_tail_pointer_trigger_wakes_a_waiting_reader(device):
    async with controller(device) as c:
        q = await make(c, entries=8)
        await c.cdq_track(q, True)
        await q.take(8)                                    # the start marker
        woke = []
        waiters = Waiters()

        async def reader():
            await q.wait_entries(waiters, 5)
            woke.append(trio.current_time())

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await trio.sleep(0.05)
            assert not woke and q.armed and waiters.statistics().waiting == 1
            sent = trio.current_time()
            assert (await write(c, 7, 1)).ok
        assert woke[0] - sent < 0.05 and not q.armed
        assert ranges(await q.take(8)) == [changed(1, 7, 0)]
        assert any(e["info_name"] == "cdq-tail-pointer-trigger" for e in await wait_events(c, 1))
        for _ in range(3):                                  # across the wrap, each time
            assert (await write(c, 9, 1)).ok
            with trio.fail_after(1):
                await q.wait_entries(waiters, 1)
            assert len(await q.take(8)) == Q.ENTRY_SIZE


@pytest.mark.parametrize("device", URIS)
async def test_several_queues_each_get_every_change(device):
    async with controller(device) as c:
        a, b = await make(c, "a"), await make(c, "b")
        assert a.cdqid != b.cdqid
        await c.cdq_track(a, True)
        await write(c, 1, 1)
        await c.cdq_track(b, True)
        await write(c, 2, 1)
        assert ranges(await a.take(9)) == [START, changed(1, 1, 0), changed(1, 2, 0)]
        assert ranges(await b.take(9)) == [START, changed(1, 2, 0)]


@pytest.mark.parametrize("device", URIS)
async def test_refusals_carry_the_specs_statuses(device):
    async with controller(device) as c:
        cntlid = c.id_ctrl["cntlid"]
        assert (await c.cdq_create("x", 64, cntlid + 1))[0].status == S.INVALID_FIELD
        cpl = await c.admin(Q.create(0x10000, 32, cntlid))      # one entry: no ring
        assert cpl.status == S.INVALID_FIELD
        queues = [await make(c, str(i)) for i in range(4)]
        cpl, q = await c.cdq_create("5", 64, cntlid)
        assert cpl.status == S.NOT_ENOUGH_RESOURCES and q is None and "5" not in c.cdqs
        assert (await c.admin(Q.delete(77))).status == S.INVALID_CDQ
        assert (await c.admin(Q.track_send(77, True))).status == S.INVALID_CDQ
        assert (await c.admin(Q.set_head(queues[0].cdqid, 5))).status == S.INVALID_FIELD
        features = await c.admin(C.get_features(C.FID_CDQ, cdw11=queues[0].cdqid),
                                 data_in_len=8)
        assert features.ok and features.dw0 & 0xFFFF == queues[0].cdqid
        assert features.data == bytes(8)                    # head 0, no trigger armed


@pytest.mark.parametrize("device", URIS)
async def test_delete_stops_tracking_and_gives_the_memory_back(device):
    async with controller(device) as c:
        before = c.statistics().extra.get("dma_in_use")
        q = await make(c, entries=1024)
        await c.cdq_track(q, True)
        assert (await c.cdq_delete(q)).ok and q.state == "deleted" and not c.cdqs
        assert c.statistics().extra.get("dma_in_use") == before
        assert (await write(c, 1, 1)).ok                    # nothing left to log into
        assert await q.take(8) == b"" and q.ready()         # readers end


@pytest.mark.parametrize("device", URIS)
async def test_a_reset_loses_the_queues(device):
    async with controller(device) as c:
        q = await make(c)
        await c.reset()
        assert q.state == LOST and q.ready()
        with pytest.raises(OSError) as e:
            await q.take(8)
        assert e.value.errno == errno.EIO
        q2 = await make(c, "again")                         # the controller takes new ones
        assert q2.cdqid == 1


@pytest.mark.parametrize("device", URIS)
async def test_events_carry_the_log_page_that_explains_them(device):
    async with controller(device) as c:
        c.set_temperature(360)                               # over the 343 K threshold
        (smart,) = await wait_events(c, 1)
        assert (smart["source"], smart["type_name"], smart["info_name"], smart["lid"]) == \
            ("aer", "smart", "temperature-threshold", 2)
        assert smart["log"]["temperature"] == 360 and smart["log"]["critical_warning"] & 2
        c.set_temperature(365)                  # the log was read with RAE clear: unmasked
        assert (await wait_events(c, 2))[1]["log"]["temperature"] == 365
        image = b"NEWFW001" + bytes(4088)
        assert (await c.admin(Command(C.OP_FW_DOWNLOAD, cdw10=1023), data_out=image)).ok
        assert (await c.admin(Command(C.OP_FW_COMMIT, cdw10=2 | 3 << 3))).ok
        fw = (await wait_events(c, 3))[2]
        assert (fw["type_name"], fw["info_name"], fw["lid"]) == \
            ("notice", "fw-activation-starting", 3)
        # events the host disabled (Asynchronous Event Configuration) are not sent
        assert (await c.admin(C.set_features(C.FID_ASYNC_EVENT, 0))).ok
        c.set_temperature(370)
        await trio.sleep(0.05)
        assert c.events.count == 3 and c.statistics().extra["events"] == 3


async def test_a_page_that_does_not_decode_leaves_the_event_without_it():
    async with controller("sim") as c:
        assert c._explain(0x02, b"\x01\x02") is None       # too short for SMART: logged
        await c.publish_event({"source": "aer", "type_name": "smart"}, dw0=0x020101)
        assert json.loads(c.events.since(0)[0][-1])["log"]["temperature"] > 0
