"""The vfio backend's URI and the controller it names (see the package docstring)."""

from __future__ import annotations

import re

from ..sim.config import parse_size
from .driver import VfioController
from .transport import Transport

BDF = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
OPTIONS = {"queues": (1, 64, 4), "depth": (2, 65536, 1024), "dma": (1 << 20, 1 << 34, 64 << 20),
           "poll": (0, 1, 0), "vectors": (0, 2048, None)}


def parse_uri(uri: str) -> tuple[str, dict[str, int]]:
    """(device: a BDF or a sim URI, options) of a vfio URI; ValueError says what is wrong."""
    device, _, query = uri.removeprefix("vfio:").partition("?")
    if not (BDF.fullmatch(device) or device == "sim" or device.startswith("sim:")):
        raise ValueError(f"{uri!r}: expected vfio:DOMAIN:BUS:DEV.FN (e.g. vfio:0000:00:03.0) "
                         "or vfio:sim[:options]")
    opts = {k: v[2] for k, v in OPTIONS.items() if v[2] is not None}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in OPTIONS or (key == "vectors" and not device.startswith("sim")):
            raise ValueError(f"{uri!r}: unknown option {key!r}; known: queues, depth, dma, poll"
                             + (", vectors" if device.startswith("sim") else ""))
        lo, hi, _ = OPTIONS[key]
        try:
            n = parse_size(value) if key == "dma" else int(value, 0)
        except ValueError:
            raise ValueError(f"{uri!r}: {key}={value!r} is not a number") from None
        if not lo <= n <= hi:
            raise ValueError(f"{uri!r}: {key} must be {lo}..{hi}")
        opts[key] = n
    return device, opts


def transport_for(device: str, opts: dict[str, int], index: int) -> Transport:
    if BDF.fullmatch(device):
        from .pci import VfioTransport
        return VfioTransport(device.lower())
    from .model import VECTORS, ModelTransport
    return ModelTransport(device, index, opts.get("vectors", VECTORS))


class VfioBackend(VfioController):
    """The controller a vfio URI names."""

    def __init__(self, uri: str, index: int = 0):
        device, opts = parse_uri(uri)
        super().__init__(uri, transport_for(device, opts, index), queues=opts["queues"],
                         depth=opts["depth"], dma=opts["dma"], poll=bool(opts["poll"]))
        self.model = getattr(self.transport, "sim", None)      # vfio:sim: the sim behind
        if self.model is not None:
            self.cdq_poll = None            # the model's events always come

    @property
    def faults(self):
        """The model's fault injection (the sim's), for `faults`; None on a real device."""
        return getattr(self.model, "faults", None)

    def set_temperature(self, kelvin: int) -> None:
        """The model's composite temperature (the sim's), for `faults`."""
        self.model.set_temperature(kelvin)

    def cdq_counts(self, cdqid: int) -> dict[str, int]:
        return self.model.cdq_counts(cdqid) if self.model is not None else {}


