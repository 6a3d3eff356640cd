"""BAR0 controller registers: offsets, fields, doorbells and the snapshot view."""

import json

import pytest

from nvmefs import cli
from nvmefs.spec import registers as r
from nvmefs.spec import render

# QEMU's controller after enable: MQES 0x7ff, CQR, TO 0xf, CSS NVM|IOCS, MPSMAX 4, DSTRD 0
QEMU_CAP = 0x004008200F0107FF
QEMU_VS = 0x00010400
QEMU_CC = 0x00460001            # EN, IOSQES 6, IOCQES 4
QEMU_CSTS = 0x00000001          # RDY


def snapshot(values: dict[int, tuple[int, int]], size: int = r.REGISTERS_SIZE) -> bytes:
    """BAR0 bytes with {offset: (value, width)} written little-endian."""
    raw = bytearray(size)
    for offset, (value, width) in values.items():
        raw[offset:offset + width] = value.to_bytes(width, "little")
    return bytes(raw)


QEMU = snapshot({r.CAP: (QEMU_CAP, 8), r.VS: (QEMU_VS, 4), r.CC: (QEMU_CC, 4),
                 r.CSTS: (QEMU_CSTS, 4), r.AQA: (0x001F001F, 4), r.ASQ: (0x12345000, 8),
                 r.ACQ: (0xABCDE000, 8)})


def test_offsets():
    assert (r.CAP, r.VS, r.INTMS, r.INTMC, r.CC, r.CSTS, r.NSSR, r.AQA) == \
        (0x00, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20, 0x24)
    assert (r.ASQ, r.ACQ, r.CMBLOC, r.CMBSZ, r.BPINFO, r.CRTO, r.PMRCAP) == \
        (0x28, 0x30, 0x38, 0x3C, 0x40, 0x68, 0xE00)
    assert r.DOORBELLS == r.REGISTERS_SIZE == 0x1000


def test_table_is_in_offset_order_and_fields_fit_without_overlap():
    offsets = [reg.offset for reg in r.REGISTERS]
    assert offsets == sorted(offsets)
    for reg in r.REGISTERS:
        assert reg.size in (4, 8) and reg.offset % 4 == 0 and reg.offset + reg.size <= r.REGISTERS_SIZE
        used = 0
        for name, f in reg.fields.items():
            bits = f.max << f.lo
            assert bits < 1 << 8 * reg.size and not used & bits, (reg.name, name)
            used |= bits


def test_doorbells():
    assert [r.doorbell(q, c, 0) for q in (0, 1) for c in (False, True)] == [0x1000, 0x1004, 0x1008, 0x100C]
    assert [r.doorbell(q, c, 2) for q in (0, 1) for c in (False, True)] == [0x1000, 0x1010, 0x1020, 0x1030]
    assert r.doorbell(5, True, 2) == 0x1000 + 11 * 16


def test_reg_get_put_round_trip_and_refusal():
    assert r.CC_IOSQES.put(6) == 0x60000 and r.CC_IOSQES.get(0xFFF6FFFF) == 6
    cc = r.CC_EN.put(1) | r.CC_IOSQES.put(6) | r.CC_IOCQES.put(4)
    assert cc == QEMU_CC
    assert (r.CC_EN.get(cc), r.CC_IOSQES.get(cc), r.CC_IOCQES.get(cc), r.CC_SHN.get(cc)) == (1, 6, 4, 0)
    assert r.AQA_ACQS.put(0xFFF) == 0x0FFF0000
    for bad in (0x1000, -1):
        with pytest.raises(ValueError):
            r.AQA_ASQS.put(bad)
    with pytest.raises(ValueError):
        r.CC_SHN.put(4)


def test_values():
    assert (r.SHN_NONE, r.SHN_NORMAL, r.SHN_ABRUPT) == (0, 1, 2)
    assert (r.SHST_NORMAL, r.SHST_OCCURRING, r.SHST_COMPLETE) == (0, 1, 2)
    assert (r.CSS_NVM, r.CSS_CSI, r.CSS_ADMIN_ONLY) == (0, 6, 7)
    assert (r.CAP_CSS_NVM, r.CAP_CSS_IOCS, r.CAP_CSS_NOIOCS) == (1, 0x40, 0x80)
    assert r.NSSR_RESET.to_bytes(4, "big") == b"NVMe"


def test_timeout_is_one_unit_more_than_cap_to():
    assert r.timeout_ms(QEMU_CAP) == 8000
    assert r.timeout_ms(0) == 500
    assert r.timeout_ms(r.CAP_TO.put(0xFF)) == 128_000


