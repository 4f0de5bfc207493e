"""Leader election among the processes sharing one etcd: etcd's `concurrency.Election.Campaign`, built
from the store's own primitives (a lease, a create-only Txn, a range read, and the store's watch-fed
`wait`), because aetcd has no Election service and the store already keeps one watch per process.

How it works, the way election.go does it:
- each candidate grants a lease and puts `election/<lease id in hex>` (a store key, outside Consul's
  `kv/` space, so no Consul client can see or forge it) create-only, bound to the lease, with its own
  JSON value (name and addresses);
- the candidate whose key has the lowest create index leads (election.go's `WithFirstCreate`);
- every other candidate waits only for the key just before its own to go (`waitDeletes`), then looks
  again: one wake-up per departure, not one per candidate (no thundering herd);
- a keepalive renews the lease every ttl/4. The leader steps down (`is_leader` False, its leader-only
  tasks cancelled) on a failed keepalive, or when its local deadline passes: the monotonic time of the
  last keepalive that succeeded *as sent* plus the TTL, less a margin. etcd cannot expire the lease
  before that (it counts the TTL from when it received the renewal, later than we sent it), so a
  successor, which only leads once the old key is gone, never acts while the old leader still does.
  It then grants a new lease and campaigns again, at the back of the line.

A single-process store (SQLite) needs none of this: `Leadership.solo(me)` always leads.

The choice of leader and of predecessor are pure functions over plain `Candidate` data (`standing`);
the class around them does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shoal.errors import StoreUnavailable
from shoal.logs import kv
from shoal.registry.store import Store
from shoal.registry.store.base import Compare, Entry, Put

log = logging.getLogger("shoal.registry.leader")

ELECTION = "election/"  # store keys, under the store's namespace; Consul's KV lives under kv/
DEFAULT_TTL = 1.0  # the lowest etcd allows with the project's --heartbeat-interval 50 --election-timeout 500
WAIT_SLICE = 30.0  # a waiting candidate looks again at least this often, change or not
REVOKE_WITHIN = 2.0  # a revoke on the way out is best effort: a dead etcd expires the lease itself
# a compare that can never hold (the key is never written, so its modify index is 0, not 1): the fence of
# a process that has never led, so a leader-only write it makes anyway is refused
_NEVER = Compare(ELECTION + "never-led", 1)

TaskFactory = Callable[[], Awaitable[Any]]


# --- the pure part --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One live election entry: its key, the index that created it (its place in line), its value."""

    key: str
    create_index: int
    value: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where one candidate stands. `leading`: its key is first. `waiting`: it waits for `predecessor`
    (the entry just before its own) to go. `absent`: its key is gone (its lease expired or was revoked),
    so it must grant a new lease and put a new key. `leader` is the first entry, whoever it is."""

    state: Literal["leading", "waiting", "absent"]
    leader: Candidate | None
    predecessor: Candidate | None = None


def in_line(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates in the order they lead: by create index (etcd gives each create its own revision;
    the key breaks a tie, which only one Txn putting two election keys could make)."""
    return sorted(candidates, key=lambda c: (c.create_index, c.key))


def standing(candidates: Sequence[Candidate], mine: str) -> Standing:
    """Who leads, and whom the candidate with key `mine` waits for."""
    line = in_line(candidates)
    leader = line[0] if line else None
    at = next((i for i, c in enumerate(line) if c.key == mine), None)
    if at is None:
        return Standing("absent", leader)
    if at == 0:
        return Standing("leading", leader)
    return Standing("waiting", leader, line[at - 1])


def deadline(sent_at: float, ttl: float, margin: float) -> float:
    """Until when a lease renewed by a keepalive sent at `sent_at` surely stands: etcd counts `ttl` from
    when it received the renewal, which is later."""
    return sent_at + ttl - margin


def granted_ttl(ttl: float) -> float:
    """The TTL etcd will be asked for: the store grants whole seconds, at least one (`EtcdStore.grant`).
    The step-down deadline must use this, not the asked-for figure, or a 1.4 s TTL would be trusted for
    0.4 s longer than etcd keeps it."""
    return float(max(1, round(ttl)))


def candidate(e: Entry) -> Candidate:
    """An election entry as plain data; a value that is not a JSON object still holds its place in line
    (it has a key and a lease) but says nothing about who it is."""
    try:
        value = json.loads(e.value)
    except ValueError:
        value = {}
    return Candidate(e.key, e.create_index, value if isinstance(value, dict) else {})


# --- the I/O part ---------------------------------------------------------------------------------------


