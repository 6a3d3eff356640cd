"""The vfio driver on QEMU's NVMe controller, handed between the kernel's nvme
driver and vfio-pci within one boot. Only in the QEMU guest of tests/vm with an
IOMMU (VM_GUEST=1 and /dev/vfio/vfio): it unbinds the machine's NVMe driver."""

import os
import time

import pytest

from nvmefs.backends.vfio import bind


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    if os.environ.get("VM_GUEST") == "1" and os.path.exists("/dev/vfio/vfio"):
        return
    skip = pytest.mark.skip(reason="needs the QEMU guest of tests/vm with an IOMMU "
                                   "(VM_GUEST=1 and /dev/vfio/vfio)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bdf() -> str:
    """The PCI function of QEMU's NVMe controller (the first one)."""
    functions = bind.pci_nvme_functions()
    assert functions, "no PCI NVMe function in the guest"
    return functions[0].address


def kernel(bdf: str, timeout: float = 60) -> str:
    """Give the function to the nvme driver; its /dev/nvmeN once live with namespaces
    (the driver probes asynchronously)."""
    bind.unbind(bdf)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = bind.kernel_controllers(bdf)
        if names and os.path.exists(f"/dev/{names[0]}n1"):
            with open(f"/sys/class/nvme/{names[0]}/state") as f:
                if f.read().strip() == "live":
                    return f"/dev/{names[0]}"
        time.sleep(0.2)
    raise AssertionError(f"{bdf}: the nvme driver did not bring the controller up")


def vfio(bdf: str) -> str:
    """Give the function to vfio-pci; its vfio URI."""
    bind.bind(bdf)
    return f"vfio:{bdf}"
