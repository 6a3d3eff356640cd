"""The man pages render cleanly and name what the code has."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nvmefs import cli
from nvmefs.spec import features, logs, render

MAN = Path(__file__).parents[2] / "man"


def roff_text(name: str) -> str:
    return (MAN / name).read_text().replace("\\-", "-")


@pytest.mark.skipif(not shutil.which("man"), reason="man-db is not installed")
@pytest.mark.parametrize("page", ["nvmefs.1", "nvmefs.5"])
def test_man_pages_render_without_warnings(page):
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(MAN / page)],
                       capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80"})
    assert r.returncode == 0 and r.stderr == "" and "NAME" in r.stdout


def test_nvmefs_1_documents_every_option_and_decode_kind():
    text = roff_text("nvmefs.1")
    for action in cli.parser()._subparsers._group_actions[0].choices.values():
        for opt in action._actions:
            for flag in opt.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in text, flag
    for kind in render.RENDERERS:
        assert kind in text, kind


def test_nvmefs_5_documents_every_log_page_and_feature():
    text = roff_text("nvmefs.5")
    for page in logs.LOG_PAGES.values():
        assert page.name in text and f"{page.lid:02X}h" in text, page.name
    for feat in features.FEATURES.values():
        assert feat.name in text and f"{feat.fid:02X}h" in text, feat.name
        for field in feat.fields:
            assert field.name in text, (feat.name, field.name)
