"""Container tests: build the sidecar image (nvmefs/deploy/Containerfile) with podman on a
Debian root file system made by mmdebstrap, then run it. Slow (a Debian bootstrap and an
image build), root only, and they fetch from Debian's mirror and PyPI, so they run only
when asked: NVMEFS_CONTAINER_TESTS=1, as `make test-containers` sets it."""

from __future__ import annotations

import os

import pytest

ENV = "NVMEFS_CONTAINER_TESTS"

# step -> seconds, filled by the tests, shown at the end of the run
DURATIONS: dict[str, float] = {}


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"containers: builds and runs the container image (only with {ENV}=1)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/containers/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.containers)
            if not enabled():
                item.add_marker(pytest.mark.skip(
                    reason=f"container tests run only with {ENV}=1 (make test-containers)"))


def pytest_terminal_summary(terminalreporter):
    if DURATIONS:
        terminalreporter.section("container test durations")
        for step, seconds in DURATIONS.items():
            terminalreporter.write_line(f"{step:<40} {seconds:7.1f} s")
