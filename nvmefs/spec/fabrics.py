"""NVMe over Fabrics commands (NVMe over Fabrics 1.1 §3; Base 2.0 §6): Connect,
Property Get/Set, Disconnect, and the Connect data, as `Command`s.

A Fabrics command is opcode 7Fh with FCTYPE in byte 4 (where other commands
carry the NSID), so `Command.nsid` holds the FCTYPE here.
"""

from __future__ import annotations

import struct
import uuid
from typing import NamedTuple

from .commands import Bits, command
from .queue import Command

OP_FABRICS = 0x7F
FCTYPE_PROPERTY_SET, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET, FCTYPE_DISCONNECT = 0x00, 0x01, 0x04, 0x08
DYNAMIC_CNTLID = 0xFFFF         # Connect data: any controller of the subsystem
NQN_SIZE = 256

# Connect (§3.3, Figure 20): RECFMT, QID (CDW10), SQSIZE (0's based), CATTR (CDW11), KATO (ms)
RECFMT, QID, SQSIZE, CATTR = Bits(10, 0, 0xFFFF), Bits(10, 16, 0xFFFF), Bits(11, 0, 0xFFFF), \
    Bits(11, 16, 0xFF)
KATO = Bits(12, 0, 0xFFFFFFFF)
CATTR_DISABLE_SQ_FLOW = 1 << 2     # no SQ head in completions; NVMe/TCP: SUCCESS C2HData
# Property Get/Set (§3.4, §3.5): ATTRIB bit 0 (1: 8 bytes), OFFSET; Set's VALUE in CDW12..13
ATTRIB, OFFSET, VALUE = Bits(10, 0, 0x7), Bits(11, 0, 0xFFFFFFFF), Bits(12, 0, (1 << 64) - 1)
SIZE_8 = 1

# Connect data (Figure 21): HOSTID @0, CNTLID @16, SUBNQN @256, HOSTNQN @512
CONNECT_DATA = struct.Struct("<16sH238x256s256s256x")


class ConnectData(NamedTuple):
    hostid: str                 # UUID
    subnqn: str
    hostnqn: str
    cntlid: int = DYNAMIC_CNTLID

    def encode(self) -> bytes:
        return CONNECT_DATA.pack(uuid.UUID(self.hostid).bytes, self.cntlid,
                                 _nqn(self.subnqn), _nqn(self.hostnqn))

    @classmethod
    def decode(cls, raw: bytes) -> "ConnectData":
        hostid, cntlid, subnqn, hostnqn = CONNECT_DATA.unpack_from(raw)
        return cls(str(uuid.UUID(bytes=hostid)), subnqn.split(b"\0", 1)[0].decode("ascii"),
                   hostnqn.split(b"\0", 1)[0].decode("ascii"), cntlid)


def _nqn(nqn: str) -> bytes:
    raw = nqn.encode("ascii")
    if not 0 < len(raw) < NQN_SIZE:
        raise ValueError(f"an NQN is 1..{NQN_SIZE - 1} ASCII characters: {nqn!r}")
    return raw


def connect(qid: int, entries: int, kato_ms: int = 0, cattr: int = 0) -> Command:
    """Connect a queue of `entries` entries (its data is a ConnectData, 1024 bytes)."""
    return command(OP_FABRICS, FCTYPE_CONNECT, (QID, qid), (SQSIZE, entries - 1),
                   (CATTR, cattr), (KATO, kato_ms))


def property_get(offset: int, size: int) -> Command:
    """Read a controller property (a register of §3.1.4) of 4 or 8 bytes."""
    return command(OP_FABRICS, FCTYPE_PROPERTY_GET, (ATTRIB, size == 8), (OFFSET, offset))


def property_set(offset: int, value: int, size: int = 4) -> Command:
    return command(OP_FABRICS, FCTYPE_PROPERTY_SET, (ATTRIB, size == 8), (OFFSET, offset),
                   (VALUE, value))


def disconnect() -> Command:
    """Disconnect the queue the command is sent on (§3.7)."""
    return command(OP_FABRICS, FCTYPE_DISCONNECT)


def fctype(cmd: Command) -> int:
    return cmd.nsid & 0xFF
