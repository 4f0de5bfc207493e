"""Consul's blocking queries: `?index=N` answers at once when the query's own index is past N, and
otherwise waits until what the query reads changes and its index moves past N, or `?wait` passes.

The loop is Consul's (agent/blockingquery/blockingquery.go): run the query; if its index is newer than
the client's, answer (and, unlike Consul, also when the client's index is ahead of the whole store: see
`query`); else wait on what it read (here: the store keys and prefixes the read names in
`Read.keys` / `Read.prefixes`), run it again, and so on; when the wait ends, answer the last result,
same index and all. A reader woken by a change to a key it watches whose index did not move (a spurious
wake-up) goes back to waiting instead of answering the same body with a new index.

A query that found nothing (`Read.missing`: a KV key, a session) and was blocked because the client had
already been told so keeps waiting while it still finds nothing, even if its index moved meanwhile — the
ErrNotFound rule of Consul's agent/blockingquery/blockingquery.go (hashicorp/consul#12110: a not-found
run after a not-found run raises the query's minimum index to its own) — and answers, when the wait
ends, its newest read. A query that found its entry and then finds it gone answers at once, with an
index past the client's.

Watchers of one query woken by one change share one read (`Flights`): ten clients blocked on
/v1/health/service/web cost one read of web when it changes, not ten, and one JSON encoding (the HTTP
edge renders one body per Read). When they come back with the new index to block again, they park on
that same read instead of taking ten more.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """One run of a query: its answer, the X-Consul-Index for it (never 0), the store index the read
    was taken at, what it read (a change there may change the answer), and whether what it asked for
    was missing (see the module docstring)."""

    data: T
    index: int
    at: int
    keys: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    missing: bool = False


Waiter = Callable[[Sequence[str], int, float, Sequence[str]], Awaitable[int]]


class Flights:
    """Reads shared by the readers of one query (by key): each reader gets a read that shows the state it
    must see, taken by it or by another reader of the same query.

    - A reader woken by the change at index I joins a read of the query still running that started once
      the store had published I (etcd: a read waits on the network, so the woken readers meet there),
      or takes the last read finished whose snapshot is at I or later. The second is what shares reads
      on SQLite, whose read never suspends: the woken readers of one change run one after another, the
      first reads, and the others find its read finished, not running. Either way the read includes the
      change at I, so no reader answers a body older than the change it was woken for.
    - A blocking query that arrives with ?index=N parks on the last finished read when that read's
      index is N or below and its snapshot is at N or later: a new read would answer nothing and park
      too, and the wait from that snapshot's index returns at once for any change after it that the
      query reads (the change feed's history), so parking on the older snapshot misses nothing.
    - Any other read is taken afresh (a query without ?index, or one whose client is ahead of the last
      read): what a client was told was written is in it.

    The last finished read of up to `keep` queries is kept (least recently used go first)."""

    def __init__(self, seen: Callable[[], int], keep: int = 512) -> None:
        self._seen = seen
        self._keep = keep
        self._running: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}
        self._done: OrderedDict[Hashable, Read[Any]] = OrderedDict()

    async def run(self, key: Hashable, after: int, read: Callable[[], Awaitable[Read[T]]]) -> Read[T]:
        """A read of the query `key` that includes the change at index `after`."""
        got = self._running.get(key)
        if got is not None and got[0] >= after:
            return await asyncio.shield(got[1])
        done = self._done.get(key)
        if done is not None and done.at >= after:
            self._done.move_to_end(key)
            return done
        return await self.fresh(key, read)

    def parked(self, key: Hashable, min_index: int) -> Read[Any] | None:
        """The last finished read of `key`, if a blocking query from `min_index` may park on it."""
        done = self._done.get(key)
        if done is not None and done.index <= min_index <= done.at:
            self._done.move_to_end(key)
            return done
        return None

    async def fresh(self, key: Hashable, read: Callable[[], Awaitable[Read[T]]]) -> Read[T]:
        """A new read of `key`, which readers woken meanwhile may join; kept as its last finished one."""
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
            last = self._done.get(key)
            if last is None or result.at >= last.at:
                self._done[key] = result
                self._done.move_to_end(key)
                while len(self._done) > self._keep:
                    self._done.popitem(last=False)
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
    `woken` hears the index of the change that woke a reader which then answered (for its latency).
    Reads go through `flights`, shared with the query's other readers as its docstring says."""
    r = flights.parked(key, min_index) if min_index else None
    if r is None:
        r = await flights.fresh(key, read)
        if not min_index or r.index > min_index:
            return r
        if min_index > r.at and min_index > await current():
            return r
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    told_missing = r.missing  # the client's index is past an answer that found nothing
    while (left := deadline - loop.time()) > 0:
        woke = await waiter(r.prefixes, r.at, left, r.keys)
        if woke <= r.at:  # the wait ended with nothing it reads changed
            return r
        r = await flights.run(key, woke, read)
        if r.index > min_index and not (told_missing and r.missing):
            if woken is not None:
                woken(woke)
            return r
    return r
