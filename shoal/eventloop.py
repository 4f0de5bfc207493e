"""The event loop the servers run on: uvloop (libuv), not asyncio's pure-Python selector loop.

Each request through aiohttp costs the loop a few wake-ups, reads and writes; asyncio's own loop spends
more on those than the registry spends on the request itself. Measured with benchmarks/registry_kv.py
on 2 cores: GET 11,400/s -> 14,200/s, PUT 6,000/s -> 7,500/s (with the SQLite store's inline commit),
the same code on the same machine. uvloop is a drop-in `asyncio` loop: threads' `call_soon_threadsafe`,
subprocesses, signals, UDP and TLS behave as asyncio documents them.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop loop."""
    return uvloop.run(main)
