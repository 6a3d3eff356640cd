"""Kernel NVMe uevents: datagrams as lib/kobject_uevent.c sends them for what
drivers/nvme/host/core.c emits (Linux 6.1), and a real NETLINK_KOBJECT_UEVENT socket."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import uuid

import pytest
import trio

from nvmefs.backends.linux.uevents import (
    NETLINK_KOBJECT_UEVENT,
    RECEIVE_BUFFER,
    Uevent,
    UeventSocket,
    nvme_event,
    parse_uevent,
)

PCI_CTRL = "/devices/pci0000:00/0000:00:04.0/nvme/nvme0"
TCP_CTRL = "/devices/virtual/nvme-fabrics/ctl/nvme1"
SUBSYS = "/devices/virtual/nvme-subsystem/nvme-subsys0"

# nvme_aen_uevent() for a SMART/health temperature-threshold AEN on a PCIe controller:
# ACTION, DEVPATH, SUBSYSTEM, the caller's NVME_AEN, dev_uevent()'s MAJOR/MINOR/DEVNAME,
# nvme_class_uevent()'s NVME_TRTYPE, SEQNUM
AEN_DATAGRAM = (
    b"change@/devices/pci0000:00/0000:00:04.0/nvme/nvme0\0"
    b"ACTION=change\0DEVPATH=/devices/pci0000:00/0000:00:04.0/nvme/nvme0\0SUBSYSTEM=nvme\0"
    b"NVME_AEN=0x020101\0MAJOR=241\0MINOR=0\0DEVNAME=nvme0\0NVME_TRTYPE=pcie\0SEQNUM=2871\0"
)


def datagram(action: str, devpath: str, subsystem: str, *extra: str, seqnum: int = 4711) -> bytes:
    fields = (f"{action}@{devpath}", f"ACTION={action}", f"DEVPATH={devpath}",
              f"SUBSYSTEM={subsystem}", *extra, f"SEQNUM={seqnum}")
    return "".join(f + "\0" for f in fields).encode()


def aen(dword: int, devpath: str = PCI_CTRL) -> Uevent:
    ev = parse_uevent(datagram("change", devpath, "nvme", "NVME_AEN=%#08x" % dword,   # kasprintf's format
                               "MAJOR=241", "MINOR=0", "DEVNAME=nvme0", "NVME_TRTYPE=pcie"))
    assert ev is not None
    return ev


def disk(action: str, devpath: str) -> Uevent:
    name = devpath.rpartition("/")[2]
    ev = parse_uevent(datagram(action, devpath, "block", "MAJOR=259", "MINOR=0",
                               f"DEVNAME={name}", "DEVTYPE=disk", "DISKSEQ=9"))
    assert ev is not None
    return ev


def test_parse_kernel_datagram():
    ev = parse_uevent(AEN_DATAGRAM)
    assert ev == Uevent("change", PCI_CTRL, {
        "ACTION": "change", "DEVPATH": PCI_CTRL, "SUBSYSTEM": "nvme", "NVME_AEN": "0x020101",
        "MAJOR": "241", "MINOR": "0", "DEVNAME": "nvme0", "NVME_TRTYPE": "pcie", "SEQNUM": "2871"})
    assert nvme_event(ev) == ("nvme0", {
        "source": "uevent", "aen": "0x00020101", "type": 1, "type_name": "smart", "info": 1,
        "info_name": "temperature-threshold", "lid": 2})


def test_libudev_datagram_ignored():
    """udev's re-broadcast (group 2): "libudev\\0", magic 0xfeedcafe, offsets, then the same properties."""
    props = AEN_DATAGRAM.partition(b"\0")[2]
    header = b"libudev\0" + struct.pack(">I", 0xFEEDCAFE) + struct.pack("<7I", 40, 40, len(props), 0, 0, 0, 0)
    assert parse_uevent(header + props) is None


def test_every_truncation_is_rejected():
    for n in range(len(AEN_DATAGRAM)):
        assert parse_uevent(AEN_DATAGRAM[:n]) is None, n


@pytest.mark.parametrize("data", [
    b"", b"\0", b"@\0", b"change@\0", b"change@devices\0ACTION=change\0DEVPATH=devices\0SEQNUM=1\0",
    datagram("change", "/x", "mem").replace(b"SEQNUM=4711", b"SEQNUM="),
    datagram("change", "/x", "mem").replace(b"ACTION=change", b"ACTION=add"),
    datagram("change", "/x", "mem").replace(b"DEVPATH=/x", b"DEVPATH=/y"),
    datagram("change", "/x", "mem", "NOEQUALS"),
    datagram("change", "/x", "mem", "=value"),
])
def test_malformed_rejected(data):
    assert parse_uevent(data) is None