def test_decode_qemu_snapshot():
    d = r.decode_registers(QEMU)
    assert list(d) == ["cap", "vs", "intms", "intmc", "cc", "csts", "nssr", "aqa", "asq", "acq",
                       "cmbloc", "cmbsz", "bpinfo", "crto", "pmrcap"]
    assert d["cap"] == {"value": QEMU_CAP, "mqes": 0x7FF, "cqr": 1, "ams": 0, "to": 0xF, "dstrd": 0,
                        "nssrs": 0, "css": r.CAP_CSS_NVM | r.CAP_CSS_IOCS, "bps": 0, "cps": 0,
                        "mpsmin": 0, "mpsmax": 4, "pmrs": 0, "cmbs": 0, "nsss": 0, "crms": 0}
    assert d["vs"] == {"value": QEMU_VS, "ter": 0, "mnr": 4, "mjr": 1}
    assert d["cc"] == {"value": QEMU_CC, "en": 1, "css": r.CSS_NVM, "mps": 0, "ams": 0,
                       "shn": r.SHN_NONE, "iosqes": 6, "iocqes": 4, "crime": 0}
    assert d["csts"] == {"value": 1, "rdy": 1, "cfs": 0, "shst": r.SHST_NORMAL, "nssro": 0,
                         "pp": 0, "st": 0}
    assert d["aqa"] == {"value": 0x001F001F, "asqs": 31, "acqs": 31}
    assert d["asq"] == {"value": 0x12345000} and d["acq"] == {"value": 0xABCDE000}
    assert d["intms"] == d["intmc"] == d["nssr"] == {"value": 0}
    assert set(d["pmrcap"]) == {"value", "rds", "wds", "bir", "pmrtu", "pmrwbm", "pmrto", "cmss"}


def test_decode_cmb_pmr_crto_and_bpinfo_fields():
    d = r.decode_registers(snapshot({
        r.CMBLOC: (0x00002102, 4), r.CMBSZ: (0x0000111F, 4), r.BPINFO: (0x81000010, 4),
        r.CRTO: (0x003C0014, 4), r.PMRCAP: (0x01140118, 4)}))
    assert (d["cmbloc"]["bir"], d["cmbloc"]["cqda"], d["cmbloc"]["ofst"]) == (2, 1, 2)
    assert d["cmbsz"] == {"value": 0x111F, "sqs": 1, "cqs": 1, "lists": 1, "rds": 1, "wds": 1,
                          "szu": 1, "sz": 1}
    assert (d["bpinfo"]["bpsz"], d["bpinfo"]["brs"], d["bpinfo"]["abpid"]) == (0x10, 1, 1)
    assert d["crto"] == {"value": 0x003C0014, "crwmt": 20, "crimt": 60}
    assert (d["pmrcap"]["rds"], d["pmrcap"]["wds"], d["pmrcap"]["bir"], d["pmrcap"]["pmrtu"],
            d["pmrcap"]["pmrto"], d["pmrcap"]["cmss"]) == (1, 1, 0, 1, 0x14, 1)


def test_short_snapshot_refused_trailing_bytes_ignored():
    with pytest.raises(ValueError):
        r.decode_registers(QEMU[:-1])
    with pytest.raises(ValueError):
        render.render("regs", QEMU[:0x50], "json")
    assert r.decode_registers(QEMU + b"\xff" * 0x2000) == r.decode_registers(QEMU)


def test_text_view():
    lines = r.text_registers(r.decode_registers(QEMU)).splitlines()
    assert lines[0] == "cap       : 0x004008200f0107ff"
    assert "  mqes    : 2047" in lines and "  mpsmax  : 4" in lines
    assert lines[lines.index("vs        : 0x00010400") + 1:][:3] == \
        ["  ter     : 0", "  mnr     : 4", "  mjr     : 1"]
    assert "asq       : 0x0000000012345000" in lines and "nssr      : 0x00000000" in lines
    assert "cc        : 0x00460001" in lines and "  iosqes  : 6" in lines
    assert lines[-1].startswith("  cmss")
    assert len(lines) == len(r.REGISTERS) + sum(len(reg.fields) for reg in r.REGISTERS)


def test_renderer_row():
    assert render.RENDERERS["regs"].size == r.REGISTERS_SIZE
    assert json.loads(render.render("regs", QEMU, "json")) == r.decode_registers(QEMU)
    assert render.render("regs", QEMU, "txt").decode() == r.text_registers(r.decode_registers(QEMU))


def test_cli_decodes_regs(tmp_path, capsys):
    path = tmp_path / "bar0.bin"
    path.write_bytes(QEMU)
    assert cli.main(["decode", "--as", "regs", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["vs"]["mnr"] == 4
    assert cli.main(["decode", "--as", "regs", "--format", "txt", str(path)]) == 0
    assert "  iocqes  : 4\n" in capsys.readouterr().out
