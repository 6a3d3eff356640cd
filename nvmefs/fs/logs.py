"""log/: one file set per supported log page, and by-id/0xNN for any LID.

Pages are read with RAE set, so reading a log never clears an asynchronous
event the daemon or another host is waiting for. Large pages (telemetry,
persistent event) are read at the requested offset instead of whole.
"""

from __future__ import annotations

import errno

import trio
from pyfuse3 import FUSEError

from ..backends.base import Controller
from ..spec import logs as L
from ..spec import status as S
from ..spec import render
from ..spec.commands import CSI_NVM, LID_EFFECTS, LID_SUPPORTED_LOGS
from .errors import check
from .nodes import Fetch, File, Handle, Node, SnapshotFile, TableDir, wants_write
from .views import decoded_views, views

UNKNOWN_PAGE_SIZES = (4096, 512)     # by-id of a LID nvmefs has no size for: try these


async def supported_lids(ctrl: Controller) -> list[int]:
    """Supported Log Pages (LID 00h) where the controller has it, else what
    Identify Controller's LPA, OACS, OAES, CMIC and CTRATT bits promise."""
    idc = ctrl.id_ctrl
    if L.LOG_PAGES[LID_SUPPORTED_LOGS].supported(idc):
        cpl = await ctrl.get_log(LID_SUPPORTED_LOGS, 1024)
        if cpl.ok:
            return [e["lid"] for e in L.decode_supported_logs(cpl.data, {})["supported_logs"]]
    return [lid for lid, page in L.LOG_PAGES.items() if page.supported(idc)]


def page_fetch(ctrl: Controller, lid: int, size: int | None, lsp: int = 0):
    async def fetch() -> bytes:
        if size is not None:
            return check(await ctrl.get_log(lid, size, lsp=lsp), unsupported_is_eopnotsupp=True)
        for n in UNKNOWN_PAGE_SIZES:
            cpl = await ctrl.get_log(lid, n, lsp=lsp)
            if cpl.ok or S.code(cpl.status) != S.code(S.INVALID_FIELD):
                break
        return check(cpl, unsupported_is_eopnotsupp=True)
    return fetch


class Captures:
    """The captures of a controller's large logs (telemetry, persistent event): one
    at a time, and a read only from the capture its open made. An open that
    creates a new capture ends the older one: its opens then read ESTALE."""

    def __init__(self):
        self.lock = trio.Lock()
        self.current: dict[int, int] = {}   # LID -> number of its current capture

    async def capture(self, lid: int, fetch: Fetch) -> tuple[int, bytes]:
        async with self.lock:
            data = await fetch()
            number = self.current[lid] = self.current.get(lid, 0) + 1
            return number, data

    async def read(self, lid: int, number: int, fetch: Fetch) -> bytes:
        async with self.lock:
            if self.current.get(lid) != number:
                raise FUSEError(errno.ESTALE)
            return await fetch()


class LargeLogHandle(Handle):
    """Reads go to the controller at their offset (LPO), dword aligned."""

    def __init__(self, file: "LargeLogFile", number: int, header: bytes, size: int):
        self.file, self.number, self.header, self.total = file, number, header, size

    async def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.total)
        if offset >= end:
            return b""
        if end <= len(self.header):
            return self.header[offset:end]
        start, stop = offset & ~3, (end + 3) & ~3
        ctrl, lid = self.file.ctrl, self.file.page.lid

        async def fetch() -> bytes:
            return check(await ctrl.get_log(lid, stop - start, offset=start))
        data = await self.file.captures.read(lid, self.number, fetch)
        return data[offset - start:end - start]


