"""Tests against a real controller through the Linux NVMe driver.

They write to the device, so they run only in the throwaway QEMU guest of
tests/vm (which sets VM_GUEST=1), never on a machine's own disks.
"""

import os

import pytest

DEVICE = "/dev/nvme0"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    if os.environ.get("VM_GUEST") == "1" and os.path.exists(DEVICE):
        return
    skip = pytest.mark.skip(reason="needs the QEMU guest of tests/vm (VM_GUEST=1 and /dev/nvme0)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)