def test_random_bytes_never_raise():
    rng = random.Random(20240611)
    alphabet = b"\0@=/ACTIONDEVPATHSEQNUMnvme0123456789\xff\x80"
    for i in range(4000):
        n = rng.randrange(0, 400)
        if i % 2:
            data = rng.randbytes(n)
        else:
            data = bytes(rng.choice(alphabet) for _ in range(n))
        assert parse_uevent(data) is None, data
    # damaged real datagrams may still parse; the result must never make nvme_event raise
    for _ in range(4000):
        data = bytearray(AEN_DATAGRAM)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        ev = parse_uevent(bytes(data))
        if ev is not None:
            nvme_event(ev)


@pytest.mark.parametrize("dword, kind, info, lid", [
    (0x020101, 1, 0x01, 0x02),      # SMART/health: temperature threshold, SMART log
    (0x010000, 0, 0x00, 0x01),      # error: write to invalid doorbell, error log
    (0x70F002, 2, 0xF0, 0x70),      # notice: discovery log page change, discovery log
    (0x0A0006, 6, 0x00, 0x0A),      # I/O command set specific
    (0xC0FF07, 7, 0xFF, 0xC0),      # vendor specific, vendor log page
    (0xAB020101, 1, 0x01, 0x02),    # reserved bits 31:24 set: "%#08x" grows past 8 characters
])
def test_aen_decode(dword, kind, info, lid):
    ev = aen(dword)
    assert ev.env["NVME_AEN"] == "%#08x" % dword
    ctrl, record = nvme_event(ev)
    assert ctrl == "nvme0" and record["aen"] == f"0x{dword:08x}"
    assert (record["type"], record["info"], record["lid"]) == (kind, info, lid)


@pytest.mark.parametrize("value", ["", "0x", "020101", "zz", "0x123456789", "-0x1", "0x02 0101"])
def test_bad_aen_value(value):
    ev = parse_uevent(datagram("change", PCI_CTRL, "nvme", f"NVME_AEN={value}"))
    assert ev is not None and nvme_event(ev) is None


def test_connected_fabrics():
    ev = parse_uevent(datagram(
        "change", TCP_CTRL, "nvme", "NVME_EVENT=connected", "MAJOR=241", "MINOR=1", "DEVNAME=nvme1",
        "NVME_TRTYPE=tcp", "NVME_TRADDR=192.168.10.2", "NVME_TRSVCID=4420",
        "NVME_HOST_TRADDR=none", "NVME_HOST_IFACE=none"))
    assert nvme_event(ev) == ("nvme1", {
        "source": "uevent", "type_name": "connected", "trtype": "tcp", "traddr": "192.168.10.2",
        "trsvcid": "4420", "host_traddr": "none", "host_iface": "none"})


def test_connected_and_rediscover():
    ev = parse_uevent(datagram("change", PCI_CTRL, "nvme", "NVME_EVENT=connected", "DEVNAME=nvme0",
                               "NVME_TRTYPE=pcie"))
    assert nvme_event(ev) == ("nvme0", {"source": "uevent", "type_name": "connected", "trtype": "pcie"})
    ev = parse_uevent(datagram("change", TCP_CTRL, "nvme", "NVME_EVENT=rediscover", "NVME_TRTYPE=tcp"))
    assert nvme_event(ev) == ("nvme1", {"source": "uevent", "type_name": "rediscover", "trtype": "tcp"})


@pytest.mark.parametrize("ev", [
    datagram("change", PCI_CTRL, "nvme", "SYNTH_UUID=0", "NVME_TRTYPE=pcie"),   # `udevadm trigger`
    datagram("add", PCI_CTRL, "nvme", "NVME_TRTYPE=pcie"),
    datagram("remove", PCI_CTRL, "nvme", "NVME_TRTYPE=pcie"),
    datagram("change", "/devices/virtual/mem/null", "mem", "NVME_AEN=0x020101"),
    datagram("change", SUBSYS, "nvme-subsystem", "NVME_AEN=0x020101"),
    datagram("add", PCI_CTRL + "/nvme0n1/nvme0n1p1", "block", "DEVNAME=nvme0n1p1", "DEVTYPE=partition"),
    datagram("add", PCI_CTRL + "/ng0n1", "nvme-generic", "DEVNAME=ng0n1"),
    datagram("change", PCI_CTRL + "/nvme0n1", "block", "DEVNAME=nvme0n1", "DEVTYPE=disk", "RESIZE=1"),
    datagram("add", "/devices/virtual/block/loop0", "block", "DEVNAME=loop0", "DEVTYPE=disk"),
])
def test_not_nvme_events(ev):
    parsed = parse_uevent(ev)
    assert parsed is not None and nvme_event(parsed) is None


