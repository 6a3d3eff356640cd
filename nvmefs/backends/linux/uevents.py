"""The Linux NVMe driver's uevents, read from the kernel's netlink socket and turned
into asynchronous-event records (checked against Debian's 6.1 source).

What drivers/nvme/host/core.c emits, all from the controller's device (SUBSYSTEM=nvme,
DEVNAME=nvme0; DEVPATH /devices/pci0000:00/0000:00:04.0/nvme/nvme0, or for fabrics
/devices/virtual/nvme-fabrics/ctl/nvme0), each "change" event also carrying
nvme_class_uevent()'s NVME_TRTYPE and, for fabrics, NVME_TRADDR, NVME_TRSVCID,
NVME_HOST_TRADDR and NVME_HOST_IFACE ("none" where unset):
 - NVME_AEN=%#08x (nvme_aen_uevent), the AEN's completion dword 0, for what
   nvme_complete_async_event() does not handle itself: error (except Persistent
   Internal Error, which resets the controller instead), SMART/health, I/O command
   set specific and vendor specific events, and of the notices only Discovery Log
   Page Change (nvme_handle_aen_notice(); any other unhandled notice is only logged);
 - NVME_EVENT=connected and, for a persistent discovery controller reconnecting,
   NVME_EVENT=rediscover (nvme_change_uevent() from nvme_start_ctrl()).
A Namespace Attribute Changed notice makes the driver rescan (nvme_queue_scan()),
so namespaces come and go as block devices: nvme_alloc_ns() adds the disk under the
controller's device (.../nvme/nvme0/nvme0n1; ng0n1, SUBSYSTEM=nvme-generic, beside it
is the same namespace again and is ignored here). With native multipath a shared
namespace's node is the head under /devices/virtual/nvme-subsystem/nvme-subsys0, which
names no controller, and the per-path disks nvmeXcYnZ are hidden: device_add_disk()
never lifts their uevent suppression, so they send none. The "nN" of a disk name is
the subsystem's namespace instance (nvme_alloc_ns_head()), not the NSID.

The socket: uevent_net_init() creates the kernel side with NL_CFG_F_NONROOT_RECV, and
binding multicast group 1 as nobody works (tried on 6.18), so no privilege is needed to
listen. Uevents reach only network namespaces owned by the initial user namespace.
SO_RCVBUFFORCE needs CAP_NET_ADMIN (EPERM as nobody); SO_RCVBUF is capped by
net.core.rmem_max. When the buffer overflows, the next recv fails with ENOBUFS and
the ones after it read what was kept; netlink_overrun() reports a further overflow only
after the queue has been read empty (netlink_rcv_wake()).
"""

from __future__ import annotations

import errno
import re
import socket
from dataclasses import dataclass
from typing import AsyncIterator

import trio

from ...spec.events import decode_aen

NETLINK_KOBJECT_UEVENT = 15     # <linux/netlink.h>; the socket module does not name it
SO_RCVBUFFORCE = 33             # <asm-generic/socket.h>; nor this
KERNEL_GROUP = 1                # kobject_uevent's multicast group; udev re-sends on 2
RECEIVE_BUFFER = 1 << 20
DATAGRAM_MAX = 1 << 16

CONTROLLER = re.compile(r"nvme(\d+)")
DISK = re.compile(r"nvme\d+(?:c(\d+))?n\d+")    # nvme_alloc_ns(): nvme%dn%d, nvme%dc%dn%d
AEN = re.compile(r"0x[0-9a-fA-F]{1,8}")


@dataclass(frozen=True)
class Uevent:
    action: str          # "change", "add", "remove", ...
    devpath: str
    env: dict[str, str]


def parse_uevent(datagram: bytes) -> Uevent | None:
    """A kernel uevent, "ACTION@DEVPATH\\0KEY=VALUE\\0...\\0" as alloc_uevent_skb() builds
    it with kobject_uevent_env()'s ACTION, DEVPATH, ..., SEQNUM. None for a datagram
    that is not one (libudev header, garbage, empty, truncated)."""
    if not datagram.endswith(b"\0"):
        return None
    header, *fields = datagram[:-1].decode("utf-8", "replace").split("\0")
    action, at, devpath = header.partition("@")
    env = {}
    for f in fields:
        key, eq, value = f.partition("=")
        if not key or not eq:
            return None
        env[key] = value
    if (not at or not action or not devpath.startswith("/")
            or env.get("ACTION") != action or env.get("DEVPATH") != devpath
            or not env.get("SEQNUM", "").isdigit()):
        return None
    return Uevent(action, devpath, env)


