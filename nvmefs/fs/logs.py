"""log/: one file set per supported log page, and by-id/0xNN for any LID.

Pages are read with RAE set, so reading a log never clears an asynchronous
event the daemon or another host is waiting for. Large pages (telemetry,
persistent event) are read at the requested offset instead of whole.
"""

from __future__ import annotations

import errno

from pyfuse3 import FUSEError

from ..backends.base import Controller
from ..spec import logs as L
from ..spec import status as S
from .errors import check
from .nodes import File, Handle, Node, TableDir, wants_write
from .views import views

UNKNOWN_PAGE_SIZES = (4096, 512)     # by-id of a LID nvmefs has no size for: try these


async def supported_lids(ctrl: Controller) -> list[int]:
    """Supported Log Pages (LID 00h) where the controller has it, else what
    Identify Controller's LPA, OACS, OAES, CMIC and CTRATT bits promise."""
    idc = ctrl.id_ctrl
    if L.LOG_PAGES[0x00].supported(idc):
        cpl = await ctrl.get_log(0x00, 1024)
        if cpl.ok:
            return [e["lid"] for e in L.decode_supported_logs(cpl.data, {})["supported_logs"]]
    return [lid for lid, page in L.LOG_PAGES.items() if page.supported(idc)]


def page_fetch(ctrl: Controller, lid: int, size: int | None, lsp: int = 0):
    async def fetch() -> bytes:
        if size is not None:
            return check(await ctrl.get_log(lid, size, lsp=lsp), unsupported_is_eopnotsupp=True)
        for n in UNKNOWN_PAGE_SIZES:
            cpl = await ctrl.get_log(lid, n, lsp=lsp)
            if cpl.ok or cpl.status & 0x7FF != S.INVALID_FIELD & 0x7FF:
                break
        return check(cpl, unsupported_is_eopnotsupp=True)
    return fetch


class LargeLogHandle(Handle):
    """Reads go to the controller at their offset (LPO), dword aligned."""

    def __init__(self, ctrl: Controller, lid: int, header: bytes, size: int):
        self.ctrl, self.lid, self.header, self.total = ctrl, lid, header, size

    async def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.total)
        if offset >= end:
            return b""
        if end <= len(self.header):
            return self.header[offset:end]
        start, stop = offset & ~3, (end + 3) & ~3
        data = check(await self.ctrl.get_log(self.lid, stop - start, offset=start))
        return data[offset - start:end - start]


class LargeLogFile(File):
    attr_timeout = 0.0      # a new capture may change its size

    def __init__(self, name: str, ctrl: Controller, page: L.LogPage):
        super().__init__(name)
        self.ctrl, self.page = ctrl, page

    async def _header(self, lsp: int) -> tuple[bytes, int]:
        header = check(await self.ctrl.get_log(self.page.lid, L.TELEMETRY_BLOCK, lsp=lsp),
                       unsupported_is_eopnotsupp=True)
        return header, max(len(header), self.page.size_from_header(header, self.ctrl.id_ctrl))

    async def size(self) -> int:
        return (await self._header(0))[1]     # LSP 0: sizing never creates a new capture

    async def open(self, flags: int, ctx) -> Handle:
        if wants_write(flags):
            raise FUSEError(errno.EACCES)
        header, size = await self._header(self.page.open_lsp)
        return LargeLogHandle(self.ctrl, self.page.lid, header, size)


def page_nodes(ctrl: Controller, page: L.LogPage, name: str) -> list[Node]:
    ctx = {"name": ctrl.name}
    if page.size_from_header:
        header = page_fetch(ctrl, page.lid, L.TELEMETRY_BLOCK)
        return views(name, page.kind, header, ctx,
                     raw=lambda n: LargeLogFile(n, ctrl, page))
    size = page.size(ctrl.id_ctrl)
    return views(name, page.kind, page_fetch(ctrl, page.lid, size), ctx, raw_size=size)


def log_dir(ctrl: Controller) -> TableDir:
    generation, lids = -1, []

    async def supported() -> list[int]:
        """Supported LIDs, asked once per Identify generation."""
        nonlocal generation, lids
        if generation != ctrl.generation:
            lids, generation = await supported_lids(ctrl), ctrl.generation
        return lids

    def named(lid: int) -> list[Node]:
        page = L.LOG_PAGES.get(lid)
        return page_nodes(ctrl, page, page.name) if page else []

    def by_id(lid: int, name: str) -> Node:
        page = L.LOG_PAGES.get(lid)
        if page is not None:
            return page_nodes(ctrl, page, name)[0]
        return views(name, None, page_fetch(ctrl, lid, None))[0]

    return TableDir("log", supported, named, by_id)
