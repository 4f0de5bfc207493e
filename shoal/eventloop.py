"""The event loop the servers run on: uvloop (libuv), not asyncio's pure-Python selector loop.

Each request through aiohttp costs the loop a few wake-ups, reads and writes, which libuv does in C.
The registry, back to back on 2 cores with 16 clients: PUT 6,700 -> 7,500/s (with the SQLite store's
inline commit), GET of a missing key 13,200 -> 14,200/s. uvloop is a drop-in `asyncio` loop: threads'
`call_soon_threadsafe`, subprocesses, signals, UDP and TLS behave as asyncio documents them.

Not the manager: measured there at 1,000 nodes it changed nothing (the manager is not bound by its
loop), and its hijack relay keeps a TLS connection half-open by patching asyncio's own TLS protocol
(`shoal/api/docker/hijack.py`), which uvloop's cannot be.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop loop."""
    return uvloop.run(main)
