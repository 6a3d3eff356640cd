"""The compiled extension (ffi/build_nvme.py), imported only by the linux and vfio backends."""

try:
    from .._nvme import ffi, lib
except ImportError as e:       # pragma: no cover - depends on how nvmefs was installed
    from .base import Unsupported
    raise Unsupported(f"the linux and vfio backends need the compiled extension nvmefs._nvme "
                      f"(build needs liburing-dev and a C compiler; reinstall nvmefs): {e}") from e

__all__ = ["ffi", "lib"]
