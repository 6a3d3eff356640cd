"""nvmefs: NVMe controllers as a file tree (FUSE)."""

__version__ = "0.1.0"
