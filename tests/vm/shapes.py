"""The controller shapes the Linux backend is checked on besides QEMU's default (one
boot, tests/vm/test_guest.py; the tests are tests/shapes):
- nvme0, nvme1: one NVM subsystem (two ports, CMIC bit 1): namespace 1 shared by both,
  2 private to nvme1, 3 shared but detached at power on (to attach while mounted);
- nvme2: mdts=2 (16 KiB), NSIDs 1, 2, 5: 512-byte, 4 KiB, and 512+8 extended LBAs;
- nvme3: a zoned namespace (8 MiB zones) and one with separate 8-byte metadata.
"""

from .guest import Namespace, NvmeDevice

MULTIPATH_NQN = "nqn.2019-08.org.qemu:nvmefs-mp"

SHAPES = [
    NvmeDevice(serial="nvmefs-mp", subsys="nvmefs-mp", namespaces=[
        Namespace(1), Namespace(3, options="detached=true")]),
    NvmeDevice(serial="nvmefs-mp", subsys="nvmefs-mp", namespaces=[
        Namespace(2, options="shared=false")]),
    NvmeDevice(serial="nvmefs-gaps", options="mdts=2", namespaces=[
        Namespace(1), Namespace(2, lba=4096), Namespace(5, options="ms=8,mset=1")]),
    NvmeDevice(serial="nvmefs-zns", namespaces=[
        Namespace(1, lba=4096, options="zoned=true,zoned.zone_size=8M"),
        Namespace(2, options="ms=8,mset=0")]),
]
