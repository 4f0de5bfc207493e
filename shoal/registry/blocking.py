"""Consul's blocking queries: `?index=N` answers at once when the query's own index is past N, and
otherwise waits until what the query reads changes and its index moves past N, or `?wait` passes.

The loop is Consul's (agent/blockingquery/blockingquery.go): run the query; if its index is newer than
the client's, answer (and, unlike Consul, also when the client's index is ahead of the whole store: see
`query`); else wait on what it read (here: the store keys and prefixes the read names in
`Read.keys` / `Read.prefixes`), run it again, and so on; when the wait ends, answer the last result,
same index and all. A reader woken by a change to a key it watches whose index did not move (a spurious
wake-up) goes back to waiting instead of answering the same body with a new index.

Watchers of one query woken by one change share one read (`Flights`): ten clients blocked on
/v1/health/service/web cost one read of web when it changes, not ten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """One run of a query: its answer, the X-Consul-Index for it (never 0), the store index the read
    was taken at, and what it read (a change there may change the answer)."""

    data: T
    index: int
    at: int
    keys: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


Waiter = Callable[[Sequence[str], int, float, Sequence[str]], Awaitable[int]]


class Flights:
    """Reads in flight, by query: a reader woken by the change at index I joins a read of the same
    query that started once the store had published I (so it sees that change), instead of its own."""

    def __init__(self, seen: Callable[[], int]) -> None:
        self._seen = seen
        self._running: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}

    async def run(self, key: Hashable, after: int, read: Callable[[], Awaitable[Read[T]]]) -> Read[T]:
        got = self._running.get(key)
        if got is not None and got[0] >= after:
            return await asyncio.shield(got[1])
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._running[key] = (self._seen(), fut)
        try:
            result = await read()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: nobody else may be waiting on it
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            if self._running.get(key, (0, None))[1] is fut:
                del self._running[key]


async def query(
    read: Callable[[], Awaitable[Read[T]]],
    min_index: int,
    wait: float,
    waiter: Waiter,
    flights: Flights,
    key: Hashable,
    current: Callable[[], Awaitable[int]],
    woken: Callable[[int], None] | None = None,
) -> Read[T]:
    """Consul's blocking query over `read`: see the module docstring. `current` is the store's index
    now: a client asking to wait past it holds an index from a store that has since gone back (a
    registry restarted empty, a restored backup). Consul's server would block it until ?wait passes;
    here it is answered at once with the query's own, lower, index, which Consul's clients take as
    their cue to start over from index 0 (api/watch, and Consul's documented rule "reset the index if
    it goes backwards") instead of sleeping through every change until ?wait (up to 10 min) ends.
    `woken` hears the index of the change that woke a reader which then answered (for its latency)."""
    r = await read()
    if not min_index or r.index > min_index:
        return r
    if min_index > r.at and min_index > await current():
        return r
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0:
        woke = await waiter(r.prefixes, r.at, left, r.keys)
        if woke <= r.at:  # the wait ended with nothing it reads changed
            return r
        r = await flights.run(key, woke, read)
        if r.index > min_index:
            if woken is not None:
                woken(woke)
            return r
    return r