class LargeLogFile(File):
    attr_timeout = 0.0      # a new capture may change its size

    def __init__(self, name: str, ctrl: Controller, page: L.LogPage, captures: Captures):
        super().__init__(name)
        self.ctrl, self.page, self.captures = ctrl, page, captures
        self.last_size = 0

    async def size(self) -> int:
        return self.last_size       # the last capture's: sizing sends no command

    async def open(self, flags: int, ctx) -> Handle:
        if wants_write(flags):
            raise FUSEError(errno.EACCES)
        page, idc = self.page, self.ctrl.id_ctrl

        async def fetch() -> bytes:
            return check(await self.ctrl.get_log(page.lid, L.TELEMETRY_BLOCK, lsp=page.open_lsp),
                         unsupported_is_eopnotsupp=True)
        number, header = await self.captures.capture(page.lid, fetch)
        self.last_size = max(len(header), page.size_from_header(header, idc))
        return LargeLogHandle(self, number, header, self.last_size)


async def csi_pages(ctrl: Controller, lid: int, size: int) -> dict[int, bytes]:
    """An I/O Command Set specific page (Get Log Page with CSI in CDW14): CSI 0's and
    that of every other command set the namespaces use, by CSI. A failure of CSI 0's
    is the error; a command set whose page the controller refuses is left out."""
    pages = {CSI_NVM: check(await ctrl.get_log(lid, size), unsupported_is_eopnotsupp=True)}
    for csi in ctrl.command_sets():
        if csi != CSI_NVM:
            cpl = await ctrl.get_log(lid, size, csi=csi)
            if cpl.ok:
                pages[csi] = cpl.data
    return pages


async def effects_pages(ctrl: Controller) -> dict[int, bytes]:
    """The Commands Supported and Effects log of each command set in use, by CSI."""
    return await csi_pages(ctrl, LID_EFFECTS, L.EFFECTS_SIZE)


def per_csi_nodes(ctrl: Controller, page: L.LogPage, name: str) -> list[Node]:
    """The raw view of CSI 0's page; the JSON and text of the pages of every command
    set in use, one after the other (`nvme effects-log -o json` without --csi)."""
    size = page.size(ctrl.id_ctrl)

    async def decoded() -> list:
        pages = await csi_pages(ctrl, page.lid, size)
        return [item for csi in sorted(pages)
                for item in render.decode(page.kind, pages[csi], {"name": ctrl.name, "csi": csi})]
    return [SnapshotFile(name, page_fetch(ctrl, page.lid, size), size),
            *decoded_views(name, page.kind, decoded)]


def page_nodes(ctrl: Controller, page: L.LogPage, name: str, captures: Captures) -> list[Node]:
    ctx = {"name": ctrl.name}
    if page.per_csi:
        return per_csi_nodes(ctrl, page, name)
    if page.size_from_header:
        header = page_fetch(ctrl, page.lid, L.TELEMETRY_BLOCK)
        return views(name, page.kind, header, ctx,
                     raw=lambda n: LargeLogFile(n, ctrl, page, captures))
    size = page.size(ctrl.id_ctrl)
    if page.length_from:
        head = page_fetch(ctrl, page.lid, size)

        async def whole() -> bytes:
            first = await head()
            length = page.length_from(first)
            return first if length <= len(first) else await page_fetch(ctrl, page.lid, length)()
        return views(name, page.kind, whole, ctx)
    return views(name, page.kind, page_fetch(ctrl, page.lid, size), ctx, raw_size=size)


def log_dir(ctrl: Controller) -> TableDir:
    generation, lids = -1, []
    captures = Captures()

    async def supported() -> list[int]:
        """Supported LIDs, asked once per Identify generation."""
        nonlocal generation, lids
        if generation != ctrl.generation:
            lids, generation = await supported_lids(ctrl), ctrl.generation
        return lids

    def named(lid: int) -> list[Node]:
        page = L.LOG_PAGES.get(lid)
        return page_nodes(ctrl, page, page.name, captures) if page else []

    def by_id(lid: int, name: str) -> Node:
        page = L.LOG_PAGES.get(lid)
        if page is not None:
            return page_nodes(ctrl, page, name, captures)[0]
        return views(name, None, page_fetch(ctrl, lid, None))[0]

    return TableDir("log", supported, named, by_id)
