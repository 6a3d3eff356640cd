"""The three views of a structure: `name` (raw bytes), `name.json`, `name.txt`."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from ..spec import render
from .nodes import Fetch, Node, SnapshotFile


def rendered(kind: str, fetch: Fetch, fmt: str, ctx: Mapping[str, Any]) -> Fetch:
    """The view of each snapshot `fetch` gives, rendered again only when its bytes
    changed (identify data between resets, a log page that did not move)."""
    last: tuple[bytes, bytes] | None = None

    async def fetch_view() -> bytes:
        nonlocal last
        raw = await fetch()
        if last is None or last[0] != raw:
            last = raw, render.render(kind, raw, fmt, ctx)
        return last[1]
    return fetch_view


def views(name: str, kind: str | None, fetch: Fetch, ctx: Mapping[str, Any] | None = None,
          raw_size: int | None = None, raw: Callable[[str], Node] | None = None,
          waits: bool = True) -> list[Node]:
    """Raw, JSON and text files for one structure; raw only if `kind` has no decoder.
    `raw` makes a custom raw node (large logs read at an offset); `waits` is
    SnapshotFile's."""
    nodes = [raw(name) if raw else SnapshotFile(name, fetch, raw_size, waits)]
    if kind is not None:
        nodes += [SnapshotFile(f"{name}.{fmt}", rendered(kind, fetch, fmt, ctx or {}), waits=waits)
                  for fmt in ("json", "txt")]
    return nodes


def decoded_views(name: str, kind: str, decoded: Callable[[], Awaitable[Any]]) -> list[Node]:
    """`name.json` and `name.txt` of a structure that `decoded` gives already decoded
    (one made of several commands' data)."""
    def view(fmt: str) -> Fetch:
        async def fetch() -> bytes:
            return render.show(kind, await decoded(), fmt)
        return fetch
    return [SnapshotFile(f"{name}.{fmt}", view(fmt)) for fmt in ("json", "txt")]


def text_lines(pairs: Mapping[str, Any]) -> bytes:
    """`key: value` lines (the `info` files)."""
    return "".join(f"{k}: {v}\n" for k, v in pairs.items()).encode()
