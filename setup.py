# The compiled part (nvmefs._nvme) is built by cffi; everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["ffi/build_nvme.py:ffibuilder"])
