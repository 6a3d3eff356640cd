"""The contract suite runs against every backend named in NVMEFS_TEST_DEVICES
(comma separated URIs; default: the simulator, the vfio driver on its register
model, and the tcp host against an in-process NVMe/TCP target, `tcp:sim`). In the
QEMU guest it is run with the Linux backend on QEMU's NVMe controller."""

import os

import pytest

from .tcp_target import SimTarget

DEFAULT = "sim:size=64M,vfio:sim:size=64M,tcp:sim"


def pytest_generate_tests(metafunc):
    if "uri" in metafunc.fixturenames:
        uris = os.environ.get("NVMEFS_TEST_DEVICES", DEFAULT).split(",")
        metafunc.parametrize("uri", uris, indirect=True)


@pytest.fixture(scope="session")
def sim_target():
    """An NVMe/TCP target serving sim controllers, in a thread, for the session."""
    target = SimTarget().start()
    yield target
    target.stop()


@pytest.fixture
def uri(request):
    if request.param == "tcp:sim":
        return request.getfixturevalue("sim_target").uri
    return request.param
