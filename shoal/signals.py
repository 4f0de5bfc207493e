"""How every long-running shoal process (manager, registry, agent) learns it should stop, and the servers'
wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so the process can end its work cleanly (leave the registry, close
    its listeners) instead of dying mid-write."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_until_signal(
    close: Callable[[], Awaitable[None]], ready: Callable[[], None] | None = None
) -> None:
    """The tail of every server's life (the manager's Docker API, the registry): the signal handlers set,
    then `ready` told (so a SIGTERM sent the moment the caller hears "ready" is not lost), then wait for
    SIGTERM or SIGINT, and `close` whatever ends the wait (a cancellation too)."""
    stop = stop_on_signals()
    if ready:
        ready()
    try:
        await stop.wait()
    finally:
        await close()
