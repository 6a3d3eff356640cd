"""The command line's own checks: sizes, policies, and what `list` says."""

import sys

import pytest

from nvmefs import cli


def test_max_buffer_sizes_and_others_policies():
    args = cli.parser().parse_args(["mount", "m", "sim", "--max-buffer", "64M", "--others", "off"])
    assert (args.max_buffer, args.others) == (64 << 20, "off")
    for bad in (["--max-buffer", "12Q"], ["--max-buffer", "4K"], ["--others", "all"]):
        with pytest.raises(SystemExit):
            cli.parser().parse_args(["mount", "m", "sim", *bad])


def test_list_says_why_the_linux_backend_is_unavailable(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvmefs._nvme", None)     # as if it was never built
    monkeypatch.delitem(sys.modules, "nvmefs.backends.ffi", raising=False)
    cli.main(["list"])
    assert "need the compiled extension nvmefs._nvme" in capsys.readouterr().err
