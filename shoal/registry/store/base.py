"""The Store contract: a versioned key/value store with compare-and-set, a change feed and leases.

It is shaped like etcd's v3 model on purpose, so that Consul's `X-Consul-Index`, `CreateIndex`,
`ModifyIndex`, `?cas=` and blocking `?index=` map straight onto it: every write gets the next value
of one global index; an entry remembers the index that created it and the one that last changed it.

Operations that write several keys are one transaction (`txn`): etcd's model again — compares on the
modify indexes of what was read, then every write at one new index, or nothing. Callers read what they
decide on (`read`, one consistent snapshot), decide, and commit with compares on exactly those keys;
a failed compare means someone else wrote in between, and the caller reads again.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    create_index: int
    modify_index: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction's condition. Plain: the key's modify index is `modify_index` (0: the key is absent).
    With `prefix`: no key under `key` was created or changed after index `modify_index` (deletions under
    it are not seen; compare the keys read one by one for that)."""

    key: str
    modify_index: int
    prefix: bool = False

    @staticmethod
    def on(key: str, entry: Entry | None) -> Compare:
        """Holds while `key` is still as read (`entry`, or absent)."""
        return Compare(key, entry.modify_index if entry else 0)

    @staticmethod
    def tree(prefix: str, index: int) -> Compare:
        """Holds while nothing under `prefix` was created or changed since index `index`."""
        return Compare(prefix, index, prefix=True)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Deletes `key`, or with `prefix` every key under it."""

    key: str
    prefix: bool = False


Write = Put | Delete


def check_writes(writes: Sequence[Write]) -> None:
    """etcd's rule for one transaction, kept by both stores: a key is put at most once, and no put falls
    under a delete (of that key or of a prefix above it). Deletes may overlap each other."""
    puts = [w.key for w in writes if isinstance(w, Put)]
    if len(set(puts)) != len(puts):
        raise ValueError(f"a key is put twice in one transaction: {sorted(puts)[:5]}")
    for d in (w for w in writes if isinstance(w, Delete)):
        if any(k.startswith(d.key) if d.prefix else k == d.key for k in puts):
            raise ValueError(f"a key under the delete of {d.key!r} is also put")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Keys and prefixes as of one index: `entries[key]` (None when absent), `trees[prefix]` sorted."""

    index: int
    entries: Mapping[str, Entry | None] = field(default_factory=dict)
    trees: Mapping[str, Sequence[Entry]] = field(default_factory=dict)


