"""spec/ is sans-IO: standard library only, and none of the modules that do I/O."""

import ast
import sys
from pathlib import Path

import nvmefs.spec

SPEC = Path(nvmefs.spec.__file__).parent
IO_MODULES = {"os", "io", "socket", "select", "selectors", "subprocess", "threading", "asyncio",
              "mmap", "fcntl", "ctypes", "signal", "shutil", "pathlib", "tempfile", "time"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_spec_imports_only_pure_standard_library():
    files = sorted(SPEC.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in imported_modules(path):
            assert name in sys.stdlib_module_names or name == "__future__", f"{path.name} imports {name}"
            assert name not in IO_MODULES, f"{path.name} imports {name}, which does I/O"


def test_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom trio import sleep\nfrom . import sibling\n")
    assert imported_modules(bad) == {"os", "trio"}
