"""The contract suite runs against every backend named in NVMEFS_TEST_DEVICES
(comma separated URIs; default: the simulator, and the vfio driver on its register
model). In the QEMU guest it is run with the Linux backend on QEMU's NVMe controller."""

import os


def pytest_generate_tests(metafunc):
    if "uri" in metafunc.fixturenames:
        uris = os.environ.get("NVMEFS_TEST_DEVICES", "sim:size=64M,vfio:sim:size=64M").split(",")
        metafunc.parametrize("uri", uris)