class Leadership:
    """This process's part in the election over `store`, as `me` (its name and addresses, what
    `leader()` and `members()` show the others).

    `start()` enters the election; `close()` leaves it and revokes the lease so a successor leads at
    once. `add_task(factory)` registers a leader-only coroutine: started each time this process becomes
    leader, cancelled (and awaited) each time it stops, before the lease is given up. Leader-only store
    writes carry `fence()`, so a write a deposed leader was still making is refused by the store.
    """

    def __init__(
        self,
        store: Store | None,
        me: Mapping[str, Any],
        *,
        ttl: float = DEFAULT_TTL,
        margin: float | None = None,
    ) -> None:
        self.store = store
        self.me = dict(me)
        self.ttl = granted_ttl(ttl)
        self.margin = self.ttl / 5 if margin is None else margin
        if not 0 <= self.margin < self.ttl:
            raise ValueError(f"margin {self.margin}s must be at least 0 and below the TTL {self.ttl}s")
        self._solo = store is None
        self._factories: list[TaskFactory] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._leading = False  # tasks run while this holds (solo: from start() to close())
        self._valid_until = float("inf") if self._solo else 0.0
        self._lease = 0
        self._key = ""
        self._term: Compare | None = None  # the fence of the newest term this process led
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.terms = 0  # how many times this process became leader (flaps show up here)

    @classmethod
    def solo(cls, me: Mapping[str, Any]) -> Leadership:
        """For a single-process store (SQLite): always the leader, no lease, no etcd; tasks start as soon
        as they are added, and `fence()` is empty, so the default path writes exactly what it did."""
        return cls(None, me)

    @property
    def is_leader(self) -> bool:
        """Whether this process leads now. Also False once the local deadline has passed, even if the
        keepalive task has not yet run to say so (an event loop that stalled past it). Solo: always
        True (until closed), started or not."""
        if self._solo:
            return not self._closed
        return self._leading and time.monotonic() < self._valid_until

    @property
    def shared(self) -> bool:
        """Whether several processes share the store (and so this one may not lead). False for solo."""
        return not self._solo

    @property
    def key(self) -> str:
        """This process's current election key ('' when solo or between leases)."""
        return self._key

    async def start(self) -> None:
        """Enters the election: grants the first lease and puts the first key here, so a store that
        cannot be reached fails the caller (StoreUnavailable) rather than a background task, and
        `members()` includes this process as soon as it returns."""
        if self._solo:
            self._leading = True
            self._start_tasks()
            return
        lease, key = await self._enter()
        self._runner = asyncio.get_running_loop().create_task(self._run(lease, key), name="leadership")

    async def close(self) -> None:
        """Leaves the election: stops the leader-only tasks, then revokes the lease, which deletes the
        key, so the successor leads now instead of one TTL later."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        await self._step_down()

    def add_task(self, factory: TaskFactory) -> None:
        """Runs `factory()` whenever this process leads; cancelled when it stops leading. Added while
        leading, it starts at once. A task that ends or fails by itself is not restarted within the
        term (a failure is logged): leader loops are expected to handle their own errors."""
        self._factories.append(factory)
        if self._leading:
            self._tasks.append(self._spawn(factory))

    def fence(self) -> tuple[Compare, ...]:
        """The compares a leader-only write carries: they hold only while this process's leader key of
        the current term is still in the store. Once its lease expired or was revoked (and a successor
        may lead), the store refuses the write. Empty when solo; a compare that never holds when this
        process has never led."""
        if self._solo:
            return ()
        return (self._term or _NEVER,)

    async def leader(self) -> dict[str, Any] | None:
        """The leading candidate's value (`me` of whoever leads), or None while nobody does."""
        line = await self._line()
        return dict(line[0].value) if line else None

    async def members(self) -> list[dict[str, Any]]:
        """Every live candidate's value, leader first: each has a lease that is being kept alive, so
        this is the list of live managers."""
        return [dict(c.value) for c in await self._line()]

    # --- inside -----------------------------------------------------------------------------------------

    async def _line(self) -> list[Candidate]:
        if self.store is None:
            return [Candidate("", 0, self.me)]
        return in_line([candidate(e) for e in await self.store.range(ELECTION)])

    async def _enter(self) -> tuple[int, str]:
        """A new lease and a create-only key bound to it (Campaign's put with CreateRevision(k) == 0)."""
        assert self.store is not None
        asked = time.monotonic()
        lease = await self.store.grant(self.ttl)
        self._valid_until = deadline(asked, self.ttl, self.margin)
        key = f"{ELECTION}{lease:x}"
        value = json.dumps(self.me, sort_keys=True).encode()
        if await self.store.txn([Compare(key, 0)], [Put(key, value, lease)]) is None:
            # lease ids are unique, so only a key left by a lease id reused after a restart gets here
            await self._revoke(lease)
            raise StoreUnavailable(f"election key {key!r} already exists; a new lease will get another id")
        self._lease, self._key = lease, key
        return lease, key

    async def _run(self, lease: int, key: str) -> None:
        """One lease after another until closed: keep it alive and campaign with it; when it is lost
        (a failed keepalive, the deadline, the key gone), step down, give it up, and start over."""
        while True:
            keeper = asyncio.ensure_future(self._keep(lease))
            campaign = asyncio.ensure_future(self._campaign(key))
            try:
                done, _ = await asyncio.wait([keeper, campaign], return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if not t.cancelled() and (e := t.exception()) is not None:
                        kv(log, "election-failed", logging.WARNING, key=key, error=str(e))
            finally:
                for t in (keeper, campaign):
                    t.cancel()
                await asyncio.gather(keeper, campaign, return_exceptions=True)
                await self._step_down()
            if self._closed:
                return
            while True:
                try:
                    lease, key = await self._enter()
                    break
                except StoreUnavailable as e:
                    kv(log, "election-retry", logging.WARNING, error=str(e))
                    await asyncio.sleep(self.ttl / 4)

    async def _keep(self, lease: int) -> None:
        """Renews the lease every ttl/4 and returns when it can no longer be trusted: a keepalive that
        failed, answered TTL 0 (the lease is gone), or did not answer before the deadline."""
        assert self.store is not None
        while True:
            sent = time.monotonic()
            left = self._valid_until - sent
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for returns the keepalive's answer and drops a
                # cancel that arrives as it completes, and this loop then renewed the lease forever while
                # close() waited for it (a hung leader that nobody could depose)
                async with asyncio.timeout(max(0.0, left)):
                    alive = left > 0 and await self.store.keepalive(lease)
            except (StoreUnavailable, TimeoutError) as e:
                kv(
                    log,
                    "lease-lost",
                    logging.WARNING,
                    lease=f"{lease:x}",
                    error=str(e) or "no answer in time",
                )
                return
            if not alive or time.monotonic() >= self._valid_until:
                kv(log, "lease-lost", logging.WARNING, lease=f"{lease:x}", error="expired")
                return
            self._valid_until = deadline(sent, self.ttl, self.margin)
            await asyncio.sleep(min(self.ttl / 4, max(0.0, self._valid_until - time.monotonic())))

    async def _campaign(self, key: str) -> None:
        """Waits in line, leads while first, and returns when this key is gone. A key created later
        always has a higher create index, so once first, only this key's deletion ends the term."""
        assert self.store is not None
        while True:
            snap = await self.store.read(prefixes=[ELECTION])
            entries = snap.trees[ELECTION]
            st = standing([candidate(e) for e in entries], key)
            if st.state == "absent":
                return
            if st.state == "leading":
                if not self._leading:
                    mine = next(e for e in entries if e.key == key)
                    self._become_leader(Compare.on(key, mine))
                await self.store.wait([], snap.index, WAIT_SLICE, keys=[key])
                continue
            assert st.predecessor is not None
            await self.store.wait([], snap.index, WAIT_SLICE, keys=[st.predecessor.key])

    def _become_leader(self, term: Compare) -> None:
        if time.monotonic() >= self._valid_until:
            return  # the lease may already be gone; the keeper is about to say so
        self._term, self._leading = term, True
        self.terms += 1
        kv(log, "leading", key=term.key, name=self.me.get("name"))
        self._start_tasks()

    def _start_tasks(self) -> None:
        self._tasks = [self._spawn(f) for f in self._factories]

    def _spawn(self, factory: TaskFactory) -> asyncio.Task[Any]:
        async def run() -> None:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                kv(log, "leader-task-failed", logging.ERROR, error=str(e), exc_info=True)

        return asyncio.get_running_loop().create_task(run())

    async def _step_down(self) -> None:
        """Stops leading: leader-only tasks are cancelled and awaited first, then the lease is revoked,
        so no task of this term runs once a successor can lead."""
        was = self._leading
        self._leading = False
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if was and not self._solo:
            kv(log, "stepped-down", key=self._key, name=self.me.get("name"))
        if self._lease:
            lease, self._lease, self._key = self._lease, 0, ""
            await self._revoke(lease)

    async def _revoke(self, lease: int) -> None:
        assert self.store is not None
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout(REVOKE_WITHIN):
                await self.store.revoke(lease)
