"""Boot a QEMU guest with QEMU's NVMe controller, the real Linux driver and an IOMMU,
run the device tests in it (tests/linux and the backend contract suite on
/dev/nvme0, then tests/vfio, which hands the controller to vfio-pci and back, then
tests/tcp against nvmet-tcp in the same guest),
and report their results here. One boot for all of them."""

import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from .guest import Guest, NvmeDevice

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]   # one boot runs the whole device suite

SUITE = "tests/linux tests/backend/test_contract.py tests/vfio tests/tcp"


def missing() -> str | None:
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed (make setup installs it)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static is not installed (make setup installs it)"
    return None


@pytest.fixture(scope="module")
def guest_results(tmp_path_factory):
    reason = missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    script = (f"NVMEFS_TEST_DEVICES=/dev/nvme0 python -m pytest -p no:cacheprovider -q "
              f"-o addopts='' --junitxml=$VM_RESULTS/junit.xml {SUITE}")
    with Guest(nvme=[NvmeDevice(serial="nvmefs0001", size="1G", lba=512)], iommu=True,
               workdir=tmp_path_factory.mktemp("vm")) as g:
        result = g.run(script, timeout=1800)
        junit = result.dir / "junit.xml"
        assert junit.exists(), f"no results from the guest:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result, ET.parse(junit).getroot()


def test_device_suite_passes_in_the_guest(guest_results):
    result, root = guest_results
    cases = root.iter("testcase")
    failed, skipped, passed = [], [], []
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            node = case.find("failure") if case.find("failure") is not None else case.find("error")
            failed.append(f"{name}\n{(node.text or node.get('message') or '')[-2000:]}")
        elif case.find("skipped") is not None:
            skipped.append(name)
        else:
            passed.append(name)
    assert not failed, "in the guest:\n" + "\n\n".join(failed)
    assert not skipped, f"skipped in the guest: {skipped}"
    assert len(passed) >= 20, result.stdout[-3000:]
