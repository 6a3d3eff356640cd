"""Discovery Log Page (LID 70h, NVMe Base 2.0 §5.16.1.23, NVMe over Fabrics).

A discovery controller returns a 1024-byte header (GENCTR, NUMREC, RECFMT)
followed by NUMREC 1024-byte entries, one per NVM subsystem port it knows of.
The wire layout matches libnvme 1.3's `struct nvmf_discovery_log` and
`struct nvmf_disc_log_entry` (src/nvme/types.h, lines 4969-5045 and
5195-5201 at tag v1.3, commit 94dd6d02).

Views follow nvme-cli 2.3 (tag v2.3, commit 137fb15a), `nvme discover`:
- JSON (`-o json`) is `json_discovery_log()` in fabrics.c, lines 343-399:
  top-level `genctr` and `records`, and per record `trtype adrfam subtype
  treq portid trsvcid subnqn traddr eflags`, then `rdma_prtype rdma_qptype
  rdma_cms rdma_pkey` for RDMA or `sectype` for TCP. CNTLID, ASQSZ and RECFMT
  are not shown. GENCTR is a JSON number (json-c 0.14 or later, as in
  Debian 12; nvme-cli built against json-c 0.13 prints it as a string).
- Text (normal output) is `print_discovery_log()`, lines 296-341.
- TRSVCID, SUBNQN and TRADDR lose trailing spaces and NULs first, then end
  at the first NUL (`space_strip_len()`, lines 115-125). Two differences:
  a string with no NUL ends at its field's end (C would read on into the
  next field), and the text view shows SUBNQN stripped too (nvme-cli strips
  it only for JSON). Strings are UTF-8, invalid bytes shown as U+FFFD.
- Numbers become names through libnvme 1.3's tables (src/nvme/fabrics.c,
  lines 65-189: `nvmf_trtype_str`, `nvmf_adrfam_str`, `nvmf_subtype_str`,
  `nvmf_treq_str`, `nvmf_eflags_str`, `nvmf_sectype_str`, `nvmf_prtype_str`,
  `nvmf_qptype_str`, `nvmf_cms_str`); a value without a name there is
  "unrecognized". EFLAGS is looked up as a whole (bits 0-2 only), TREQ too,
  so TREQ 5 is "unrecognized" just as in nvme-cli.
"""

from __future__ import annotations

from typing import Any, Mapping

from .fields import Layout, u

DISC_HEADER_SIZE = 1024
DISC_ENTRY_SIZE = 1024

UNRECOGNIZED = "unrecognized"

HEADER = Layout("discovery-header", DISC_HEADER_SIZE, [
    u("genctr", 0, 8), u("numrec", 8, 8), u("recfmt", 16, 2),
])

# The numeric fields of an entry. The transport specific ones lie in TSAS
# (256 bytes @768): RDMA QPTYPE, PRTYPE, CMS and PKEY (@776); TCP SECTYPE.
ENTRY = Layout("discovery-entry", DISC_ENTRY_SIZE, [
    u("trtype", 0, 1), u("adrfam", 1, 1), u("subtype", 2, 1), u("treq", 3, 1),
    u("portid", 4, 2), u("cntlid", 6, 2), u("asqsz", 8, 2), u("eflags", 10, 2),
    u("rdma_qptype", 768, 1), u("rdma_prtype", 769, 1), u("rdma_cms", 770, 1),
    u("rdma_pkey", 776, 2), u("sectype", 768, 1),
])

# name -> (offset, size) of the entry's string fields
STRINGS = {"trsvcid": (32, 32), "subnqn": (256, 256), "traddr": (512, 256)}

TRTYPE_RDMA, TRTYPE_FC, TRTYPE_TCP, TRTYPE_LOOP = 1, 2, 3, 254
ADRFAM_PCI, ADRFAM_IPV4, ADRFAM_IPV6, ADRFAM_IB, ADRFAM_FC = 0, 1, 2, 3, 4
SUBTYPE_REFERRAL, SUBTYPE_NVME, SUBTYPE_CURRENT = 1, 2, 3
TREQ_NOT_SPECIFIED, TREQ_REQUIRED, TREQ_NOT_REQUIRED, TREQ_DISABLE_SQFLOW = 0, 1, 2, 4
EFLAGS_DUPRETINFO, EFLAGS_EPCSD, EFLAGS_NCC = 1, 2, 4
SECTYPE_NONE, SECTYPE_TLS, SECTYPE_TLS13 = 0, 1, 2

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
DISCOVERY_PORT = 8009           # NVMe/TCP's discovery port (IANA)

TRTYPES = {TRTYPE_RDMA: "rdma", TRTYPE_FC: "fc", TRTYPE_TCP: "tcp", TRTYPE_LOOP: "loop"}

ADRFAMS = {ADRFAM_PCI: "pci", ADRFAM_IPV4: "ipv4", ADRFAM_IPV6: "ipv6",
           ADRFAM_IB: "infiniband", ADRFAM_FC: "fibre-channel"}

SUBTYPES = {SUBTYPE_REFERRAL: "discovery subsystem referral", SUBTYPE_NVME: "nvme subsystem",
            SUBTYPE_CURRENT: "current discovery subsystem"}

TREQS = {
    TREQ_NOT_SPECIFIED: "not specified",
    TREQ_REQUIRED: "required",
    TREQ_NOT_REQUIRED: "not required",
    TREQ_DISABLE_SQFLOW: "not specified, sq flow control disable supported",
}

_EPCSD = "explicit discovery connections"
_DUPRETINFO = "duplicate discovery information"
_NCC = "no cdc connectivity"

