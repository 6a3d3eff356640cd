"""Boot QEMU guests with QEMU's NVMe controllers, the real Linux driver and an IOMMU,
run the device tests in them, and report their results here. One boot per
configuration, each running a whole suite:
- QEMU's default controller: tests/linux and the backend contract suite on
  /dev/nvme0, then tests/vfio (which hands the controller to vfio-pci and back),
  then tests/tcp against nvmet-tcp in the same guest;
- the shapes of tests/vm/shapes.py (a multipath subsystem, NSID gaps and mdts=2,
  metadata, a zoned namespace): tests/shapes, with native multipath, and its
  naming checks again with nvme_core.multipath=N."""

import os
import shutil
import time
import xml.etree.ElementTree as ET

import pytest

from .guest import Guest, NvmeDevice
from .shapes import SHAPES

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]   # one boot runs a whole suite

DEFAULT_SUITE = "tests/linux tests/backend/test_contract.py tests/vfio tests/tcp"
NAMING = "test_every_controller or test_nvmefs_list or test_data_written"


def missing() -> str | None:
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed (make setup installs it)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static is not installed (make setup installs it)"
    return None


def run_suite(tmp_path_factory, name: str, suite: str, nvme, **guest):
    reason = missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    script = (f"NVMEFS_TEST_DEVICES=/dev/nvme0 python -m pytest -p no:cacheprovider -q -s "
              f"-o addopts='' --junitxml=$VM_RESULTS/junit.xml {suite}")
    start = time.monotonic()
    with Guest(nvme=nvme, workdir=tmp_path_factory.mktemp(name), **guest) as g:
        result = g.run(script, timeout=1800)
    print(f"guest {name}: {time.monotonic() - start:.1f} s")
    junit = result.dir / "junit.xml"
    assert junit.exists(), f"no results from the guest:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result, ET.parse(junit).getroot()


@pytest.fixture(scope="module")
def default_results(tmp_path_factory):
    return run_suite(tmp_path_factory, "vm", DEFAULT_SUITE,
                     [NvmeDevice(serial="nvmefs0001", size="1G", lba=512)], iommu=True)


@pytest.fixture(scope="module")
def shapes_results(tmp_path_factory):
    return run_suite(tmp_path_factory, "shapes", "tests/shapes", SHAPES)


@pytest.fixture(scope="module")
def no_multipath_results(tmp_path_factory):
    return run_suite(tmp_path_factory, "no-multipath", f"tests/shapes -k '{NAMING}'", SHAPES,
                     kernel_args="nvme_core.multipath=N")


def check(results, least: int) -> None:
    result, root = results
    failed, skipped, passed = [], [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        node = case.find("failure") if case.find("failure") is not None else case.find("error")
        if node is not None:
            failed.append(f"{name}\n{(node.text or node.get('message') or '')[-2000:]}")
        elif case.find("skipped") is not None:
            skipped.append(name)
        else:
            passed.append(name)
    assert not failed, "in the guest:\n" + "\n\n".join(failed)
    assert not skipped, f"skipped in the guest: {skipped}"
    assert len(passed) >= least, result.stdout[-3000:]


def test_device_suite_passes_in_the_guest(default_results):
    check(default_results, 20)


def test_shapes_suite_passes_in_the_guest(shapes_results):
    check(shapes_results, 15)


def test_shapes_are_found_without_native_multipath(no_multipath_results):
    check(no_multipath_results, 6)
