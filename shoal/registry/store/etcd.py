"""The cluster store: etcd v3 over gRPC (aetcd's generated stubs on one grpc.aio channel).

The channel names every member and balances round-robin, so a stopped member is routed around.
Every call has a deadline: without quorum etcd does not answer, and the user gets StoreUnavailable
saying so instead of a hang. Entry indexes are etcd revisions (create_revision, mod_revision), so
Consul's indexes survive a manager restart unchanged. One watch over the store's namespace feeds
the ChangeFeed that blocking queries wait on; when etcd has compacted past it (the watch was away), it
wakes every blocked reader to re-read and resumes from the current revision.

Without quorum (most members down) etcd does not say so: a member waits out its own request timeout,
or answers "no leader" exactly as it does during an ordinary election. So every call asks etcd to refuse
at once when it knows no leader (the `hasleader` metadata etcd's own client sends), and a call that is
refused or unanswered for PROBE_AFTER asks each member for its Status (quorum.py decides): fewer than a
majority answering means no write can commit, and the write fails then, in about a second, with a
message naming the members that are down, instead of after RETRY_FOR. Reads then fall back to a
serializable read from any member still up, and `stale` is True until a probe finds quorum and a leader
again (a Consul edge answers those with `X-Consul-KnownLeader: false`).

Writes of `update` (every plain KV PUT) go in groups, as SQLite's commits do: an update is sent at once
when no group is on its way, and the updates that arrive meanwhile go together as the next group, one
Txn of nested Txns, each with its own compare, its put, and a read of the key when the compare fails, so
one round trip both writes and, on a conflict, brings the current value (a Python gRPC call costs the
registry several hundred µs of CPU: one per group instead of two per PUT is most of the speed-up). The value
compared against comes from a cache of recent entries fed by the watch (whose events carry the values)
and by the store's own answers; the cache is only a guess, the compare is what makes it safe.

A group's Txn costs the registry about 600 µs of CPU and etcd's three members about 1 ms whatever its
size, so the groups are kept big: when one answers, the next is sent before its callers are woken (their
HTTP answers would otherwise keep it waiting); and when fewer updates wait than the group answered, the
next waits until as many as both arrived — under load, mostly those callers' next PUTs — though never
longer than two of the answered group's round trips (nor LINGER_MAX). Sent as soon as the first came
back instead, 16 clients split into a group of one and a group of fifteen, each waiting on the other's
round trip, at twice the CPU per PUT in etcd and the registry alike. A writer alone (a group of one with
nothing queued behind it) never waits.

Retries: a write whose first attempt timed out may have been applied. A plain put is retried as it
is; a transaction with compares is retried too, but when the retry's compares fail the store reads back
what it wrote and reports success if its writes stand — so a retried CAS or acquire never answers false
while its value holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd import rpc

from shoal.errors import ServerError, StoreUnavailable, TooLarge
from shoal.registry import faults
from shoal.registry.faults import armed, crash_point
from shoal.registry.store.base import (
    ChangeFeed,
    Compare,
    Delete,
    Entry,
    Put,
    Snapshot,
    Write,
    check_writes,
)
from shoal.registry.store.quorum import Member, Quorum, assess, endpoint_of, no_quorum_message

NAMESPACE = b"/shoal/"
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
CALL_TIMEOUT = 2.0  # one attempt
RETRY_FOR = 8.0  # all attempts: a lost member or a leader election is over well within this
UPDATE_ATTEMPTS = 100  # compare-and-sets of one `update` against concurrent writers
LEADER_MD = (("hasleader", "true"),)  # etcd's "refuse at once when you know no leader" (clientv3's too)
PROBE_AFTER = 0.5  # an attempt unanswered this long: ask the members whether there is a quorum at all
PROBE_TIMEOUT = 0.8  # one member's Status answer, in that probe
PROBE_FRESH = 0.3  # a probe's verdict is shared this long by every call that needs one
RECOVER_EVERY = 0.5  # without quorum: how often to look whether it is back
STALE_FOR = 2.0  # a serializable read's attempts, from whichever members are up
# update groups on their way at once (1 measured faster than 2 or 4: bigger groups, fewer calls)
BATCHES_IN_FLIGHT = 1
# after a group's answers, when fewer updates wait than it held, the next group waits for as many as both
# (its callers' next ones, mostly), at most this many of its round trips, and never past LINGER_MAX
LINGER_ROUND_TRIPS = 2.0
LINGER_MAX = 0.010
BATCH_BYTES = 1 << 20  # one group's values at most (etcd's --max-request-bytes is 1.5 MiB by default)
# a member that comes back is connected to again within a second (gRPC's default backoff grows to 2 min)
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
HINT_KEYS = 32768  # entries the value cache keeps (the oldest go first)
HINT_VALUE_MAX = 2048  # larger values are not cached: an update of such a key reads it in its first Txn


class _NoQuorum(Exception):
    """Inside the store only: a probe found no quorum (the caller answers stale or refuses)."""

    def __init__(self, quorum: Quorum) -> None:
        super().__init__(no_quorum_message(quorum))
        self.quorum = quorum


class _LeaderMoved(Exception):
    """Inside the store only: another member leads since the attempt began, so the attempt is likely
    lost with the old leader (a follower's forwarded proposal is not answered) and is sent again."""


@dataclass(slots=True)
class _Update:
    """One `update` waiting for its group. Its value is made as the group is formed, from the newest
    entry known then (the cache's, else what its last attempt read), so an update queued behind another
    of the same key compares against what that one wrote. `fut` gets (fn's value, the group's revision,
    whether its compare held, whether the group was sent again after an attempt that may have been
    applied); when the compare failed, `last` is the entry the Txn read instead."""

    name: str
    key: bytes
    fn: Callable[[Entry | None], bytes | None]
    last: Entry | None
    fut: asyncio.Future[tuple[bytes | None, int, bool, bool]]


def _update_op(op: rpc.RequestOp, k: bytes, entry: Entry | None, value: bytes | None) -> None:
    """Fills `op` (in place: protobuf copies every submessage handed to a constructor) with a nested
    Txn: if the key is still `entry` (absent: None), put `value` (None: nothing); else read the key."""
    t = op.request_txn
    c = t.compare.add()
    c.result, c.target, c.key = rpc.Compare.EQUAL, rpc.Compare.MOD, k
    c.mod_revision = entry.modify_index if entry else 0
    if value is not None:
        put = t.success.add().request_put
        put.key, put.value = k, value
    t.failure.add().request_range.key = k


def _serializable(req: Any) -> Any:
    """A copy of a Range, or of a Txn of Ranges, that any member answers from its own copy."""
    out = type(req)()
    out.CopyFrom(req)
    if isinstance(out, rpc.RangeRequest):
        out.serializable = True
    else:
        for op in out.success:
            op.request_range.serializable = True
    return out


def _end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix"."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


class EtcdStore:
    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints = list(endpoints)
        target = "ipv4:" + ",".join(self.endpoints)
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.lb_policy_name", "round_robin"),
                ("grpc.enable_retries", 1),
                ("grpc.max_receive_message_length", -1),  # a group's failure reads, a big prefix
                *RECONNECT,
            ],
        )
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self.feed: ChangeFeed
        # quorum: one channel per member for the probes, the last verdict, and the one being asked for
        self._probe_channels: dict[str, grpc.aio.Channel] = {}
        self._members: list[Member] | None = None
        self._verdict: tuple[float, Quorum] | None = None
        self._probing: asyncio.Future[Quorum] | None = None
        self._lost: Quorum | None = None  # set while etcd has no quorum: reads are answered stale
        self._lost_at = 0.0  # since when (the loop's clock)
        self._leader = 0  # the raft leader the last probe found (0: none yet)
        self._recovering: asyncio.Task[None] | None = None
        # update groups, and the value cache they compare against: key -> (entry or None, as of revision)
        self._updates: deque[_Update] = deque()
        self._busy: set[bytes] = set()  # keys in a group on its way
        self._in_flight = 0
        self._send_due = False
        self._expect = 0  # updates the next group waits for, until _linger_until (see _send_updates)
        self._linger_until = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._hints: dict[str, tuple[Entry | None, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._watch_call: Any = None  # the watch thread's current call, cancelled to stop it
        self._pending: list[tuple[str, Any]] = []  # what the watch thread saw, for the loop
        self._pending_lock = threading.Lock()
        self._flush_due = False

    @classmethod
    async def open(cls, endpoints: Sequence[str]) -> EtcdStore:
        store = cls(endpoints)
        start = await store.index()
        await store._probe()  # which member leads: an attempt outliving that leader is sent again
        store.feed = ChangeFeed(start)
        store._watcher = asyncio.get_running_loop().create_task(store._watch_loop(start))
        return store

    def _k(self, key: str) -> bytes:
        return NAMESPACE + key.encode()

    def _entry(self, kv: rpc.KeyValue) -> Entry:
        return Entry(
            kv.key[len(NAMESPACE) :].decode(errors="replace"),
            kv.value,
            kv.create_revision,
            kv.mod_revision,
            kv.lease,
        )

    @property
    def stale(self) -> bool:
        """True while etcd has no quorum: reads are answered from one member's own copy and may miss the
        newest writes (Consul's `X-Consul-KnownLeader: false`). False again once a majority and a leader
        answer."""
        return self._lost is not None

    @property
    def lost_for(self) -> float:
        """Seconds since etcd was found without quorum (0.0 while it has one), for Consul's
        `X-Consul-LastContact` (in ms) on stale answers."""
        if self._lost is None:
            return 0.0
        return max(0.0, asyncio.get_running_loop().time() - self._lost_at)

    async def _call(self, method, request, on_retry=None, *, stale: bool = False, started=None):
        """One RPC, each attempt with a short deadline, retried while a lost member's connections are
        replaced or a new leader is elected, as long as a majority of the members answers; without one
        (quorum.py) a write fails at once and a read that allows it (`stale`) is answered by any member
        from its own copy (the same request, serializable). Past RETRY_FOR without an answer the user is
        told so. `on_retry` is called before each attempt after a failed one (an attempt that timed out
        may have been applied: see `_guarded`). `started` is the first attempt, when the caller began
        it already (`_start`)."""
        loop = asyncio.get_running_loop()
        if self._lost is not None and started is None:
            if stale:
                return await self._stale_call(method, _serializable(request))
            q = await self._probe()
            if not q.has_quorum:
                raise StoreUnavailable(no_quorum_message(q))
        deadline = loop.time() + RETRY_FOR
        retried = False
        while True:
            if retried and on_retry:
                on_retry()
            first, started = started, None
            try:
                resp = await self._attempt(
                    method, request, min(CALL_TIMEOUT, max(0.1, deadline - loop.time())), first
                )
                if self._lost is not None:
                    self._regained()
                return resp
            except _NoQuorum as e:
                if stale:
                    return await self._stale_call(method, _serializable(request))
                raise StoreUnavailable(str(e)) from None
            except _LeaderMoved:
                retried = True
                continue
            except grpc.aio.AioRpcError as e:
                code = e.code()
                details = (e.details() or "").lower()
                # etcd's own words when it cannot reach quorum in time, or is electing a leader
                transient = any(
                    w in details for w in ("deadline exceeded", "timed out", "no leader", "leader changed")
                )
                retryable = (
                    code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or transient
                )
                if retryable:
                    q = await self._probe()
                    if not q.has_quorum:
                        if stale:
                            return await self._stale_call(method, _serializable(request))
                        raise StoreUnavailable(no_quorum_message(q)) from e
                if retryable and loop.time() < deadline - 0.1:
                    await asyncio.sleep(0.05)
                    retried = True
                    continue
                if retryable:
                    raise StoreUnavailable(
                        f"etcd did not answer within {RETRY_FOR:.0f}s ({e.details() or code.name}), though "
                        f"a majority of its members ({', '.join(self.endpoints)}) answers: it may be "
                        "overloaded or its disk stalled; look at its members' logs"
                    ) from e
                if "too many operations" in details:
                    raise TooLarge(
                        f"etcd refused the transaction: {e.details()} (etcd's --max-txn-ops, 128 by "
                        "default); split it into smaller ones"
                    ) from e
                raise StoreUnavailable(f"etcd: {e.details() or code.name}") from e

    def _start(self, method, request):
        """A call's first attempt begun now, from plain code, for `_call(started=)`: grpc.aio sends it
        from a task of its own, so it goes out ahead of whatever the loop has queued after this (an
        update group's answers), not behind it. None while etcd has no quorum (`_call` decides then).
        The leader known now goes with it, for `_attempt`."""
        if self._lost is not None:
            return None
        return method(request, timeout=CALL_TIMEOUT, metadata=LEADER_MD), self._leader

    async def _attempt(self, method, request, timeout: float, started=None):
        """One attempt; unanswered after PROBE_AFTER, the members are asked how things stand: without
        a quorum the attempt is abandoned (_NoQuorum) rather than waited out; with one but no leader
        they are asked again until one leads, and when that is another member than led before, the
        attempt is abandoned too (_LeaderMoved) and sent again, rather than waiting out its deadline
        for an answer the dead leader will never give."""
        loop = asyncio.get_running_loop()
        if started is None:
            call, before = method(request, timeout=timeout, metadata=LEADER_MD), self._leader
        else:
            call, before = started
        why: list[Exception] = []

        async def check() -> None:
            while not call.done():
                try:
                    q = await self._probe()
                except Exception:  # the store closing under it: the attempt ends on its own
                    return
                if call.done():
                    return
                if not q.has_quorum:
                    why.append(_NoQuorum(q))
                elif q.leader and before and q.leader != before:
                    why.append(_LeaderMoved())
                elif q.leader:
                    return  # the same leader: only slow; the attempt runs to its deadline
                else:
                    await asyncio.sleep(PROBE_FRESH)  # an election: look again
                    continue
                call.cancel()
                return

        timer = loop.call_later(PROBE_AFTER, lambda: self._spawn(check()))
        try:
            return await call
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if why and not (task and task.cancelling()):
                raise why[0] from None
            raise
        finally:
            timer.cancel()

    async def _stale_call(self, method, request):
        """A serializable read from any member still up (the channel routes around the dead ones)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STALE_FOR
        while True:
            try:
                return await method(request, timeout=max(0.1, min(CALL_TIMEOUT, deadline - loop.time())))
            except grpc.aio.AioRpcError as e:
                if loop.time() < deadline - 0.1:
                    await asyncio.sleep(0.05)
                    continue
                q = self._lost or (self._verdict[1] if self._verdict else None)
                down = f"; {no_quorum_message(q)}" if q is not None else ""
                raise StoreUnavailable(
                    f"no etcd member answers a read ({e.details() or e.code().name}){down}"
                ) from e

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- quorum -------------------------------------------------------------------------------------

    async def _probe(self) -> Quorum:
        """The members' verdict, asked for at most once per PROBE_FRESH however many calls need it."""
        loop = asyncio.get_running_loop()
        if self._verdict is not None and loop.time() - self._verdict[0] < PROBE_FRESH:
            return self._verdict[1]
        if self._probing is None:
            self._probing = loop.create_task(self._ask_members())
        return await asyncio.shield(self._probing)

    def _prober(self, endpoint: str) -> grpc.aio.Channel:
        ch = self._probe_channels.get(endpoint)
        if ch is None:
            ch = self._probe_channels[endpoint] = grpc.aio.insecure_channel(
                f"ipv4:{endpoint}", options=RECONNECT
            )
        return ch

    def _forget_prober(self, endpoint: str) -> None:
        """A member that did not answer gets a new channel next time, free of the old one's backoff."""
        ch = self._probe_channels.pop(endpoint, None)
        if ch is not None:
            self._spawn(ch.close())

    async def _ask_members(self) -> Quorum:
        """Status from every member at once (each within PROBE_TIMEOUT), and the member list from one
        that answers; the verdict is quorum.py's. Losing quorum starts the watch for its return."""
        try:
            targets = list(dict.fromkeys([*self.endpoints, *(m.endpoint for m in self._members or ())]))

            async def status(endpoint: str) -> tuple[str, tuple[int, int] | None]:
                try:
                    r = await rpc.MaintenanceStub(self._prober(endpoint)).Status(
                        rpc.StatusRequest(), timeout=PROBE_TIMEOUT
                    )
                except grpc.aio.AioRpcError:
                    self._forget_prober(endpoint)
                    return endpoint, None
                return endpoint, (r.header.member_id, r.leader)

            answers = {e: a for e, a in await asyncio.gather(*(status(t) for t in targets)) if a is not None}
            for endpoint in answers:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    listed = await rpc.ClusterStub(self._prober(endpoint)).MemberList(
                        rpc.MemberListRequest(), timeout=PROBE_TIMEOUT
                    )
                    self._members = sorted(
                        (
                            Member(m.ID, m.name, endpoint_of(m.clientURLs[0]) if m.clientURLs else m.name)
                            for m in listed.members
                            if not m.isLearner
                        ),
                        key=lambda m: m.name,
                    )
                    break
            q = assess(self.endpoints, self._members, answers)
            self._verdict = (asyncio.get_running_loop().time(), q)
            if q.has_quorum and q.leader:
                self._leader = q.leader
            if not q.has_quorum and self._lost is None:
                self._lost, self._lost_at = q, asyncio.get_running_loop().time()
                self._recovering = asyncio.get_running_loop().create_task(self._recover())
            return q
        finally:
            self._probing = None

    async def _recover(self) -> None:
        """While there is no quorum: look every RECOVER_EVERY; a majority with a leader ends it."""
        while self._lost is not None:
            await asyncio.sleep(RECOVER_EVERY)
            with contextlib.suppress(Exception):
                q = await self._probe()
                if q.serving:
                    self._regained()
                elif self._lost is not None:
                    self._lost = q

    def _regained(self) -> None:
        self._lost = None

    async def _range(self, req: rpc.RangeRequest) -> Any:
        return await self._call(self._kv.Range, req, stale=True)

    async def get(self, key: str) -> Entry | None:
        resp = await self._range(rpc.RangeRequest(key=self._k(key)))
        return self._entry(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str) -> list[Entry]:
        k = self._k(prefix)
        resp = await self._range(
            rpc.RangeRequest(
                key=k, range_end=_end(k), sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY
            ),
        )
        return [self._entry(kv) for kv in resp.kvs]

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        resp = await self._call(self._kv.Put, rpc.PutRequest(key=self._k(key), value=value, lease=lease))
        return resp.header.revision

    async def cas(self, key: str, value: bytes, index: int, *, lease: int = 0) -> int | None:
        return await self.txn([Compare(key, index)], [Put(key, value, lease)])

    async def update(self, key: str, fn: Callable[[Entry | None], bytes | None]) -> int | None:
        """fn(the entry as the cache has it) compared-and-put in one nested Txn of a group (see the module
        docstring); when the cache was wrong, the Txn's failure branch brought the current entry, and fn
        runs again on that. An attempt whose answer was lost may have been applied: when the key then
        holds what that attempt wrote, it was ours, and the answer is success."""
        loop = asyncio.get_running_loop()
        u = _Update(key, self._k(key), fn, None, loop.create_future())
        sent_blind: list[bytes] = []  # values of attempts that may have been applied unanswered
        for _ in range(UPDATE_ATTEMPTS):
            u.fut = loop.create_future()
            self._updates.append(u)
            self._schedule_send()
            value, revision, succeeded, resent = await u.fut
            if resent and value is not None:
                sent_blind.append(value)
            if succeeded:
                return None if value is None else revision
            # the compare failed: u.last is the entry the Txn's failure branch read (the cache has it too)
            if u.last is not None and u.last.lease == 0 and u.last.value in sent_blind:
                return u.last.modify_index
        raise ServerError(f"could not write {key!r}: too many concurrent writers; try again")

    def _schedule_send(self) -> None:
        if not self._send_due and self._in_flight < BATCHES_IN_FLIGHT:
            self._send_due = True  # once this loop turn's updates have all joined
            asyncio.get_running_loop().call_soon(self._send_updates)

    def _send_updates(self) -> None:
        """Groups from the waiting updates, while fewer than BATCHES_IN_FLIGHT are on their way. A key
        is in one group at a time (etcd refuses a key put twice in one Txn, and a second group would only
        lose the compare to the first): its later updates wait for the group ahead to answer."""
        self._send_due = False
        if self._expect and self._in_flight == 0 and len(self._updates) < self._expect:
            loop = asyncio.get_running_loop()
            if loop.time() < self._linger_until:
                if self._linger is None:
                    self._linger = loop.call_at(self._linger_until, self._linger_over)
                return
        self._expect = 0
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        while self._updates and self._in_flight < BATCHES_IN_FLIGHT:
            req = rpc.TxnRequest()
            group: list[tuple[_Update, Entry | None, bytes | None]] = []
            later: list[_Update] = []
            size = 0
            while self._updates and len(group) < MAX_TXN_OPS:
                u = self._updates.popleft()
                if u.fut.done():  # its caller was cancelled while it waited: it is not sent
                    continue
                if u.key in self._busy:
                    later.append(u)
                    continue
                hint = self._hints.get(u.name)
                entry = hint[0] if hint is not None else u.last
                try:
                    value = u.fn(entry)
                except Exception as e:  # fn is the caller's: its failure is that caller's alone
                    u.fut.set_exception(e)
                    continue
                if group and size + len(u.key) + len(value or b"") > BATCH_BYTES:
                    later.append(u)
                    break
                size += len(u.key) + len(value or b"")
                self._busy.add(u.key)
                group.append((u, entry, value))
                _update_op(req.success.add(), u.key, entry, value)
            self._updates.extendleft(reversed(later))
            if not group:
                return
            self._in_flight += 1
            started = None if faults.LOSE_ANSWERS else self._start(self._kv.Txn, req)
            self._spawn(self._send_group(group, req, started, asyncio.get_running_loop().time()))

    async def _send_group(
        self,
        group: list[tuple[_Update, Entry | None, bytes | None]],
        req: rpc.TxnRequest,
        started: Any,
        sent_at: float,
    ) -> None:
        """One group's Txn (begun by `_send_updates` when `started`), then its answers: the cache first,
        then the next group sent, and only then the callers woken. Woken first, their HTTP answers
        (several hundred µs of the loop each) went out before the next group did, and etcd sat idle
        for a millisecond after every group."""
        resent = False

        def retrying() -> None:
            nonlocal resent
            resent = True

        answers: list[tuple[bytes | None, int, bool, bool]] = []
        failed: Exception | None = None
        try:
            if faults.LOSE_ANSWERS:  # a test's stand-in for an answer lost after etcd applied the write
                await self._kv.Txn(req, timeout=CALL_TIMEOUT)
                resent = True
            resp = await self._call(self._kv.Txn, req, on_retry=retrying, started=started)
            revision = resp.header.revision
            for (u, entry, value), r in zip(group, resp.responses, strict=True):
                answer = r.response_txn
                if answer.succeeded:
                    if value is not None:
                        created = entry.create_index if entry else revision
                        self._hint(u.name, Entry(u.name, value, created, revision), revision)
                else:  # the failure branch read the key: the cache, and the caller's next attempt, have it
                    kvs = answer.responses[0].response_range.kvs
                    u.last = self._entry(kvs[0]) if kvs else None
                    self._hint(u.name, u.last, revision)
                answers.append((value, revision, answer.succeeded, resent))
        except asyncio.CancelledError:
            if started is not None:
                started[0].cancel()
            self._release(group)
            for u, _, _ in group:
                u.fut.cancel()
            raise
        except Exception as e:
            failed = e
        self._release(group)
        if failed is None and len(self._updates) < len(group):  # most of the load was in this group
            now = asyncio.get_running_loop().time()
            self._expect = len(group) + len(self._updates)
            self._linger_until = now + min(LINGER_MAX, LINGER_ROUND_TRIPS * (now - sent_at))
        try:
            if self._updates:
                self._send_updates()  # the next group on its way before these callers are answered
        finally:
            for i, (u, _, _) in enumerate(group):
                if u.fut.done():
                    continue
                if failed is None:
                    u.fut.set_result(answers[i])
                else:
                    u.fut.set_exception(failed)

    def _linger_over(self) -> None:
        self._linger = None
        self._expect = 0
        self._send_updates()

    def _release(self, group: list[tuple[_Update, Entry | None, bytes | None]]) -> None:
        """A group answered (or abandoned): its keys may go in the next one."""
        self._in_flight -= 1
        for u, _, _ in group:
            self._busy.discard(u.key)

    def _hint(self, key: str, entry: Entry | None, revision: int) -> None:
        """What the cache knows of `key` as of `revision`, unless it knows something newer. A value over
        HINT_VALUE_MAX is not kept, and what was known of the key before is forgotten."""
        old = self._hints.pop(key, None)
        if old is not None and old[1] > revision:
            self._hints[key] = old
            return
        if entry is not None and len(entry.value) > HINT_VALUE_MAX:
            return
        if len(self._hints) >= HINT_KEYS:
            del self._hints[next(iter(self._hints))]
        self._hints[key] = (entry, revision)

    async def delete(self, key: str, *, index: int | None = None) -> int | None:
        k = self._k(key)
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
        cmps = [rpc.Compare(result=rpc.Compare.GREATER, target=rpc.Compare.VERSION, key=k, version=0)]
        if index is not None:
            cmps.append(
                rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=k, mod_revision=index)
            )
        return await self._guarded(rpc.TxnRequest(compare=cmps, success=[op]), [Delete(key)])

    async def delete_prefix(self, prefix: str) -> int | None:
        k = self._k(prefix)
        resp = await self._call(self._kv.DeleteRange, rpc.DeleteRangeRequest(key=k, range_end=_end(k)))
        return resp.header.revision if resp.deleted else None

    def _range_op(self, key: str, prefix: bool) -> rpc.RequestOp:
        k = self._k(key)
        if not prefix:
            return rpc.RequestOp(request_range=rpc.RangeRequest(key=k))
        return rpc.RequestOp(
            request_range=rpc.RangeRequest(
                key=k, range_end=_end(k), sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY
            )
        )

    async def read(self, keys: Sequence[str] = (), prefixes: Sequence[str] = ()) -> Snapshot:
        """One Txn of ranges: etcd answers them all at one revision."""
        return await self._read(keys, prefixes, stale_ok=True)

    async def _read(self, keys: Sequence[str], prefixes: Sequence[str], *, stale_ok: bool) -> Snapshot:
        ops = [self._range_op(k, False) for k in keys] + [self._range_op(p, True) for p in prefixes]
        first = rpc.TxnRequest(success=ops[:MAX_TXN_OPS])
        resp = await self._call(self._kv.Txn, first, stale=stale_ok)
        ranges = [r.response_range.kvs for r in resp.responses]
        for op in ops[MAX_TXN_OPS:]:  # past etcd's limit for one Txn: the same revision, range by range
            op.request_range.revision = resp.header.revision
            ranges.append((await self._call(self._kv.Range, op.request_range, stale=stale_ok)).kvs)
        entries = {k: (self._entry(kvs[0]) if kvs else None) for k, kvs in zip(keys, ranges, strict=False)}
        trees = {
            p: [self._entry(kv) for kv in kvs] for p, kvs in zip(prefixes, ranges[len(keys) :], strict=True)
        }
        return Snapshot(max(1, resp.header.revision), entries, trees)

    def _compare(self, c: Compare) -> rpc.Compare:
        k = self._k(c.key)
        if c.prefix:  # every key in the range has mod_revision <= c.modify_index
            return rpc.Compare(
                result=rpc.Compare.LESS,
                target=rpc.Compare.MOD,
                key=k,
                range_end=_end(k),
                mod_revision=c.modify_index + 1,
            )
        return rpc.Compare(
            result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=k, mod_revision=c.modify_index
        )

    def _op(self, w: Write) -> rpc.RequestOp:
        k = self._k(w.key)
        if isinstance(w, Put):
            return rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=w.value, lease=w.lease))
        end = _end(k) if w.prefix else b""
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, range_end=end))

    async def txn(self, compares: Sequence[Compare], writes: Sequence[Write]) -> int | None:
        check_writes(writes)
        req = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares], success=[self._op(w) for w in writes]
        )
        if armed("store-txn-sent"):
            call = asyncio.ensure_future(self._kv.Txn(req, timeout=CALL_TIMEOUT))
            await asyncio.sleep(0.2)  # long enough for etcd to apply it; its answer is never read
            crash_point("store-txn-sent", (w.key for w in writes))
            resp = await call
            return resp.header.revision if resp.succeeded else None
        return await self._guarded(req, writes)

    async def _guarded(self, req: rpc.TxnRequest, writes: Sequence[Write]) -> int | None:
        """A Txn with compares, retried like any call; but when an attempt that went unanswered may have
        been applied and the retry's compares then fail, the writes are read back: if they all stand,
        it was ours, and the answer is success (not the false a blind retry would give)."""
        maybe_applied = False

        def retrying() -> None:
            nonlocal maybe_applied
            maybe_applied = True

        if faults.LOSE_ANSWERS:  # a test's stand-in for an answer lost after etcd applied the write
            await self._kv.Txn(req, timeout=CALL_TIMEOUT)
            maybe_applied = True
        resp = await self._call(self._kv.Txn, req, on_retry=retrying)
        if resp.succeeded:
            return resp.header.revision
        if maybe_applied and req.compare and await self._stands(writes):
            return resp.header.revision
        return None

    async def _stands(self, writes: Sequence[Write]) -> bool:
        """Whether every write of an earlier, unanswered attempt is what the store holds now."""
        got = await self._read(
            [w.key for w in writes if not (isinstance(w, Delete) and w.prefix)], [], stale_ok=False
        )
        for w in writes:
            if isinstance(w, Put):
                e = got.entries.get(w.key)
                if e is None or e.value != w.value or e.lease != w.lease:
                    return False
            elif not w.prefix and got.entries.get(w.key) is not None:
                return False
        return True

    async def index(self) -> int:
        resp = await self._range(rpc.RangeRequest(key=NAMESPACE, count_only=True))
        return max(1, resp.header.revision)

    def seen(self) -> int:
        return self.feed.last_index

    async def wait(
        self, prefixes: Sequence[str], index: int, timeout: float, keys: Sequence[str] = ()
    ) -> int:
        return await self.feed.wait(prefixes, index, timeout, keys)

    async def grant(self, ttl: float) -> int:
        resp = await self._call(self._lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=max(1, round(ttl))))
        if resp.error:
            raise StoreUnavailable(f"etcd lease grant: {resp.error}")
        return resp.ID

    async def keepalive(self, lease: int) -> bool:
        try:
            stream = self._lease.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]), timeout=CALL_TIMEOUT
            )
            async for reply in stream:
                return reply.TTL > 0
        except grpc.aio.AioRpcError as e:
            raise StoreUnavailable(f"etcd lease keepalive: {e.details()}") from e
        except TimeoutError as e:
            raise StoreUnavailable(f"etcd lease keepalive: no answer within {CALL_TIMEOUT:.0f}s") from e
        return False

    async def revoke(self, lease: int) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    async def _watch_loop(self, start: int) -> None:
        """Feeds every change in our namespace to the ChangeFeed, resuming after the last one seen. The
        watch runs in a thread of its own on a synchronous channel: read on the event loop, it got one
        message per loop turn, and under a cluster's write load it fell seconds behind (so did every
        blocked reader). The thread hands the loop whatever arrived meanwhile in one callback. When etcd
        has compacted the revisions we missed, nobody can know what changed there: every blocked reader
        wakes to re-read (Consul allows a spurious wake-up), and the watch starts again from now.
        Cancelling this coroutine stops the thread."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch_thread, args=(start, stop, loop), name="etcd-watch", daemon=True
        )
        thread.start()
        try:
            await loop.create_future()  # until cancelled
        finally:
            stop.set()
            call = self._watch_call
            if call is not None:
                call.cancel()

    def _watch_thread(self, start: int, stop: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
        channel = grpc.insecure_channel(
            "ipv4:" + ",".join(self.endpoints), options=[("grpc.lb_policy_name", "round_robin"), *RECONNECT]
        )
        watch, kv = rpc.WatchStub(channel), rpc.KVStub(channel)
        last = start
        try:
            while not stop.is_set():
                done = threading.Event()
                req = rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=NAMESPACE, range_end=_end(NAMESPACE), start_revision=last + 1
                    )
                )

                def requests(first: rpc.WatchRequest = req, done: threading.Event = done):
                    yield first
                    while not (stop.is_set() or done.is_set()):
                        done.wait(1.0)

                try:
                    call = watch.Watch(requests())
                    self._watch_call = call
                    if stop.is_set():
                        call.cancel()
                    for resp in call:
                        if resp.compact_revision or resp.canceled:
                            head = kv.Range(
                                rpc.RangeRequest(key=NAMESPACE, count_only=True), timeout=CALL_TIMEOUT
                            )
                            last = max(1, head.header.revision)
                            self._deliver(loop, ("resync", last))
                            call.cancel()
                            break
                        changes = [
                            (
                                ev.kv.mod_revision,
                                ev.kv.key[len(NAMESPACE) :].decode(errors="replace"),
                                None if ev.type == rpc.Event.DELETE else ev.kv,
                            )
                            for ev in resp.events
                        ]
                        if changes:
                            last = changes[-1][0]
                            self._deliver(loop, ("changes", changes))
                        elif resp.header.revision > last and not resp.created:
                            last = resp.header.revision
                except Exception:  # a lost member, a restart, a cancel: look again from `last`
                    if not stop.is_set():
                        stop.wait(0.2)
                finally:
                    done.set()
        finally:
            channel.close()

    def _deliver(self, loop: asyncio.AbstractEventLoop, item: tuple[str, Any]) -> None:
        """From the watch thread: queue `item` and, unless a flush is already on its way, ask the loop
        for one."""
        with self._pending_lock:
            self._pending.append(item)
            if self._flush_due:
                return
            self._flush_due = True
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody is waiting any more
            loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._pending_lock:
            items, self._pending, self._flush_due = self._pending, [], False
        batch: list[tuple[int, str]] = []
        for kind, value in items:
            if kind == "changes":
                for revision, key, kv in value:  # the values feed the update cache
                    batch.append((revision, key))
                    known = self._hints.get(key)
                    if known is not None and known[1] >= revision:
                        continue  # already known (the store's own write, mostly)
                    self._hint(key, None if kv is None else self._entry(kv), revision)
                continue
            self.feed.publish(batch)
            batch = []
            self.feed.resync(value)
        self.feed.publish(batch)

    async def close(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        tasks = [t for t in (self._watcher, self._recovering, self._probing, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for ch in self._probe_channels.values():
            await ch.close()
        await self._channel.close()