class Store(Protocol):
    feed: ChangeFeed  # what blocking readers wait on, fed by the store's commits (or its watch)

    async def get(self, key: str) -> Entry | None: ...

    async def range(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with `prefix`, sorted by key."""

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Returns the index of the write."""

    async def cas(self, key: str, value: bytes, index: int, *, lease: int = 0) -> int | None:
        """Writes only if the key's modify index is `index` (0: only if absent); the new index or None."""

    async def update(self, key: str, fn: Callable[[Entry | None], bytes | None]) -> int | None:
        """Puts `fn(the entry as it is)` under `key` (without a lease), atomically with that read; `fn`
        returning None writes nothing. The new index, or None. `fn` is pure and may run again (etcd:
        after a concurrent write) or in another thread (SQLite: the writer's), so a read-modify-write
        costs one store round trip instead of a read and a compare-and-set."""

    async def delete(self, key: str, *, index: int | None = None) -> int | None:
        """Deletes (only at modify index `index`, if given); the new index, or None if nothing changed."""

    async def delete_prefix(self, prefix: str) -> int | None: ...

    async def read(self, keys: Sequence[str] = (), prefixes: Sequence[str] = ()) -> Snapshot:
        """Every key and every prefix's entries as of one index (one read transaction)."""

    async def txn(self, compares: Sequence[Compare], writes: Sequence[Write]) -> int | None:
        """If every compare holds, applies every write at one new index (etcd's Txn; SQLite's one
        transaction) and returns it — the current index when nothing changed; else writes nothing and
        returns None. `writes` obey `check_writes`."""

    async def index(self) -> int:
        """The global index: the index of the newest write (never 0 once opened)."""

    def seen(self) -> int:
        """The newest index the change feed has published (no I/O): a read started now sees at least
        this much."""

    async def wait(
        self, prefixes: Sequence[str], index: int, timeout: float, keys: Sequence[str] = ()
    ) -> int:
        """Returns once one of `keys`, or a key under one of `prefixes`, changed after `index`: the index
        of that change, or `index` itself when `timeout` passes first. May return early (Consul allows
        it)."""

    async def grant(self, ttl: float) -> int:
        """A lease: keys put with it are deleted when it is revoked or not kept alive for `ttl`."""

    async def keepalive(self, lease: int) -> bool: ...

    async def revoke(self, lease: int) -> None: ...

    async def close(self) -> None: ...


class _Waiter:
    """One blocked reader: the exact keys and prefixes it waits on, and the index it has already seen."""

    __slots__ = ("after", "fut", "keys", "prefixes")

    def __init__(
        self, keys: tuple[str, ...], prefixes: tuple[str, ...], after: int, fut: asyncio.Future[int]
    ) -> None:
        self.keys, self.prefixes, self.after, self.fut = keys, prefixes, after, fut


class ChangeFeed:
    """Recent (index, key) changes and the blocking readers waiting on them, in one event loop.

    Both stores feed it: SQLite after each commit, etcd from one watch over its whole namespace.
    Waiters are filed under each exact key and each prefix they wait on, so a change costs a few dict
    lookups however many readers are blocked (a blocking query waits on the one index key its answer
    depends on, e.g. index/service/web, not on a whole table). Waiters whose index is older than the
    history kept are woken at once (a spurious wake-up, which Consul's blocking queries allow), so
    memory stays bounded.
    """

    def __init__(self, start_index: int, keep: int = 50_000) -> None:
        self._recent: deque[tuple[int, str]] = deque(maxlen=keep)
        self._exact: dict[str, set[_Waiter]] = {}
        self._prefix: dict[str, set[_Waiter]] = {}
        self._lengths: dict[int, int] = {}  # prefix length -> how many prefix registrations have it
        self.last_index = start_index
        # every change after this index is in _recent (until the deque starts dropping old ones)
        self._complete_after = start_index
        # figures (shoal.metrics reads them when scraped): keys changed, and when each recent publish
        # happened, (newest index in it, monotonic time), so a woken reader's answer can be timed from
        # the change it answers
        self.changes = 0
        self._published: deque[tuple[int, float]] = deque(maxlen=4096)

    @property
    def waiting(self) -> int:
        """How many readers are blocked (for figures and tests)."""
        return len({w for ws in (*self._exact.values(), *self._prefix.values()) for w in ws})

    def publish(self, changes: Sequence[tuple[int, str]]) -> None:
        if not changes:
            return
        if len(self._recent) + len(changes) > (self._recent.maxlen or 0):
            dropped = len(self._recent) + len(changes) - (self._recent.maxlen or 0)
            self._complete_after = (
                self._recent[min(dropped, len(self._recent)) - 1][0]
                if dropped <= len(self._recent)
                else changes[-1][0]
            )
        self._recent.extend(changes)
        self.last_index = max(self.last_index, changes[-1][0])
        self.changes += len(changes)
        self._published.append((changes[-1][0], time.monotonic()))
        if not self._exact and not self._prefix:
            return
        lengths = sorted(self._lengths)
        for i, key in changes:
            if ws := self._exact.get(key):
                self._fire(ws, i)
            for n in lengths:
                if n > len(key):
                    break
                if ws := self._prefix.get(key[:n]):
                    self._fire(ws, i)

    def published_at(self, index: int) -> float | None:
        """The monotonic time the change at `index` was published (woke its readers), if recent."""
        i = bisect.bisect_left(self._published, index, key=lambda p: p[0])
        return self._published[i][1] if i < len(self._published) else None

    def _fire(self, waiters: set[_Waiter], index: int) -> None:
        for w in [w for w in waiters if index > w.after]:
            self._drop(w)
            if not w.fut.done():
                w.fut.set_result(index)

    def _add(self, w: _Waiter) -> None:
        for k in w.keys:
            self._exact.setdefault(k, set()).add(w)
        for p in w.prefixes:
            self._prefix.setdefault(p, set()).add(w)
            self._lengths[len(p)] = self._lengths.get(len(p), 0) + 1

    def _drop(self, w: _Waiter) -> None:
        for table, names in ((self._exact, w.keys), (self._prefix, w.prefixes)):
            for name in names:
                ws = table.get(name)
                if ws is None or w not in ws:
                    continue
                ws.discard(w)
                if not ws:
                    del table[name]
                if table is self._prefix:
                    left = self._lengths[len(name)] - 1
                    if left:
                        self._lengths[len(name)] = left
                    else:
                        del self._lengths[len(name)]

    def resync(self, index: int) -> None:
        """The history up to `index` is lost (etcd compacted past the watch): every waiter wakes and
        re-reads, and any later wait from an older index wakes at once."""
        self.last_index = max(self.last_index, index)
        self._complete_after = max(self._complete_after, index)
        waiters = {w for ws in (*self._exact.values(), *self._prefix.values()) for w in ws}
        self._exact, self._prefix, self._lengths = {}, {}, {}
        for w in waiters:
            if not w.fut.done():
                w.fut.set_result(max(index, w.after))

    def _seen(self, keys: frozenset[str], prefixes: tuple[str, ...], after: int) -> int | None:
        if after < self._complete_after:
            # history does not reach back to `after`: wake now, the caller re-reads
            return self.last_index if self.last_index > after else None
        start = bisect.bisect_right(self._recent, after, key=lambda c: c[0])
        for i in range(start, len(self._recent)):
            idx, key = self._recent[i]
            if key in keys or (prefixes and key.startswith(prefixes)):
                return idx
        return None

    async def wait(
        self, prefixes: Sequence[str], after: int, timeout: float, keys: Sequence[str] = ()
    ) -> int:
        p, k = tuple(dict.fromkeys(prefixes)), tuple(dict.fromkeys(keys))
        hit = self._seen(frozenset(k), p, after)
        if hit is not None:
            return hit
        loop = asyncio.get_running_loop()
        w = _Waiter(k, p, after, loop.create_future())
        self._add(w)
        # a timer on the future itself, not asyncio.wait_for (which wraps each wait in another future
        # and callbacks): one change waking 10,000 readers is 10,000 of these resuming
        timer = loop.call_later(timeout, _expire, w.fut, after)
        try:
            return await w.fut
        finally:
            timer.cancel()
            self._drop(w)


def _expire(fut: asyncio.Future[int], after: int) -> None:
    """A wait's timeout: it answers `after` (nothing it waits on changed)."""
    if not fut.done():
        fut.set_result(after)


def now() -> float:
    return time.monotonic()