def _read_nsid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def nvme_event(ev: Uevent, sysfs: str = "/sys") -> tuple[str, dict] | None:
    """(controller name such as "nvme0", event record) for an NVMe uevent, else None.

    NVME_AEN (nvme_aen_uevent): {"source": "uevent", "aen": "0x%08x"} and the event's
    fields as an Asynchronous Event Request's (spec.events.decode_aen: type, info, lid,
    and their names).
    NVME_EVENT (nvme_change_uevent): {"source": "uevent", "type_name": "connected"|...}
    plus the other NVME_* keys lowercased without the prefix ("trtype", "traddr", ...).
    A namespace disk added or removed: {"source": "uevent", "type_name": "namespace-added" |
    "namespace-removed", "namespace": "nvme0n1", "nsid": N or None}. The controller is
    the disk's parent in the devpath, or for a path node nvmeXcYnZ controller nvmeY; a
    multipath head names none, so None. The NSID is read from sysfs `nsid` on add (the
    name does not give it); on remove it is gone, so None.
    """
    head, _, name = ev.devpath.rpartition("/")
    parent = head.rpartition("/")[2]
    subsystem = ev.env.get("SUBSYSTEM")
    if subsystem == "nvme" and ev.action == "change" and CONTROLLER.fullmatch(name):
        if "NVME_AEN" in ev.env:
            if not AEN.fullmatch(ev.env["NVME_AEN"]):
                return None
            dw0 = int(ev.env["NVME_AEN"], 16)
            return name, {"source": "uevent", "aen": f"{dw0:#010x}", **decode_aen(dw0)}
        if "NVME_EVENT" in ev.env:
            rec = {"source": "uevent", "type_name": ev.env["NVME_EVENT"]}
            rec.update((k[5:].lower(), v) for k, v in ev.env.items()
                       if k.startswith("NVME_") and k not in ("NVME_EVENT", "NVME_AEN"))
            return name, rec
        return None
    disk = DISK.fullmatch(name)
    if (subsystem != "block" or ev.env.get("DEVTYPE") != "disk" or not disk
            or ev.action not in ("add", "remove")):
        return None
    if CONTROLLER.fullmatch(parent):
        ctrl = parent
    elif disk.group(1) is not None:
        ctrl = f"nvme{disk.group(1)}"
    else:
        return None
    added = ev.action == "add"
    return ctrl, {"source": "uevent",
                  "type_name": "namespace-added" if added else "namespace-removed",
                  "namespace": name,
                  "nsid": _read_nsid(f"{sysfs}{ev.devpath}/nsid") if added else None}


class UeventSocket:
    """The kernel's uevents (NETLINK_KOBJECT_UEVENT, multicast group 1), for trio.
    open() raises OSError if the socket cannot be made; receive() awaits the next
    datagram (bytes, up to 64 KiB) sent by the kernel; close()."""

    def __init__(self, sock: trio.socket.SocketType):
        self.sock = sock

    @classmethod
    def open(cls) -> UeventSocket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                          NETLINK_KOBJECT_UEVENT)
        try:
            s.bind((0, KERNEL_GROUP))
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except OSError:     # EPERM without CAP_NET_ADMIN: up to rmem_max then
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            s.close()
            raise
        return cls(trio.socket.from_stdlib_socket(s))

    async def receive(self) -> bytes:
        """The next datagram from the kernel (sender port 0); others are dropped, as
        udev does. OSError(ENOBUFS) when the kernel dropped uevents."""
        while True:
            data, (portid, _groups) = await self.sock.recvfrom(DATAGRAM_MAX)
            if portid == 0:
                return data

    async def events(self) -> AsyncIterator[tuple[str, dict]]:
        """(controller, record) for each NVMe uevent (nvme_event); ("", {"source":
        "uevent", "type_name": "lost"}) where the kernel dropped some."""
        while True:
            try:
                data = await self.receive()
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                yield "", {"source": "uevent", "type_name": "lost"}
                continue
            ev = parse_uevent(data)
            found = nvme_event(ev) if ev else None
            if found:
                yield found

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UeventSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
