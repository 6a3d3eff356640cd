"""Decoding QEMU's raw structures gives nvme-cli 2.3's JSON, key for key and value for value."""

import json

import pytest

from nvmefs.spec import render

from ..conftest import VECTORS

CASES = [("id-ctrl", "id-ctrl"), ("id-ns", "id-ns"), ("smart", "smart-log"),
         ("error", "error-log"), ("fw-slot", "fw-log")]


def contains(got, expected, path="$"):
    """Every key and value of nvme-cli's JSON is in ours (ours may have more keys)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), path
        for key, value in expected.items():
            assert key in got, f"{path}.{key} missing"
            contains(got[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) >= len(expected), path
        for i, value in enumerate(expected):
            contains(got[i], value, f"{path}[{i}]")
    else:
        assert got == expected and type(got) is type(expected), f"{path}: {got!r} != {expected!r}"


@pytest.mark.parametrize("kind,name", CASES)
def test_decoded_json_matches_nvme_cli(kind, name):
    raw = (VECTORS / f"{name}.bin").read_bytes()
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    got = json.loads(render.render(kind, raw, "json", {"name": "nvme0"}))
    contains(got, expected)
    if isinstance(expected, dict):   # nvme-cli's keys come in nvme-cli's order
        assert [k for k in got if k in expected] == list(expected)


@pytest.mark.parametrize("kind,name", CASES)
def test_trailing_bytes_do_not_change_the_result(kind, name):
    raw = (VECTORS / f"{name}.bin").read_bytes()
    if kind == "error":      # the error log is a sequence of 64-byte entries
        raw_more = raw + bytes(5)
    else:
        raw_more = raw + b"\xa5" * 100
    assert render.decode(kind, raw, {}) == render.decode(kind, raw_more, {})


@pytest.mark.parametrize("kind,name", CASES)
def test_truncated_input_is_a_clear_error(kind, name):
    raw = (VECTORS / f"{name}.bin").read_bytes()
    with pytest.raises(ValueError, match="needs at least"):
        render.decode(kind, raw[:render.RENDERERS[kind].size - 1], {})


def test_text_views_match_nvme_cli_values():
    def key_values(text: str) -> dict[str, str]:
        pairs = (line.partition(" : ") for line in text.splitlines())
        return {k.strip(): v.strip() for k, sep, v in pairs if sep and not k.startswith(" ")}

    txt = render.render("id-ctrl", (VECTORS / "id-ctrl.bin").read_bytes(), "txt").decode()
    ours, cli = key_values(txt), key_values((VECTORS / "id-ctrl.txt").read_text())
    for key in ("vid", "ssvid", "ieee", "ver", "oacs", "mdts", "sqes", "subnqn", "fguid", "nn",
                "cntlid", "oncs", "vwc", "wctemp", "tnvmcap"):
        assert ours[key] == cli[key], key
    assert "mp:25.00W operational enlat:16 exlat:4" in txt
    smart = render.render("smart", (VECTORS / "smart-log.bin").read_bytes(), "txt").decode()
    assert "50°C (323 Kelvin)" in smart and "1 (512.00 kB)" in smart
    ns = render.render("id-ns", (VECTORS / "id-ns.bin").read_bytes(), "txt").decode()
    assert "ms:0   lbads:9  rp:0x0 (in use)" in ns
    fw = render.render("fw-slot", (VECTORS / "fw-log.bin").read_bytes(), "txt").decode()
    assert "0x2020202020302e31 (1.0.....)" in fw