def test_namespace_added_reads_nsid(tmp_path):
    devpath = PCI_CTRL + "/nvme0n2"
    (tmp_path / devpath.lstrip("/")).mkdir(parents=True)
    (tmp_path / devpath.lstrip("/") / "nsid").write_text("3\n")    # the name's n2 is not the NSID
    assert nvme_event(disk("add", devpath), sysfs=str(tmp_path)) == ("nvme0", {
        "source": "uevent", "type_name": "namespace-added", "namespace": "nvme0n2", "nsid": 3})
    assert nvme_event(disk("remove", devpath), sysfs=str(tmp_path)) == ("nvme0", {
        "source": "uevent", "type_name": "namespace-removed", "namespace": "nvme0n2", "nsid": None})


@pytest.mark.parametrize("devpath, ctrl", [
    (PCI_CTRL + "/nvme0n1", "nvme0"),
    (TCP_CTRL + "/nvme1n1", "nvme1"),
    # multipath on, namespace not shared: named by subsystem instance, still under its controller
    ("/devices/pci0000:00/0000:00:05.0/nvme/nvme2/nvme1n1", "nvme2"),
    (SUBSYS + "/nvme0n1", None),                # multipath head: no controller
    (PCI_CTRL.replace("nvme0", "nvme1") + "/nvme0c1n1", "nvme1"),    # path node under its controller
    (SUBSYS + "/nvme0c1n1", "nvme1"),           # path node named nvme<subsys>c<ctrl>n<ns>
])
def test_namespace_controller(tmp_path, devpath, ctrl):
    name = devpath.rpartition("/")[2]
    for action, kind in (("add", "namespace-added"), ("remove", "namespace-removed")):
        expected = None if ctrl is None else (ctrl, {"source": "uevent", "type_name": kind,
                                                     "namespace": name, "nsid": None})
        assert nvme_event(disk(action, devpath), sysfs=str(tmp_path)) == expected


def open_or_skip() -> UeventSocket:
    try:
        return UeventSocket.open()
    except OSError as e:
        pytest.skip(f"cannot open a NETLINK_KOBJECT_UEVENT socket: {e}")


def trigger(tag: str = "") -> None:
    """A synthetic "change" uevent (kobject_synth_uevent) for /dev/null, with SYNTH_UUID=tag if given."""
    try:
        with open("/sys/class/mem/null/uevent", "w") as f:
            f.write(f"change {tag}" if tag else "change")
    except OSError as e:
        pytest.skip(f"cannot trigger a uevent through /sys/class/mem/null/uevent: {e}")


async def receive_tagged(u: UeventSocket, tag: str) -> Uevent:
    with trio.fail_after(10):
        while True:
            ev = parse_uevent(await u.receive())
            if ev is not None and ev.env.get("SYNTH_UUID") == tag:
                return ev


async def test_socket_receives_triggered_uevent():
    with open_or_skip() as u:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        # the kernel doubles what it is asked for; SO_RCVBUFFORCE (root) ignores rmem_max
        assert u.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * min(RECEIVE_BUFFER, rmem_max)
        tag = str(uuid.uuid4())
        trigger(tag)
        ev = await receive_tagged(u, tag)
    assert ev.action == "change" and ev.devpath == "/devices/virtual/mem/null"
    assert ev.env["SUBSYSTEM"] == "mem" and ev.env["DEVNAME"] == "null"
    assert nvme_event(ev) is None


async def test_socket_drops_datagrams_not_from_kernel():
    with open_or_skip() as u:
        tag = str(uuid.uuid4())
        fake = datagram("change", "/devices/virtual/mem/fake", "mem", f"SYNTH_UUID={tag}")
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT) as s:
            s.bind((0, 0))
            try:
                s.sendto(fake, (u.sock.getsockname()[0], 0))    # unicast, queued first
            except PermissionError as e:
                pytest.skip(f"cannot send to a uevent socket (needs CAP_NET_ADMIN): {e}")
        trigger(tag)
        ev = await receive_tagged(u, tag)
    assert ev.devpath == "/devices/virtual/mem/null"


async def test_overflow_yields_lost_and_continues():
    with open_or_skip() as u:
        u.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)     # the kernel's minimum
        async with contextlib.aclosing(u.events()) as events:
            for _ in range(2):
                for _ in range(50):
                    trigger()
                with trio.fail_after(10):
                    assert await events.__anext__() == ("", {"source": "uevent", "type_name": "lost"})
                # netlink reports the next overflow only once the queue has been read empty
                while True:
                    with trio.move_on_after(0.3) as idle:
                        await u.receive()
                    if idle.cancelled_caught:
                        break