EFLAGS = {
    0: "none",
    EFLAGS_EPCSD: _EPCSD,
    EFLAGS_DUPRETINFO: _DUPRETINFO,
    EFLAGS_EPCSD | EFLAGS_DUPRETINFO: f"{_EPCSD}, {_DUPRETINFO}",
    EFLAGS_NCC: _NCC,
    EFLAGS_EPCSD | EFLAGS_NCC: f"{_EPCSD}, {_NCC}",
    EFLAGS_DUPRETINFO | EFLAGS_NCC: f"{_DUPRETINFO}, {_NCC}",
    EFLAGS_EPCSD | EFLAGS_DUPRETINFO | EFLAGS_NCC: f"{_EPCSD}, {_DUPRETINFO}, {_NCC}",
}

SECTYPES = {SECTYPE_NONE: "none", SECTYPE_TLS: "tls", SECTYPE_TLS13: "tls13"}

PRTYPES = {1: "not specified", 2: "infiniband", 3: "roce", 4: "roce-v2", 5: "iwarp"}

QPTYPES = {1: "connected", 2: "datagram"}

CMS = {1: "rdma-cm"}

# transport -> the TSAS keys nvme-cli shows for it, each with its name table
# (None: shown as a number)
TSAS_KEYS: dict[int, tuple[tuple[str, Mapping[int, str] | None], ...]] = {
    TRTYPE_RDMA: (("rdma_prtype", PRTYPES), ("rdma_qptype", QPTYPES), ("rdma_cms", CMS),
                  ("rdma_pkey", None)),
    TRTYPE_TCP: (("sectype", SECTYPES),),
}

# record key -> the table naming its value
NAMED = {"trtype": TRTYPES, "adrfam": ADRFAMS, "subtype": SUBTYPES, "treq": TREQS}


def name(table: Mapping[int, str], value: int) -> str:
    """`value`'s name in one of the tables above, as libnvme's `arg_str()` gives it."""
    return table.get(value, UNRECOGNIZED)


def record_count(header: bytes) -> int:
    """NUMREC of a Discovery Log Page's header (its first 16 bytes suffice)."""
    return int.from_bytes(header[8:16], "little")


def discovery_log_len(numrec: int) -> int:
    """Bytes of a Discovery Log Page holding `numrec` records."""
    if numrec < 0:
        raise ValueError(f"negative record count {numrec}")
    return DISC_HEADER_SIZE + numrec * DISC_ENTRY_SIZE


def _string(entry: bytes, field: str) -> str:
    offset, size = STRINGS[field]
    raw = entry[offset:offset + size].rstrip(b" \0").split(b"\0", 1)[0]
    return raw.decode("utf-8", "replace")


def decode_entry(entry: bytes) -> dict[str, Any]:
    """One 1024-byte entry as nvme-cli 2.3 prints a record."""
    v = ENTRY.decode(entry)
    record: dict[str, Any] = {key: name(table, v[key]) for key, table in NAMED.items()}
    record["portid"] = v["portid"]
    for key in STRINGS:
        record[key] = _string(entry, key)
    record["eflags"] = name(EFLAGS, v["eflags"])
    for key, table in TSAS_KEYS.get(v["trtype"], ()):
        record[key] = v[key] if table is None else name(table, v[key])
    return record


def decode_discovery(raw: bytes) -> dict[str, Any]:
    """The `nvme discover -o json` object for a Discovery Log Page.

    Shows the header's NUMREC records, or as many whole ones as `raw` holds.
    """
    if len(raw) < DISC_HEADER_SIZE:
        raise ValueError(f"Discovery Log Page needs at least {DISC_HEADER_SIZE} bytes, "
                         f"got {len(raw)}")
    raw = bytes(raw)
    header = HEADER.decode(raw)
    count = min(header["numrec"], (len(raw) - DISC_HEADER_SIZE) // DISC_ENTRY_SIZE)
    records = []
    for i in range(count):
        off = discovery_log_len(i)
        records.append(decode_entry(raw[off:off + DISC_ENTRY_SIZE]))
    return {"genctr": header["genctr"], "records": records}


# text view: record key -> its label, padded as nvme-cli pads it
TEXT_LABELS = {
    "trtype": "trtype:  ", "adrfam": "adrfam:  ", "subtype": "subtype: ", "treq": "treq:    ",
    "portid": "portid:  ", "trsvcid": "trsvcid: ", "subnqn": "subnqn:  ", "traddr": "traddr:  ",
    "eflags": "eflags:  ", "rdma_prtype": "rdma_prtype: ", "rdma_qptype": "rdma_qptype: ",
    "rdma_cms": "rdma_cms:    ", "rdma_pkey": "rdma_pkey: ", "sectype": "sectype: ",
}


def _text_value(record: Mapping[str, Any], key: str) -> str:
    if key == "adrfam" and not record["traddr"]:
        return ""                        # nvme-cli leaves it blank without an address
    if key == "rdma_pkey":
        return f"0x{record[key]:04x}"
    return str(record[key])


def text_discovery(decoded: Mapping[str, Any]) -> str:
    """nvme-cli 2.3's normal `nvme discover` output for a decoded log."""
    records = decoded["records"]
    lines = ["", f"Discovery Log Number of Records {len(records)}, "
                 f"Generation counter {decoded['genctr']}"]
    for i, record in enumerate(records):
        lines.append(f"=====Discovery Log Entry {i}======")
        lines.extend(f"{TEXT_LABELS[key]}{_text_value(record, key)}" for key in record)
    return "\n".join(lines) + "\n"
