"""The cluster store: etcd v3 over gRPC (aetcd's generated stubs on one grpc.aio channel).

The channel names every member and balances round-robin, so a stopped member is routed around.
Every call has a deadline: without quorum etcd does not answer, and the user gets StoreUnavailable
saying so instead of a hang. Entry indexes are etcd revisions (create_revision, mod_revision), so
Consul's indexes survive a manager restart unchanged. One watch over the store's namespace feeds
the ChangeFeed that blocking queries wait on; when etcd has compacted past it (the watch was away), it
wakes every blocked reader to re-read and resumes from the current revision.

Retries: a write whose first attempt timed out may have been applied. A plain put is retried as it
is; a transaction with compares is retried too, but when the retry's compares fail the store reads back
what it wrote and reports success if its writes stand — so a retried CAS or acquire never answers false
while its value holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
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

NAMESPACE = b"/shoal/"
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
CALL_TIMEOUT = 2.0  # one attempt
RETRY_FOR = 8.0  # all attempts: a lost member or a leader election is over well within this
UPDATE_ATTEMPTS = 100  # reads and compare-and-sets of one `update` against concurrent writers


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
            target, options=[("grpc.lb_policy_name", "round_robin"), ("grpc.enable_retries", 1)]
        )
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self.feed: ChangeFeed
        self._watcher: asyncio.Task[None] | None = None
        self._watch_call: Any = None  # the watch thread's current call, cancelled to stop it
        self._pending: list[tuple[str, Any]] = []  # what the watch thread saw, for the loop
        self._pending_lock = threading.Lock()
        self._flush_due = False

    @classmethod
    async def open(cls, endpoints: Sequence[str]) -> EtcdStore:
        store = cls(endpoints)
        start = await store.index()
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

    async def _call(self, method, request, on_retry=None):
        """One RPC, each attempt with a short deadline, retried while a lost member's connections are
        replaced or a new leader is elected; past RETRY_FOR the cluster has no quorum and we say so.
        `on_retry` is called before each attempt after a failed one (an attempt that timed out may have
        been applied: see `txn`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR
        retried = False
        while True:
            if retried and on_retry:
                on_retry()
            try:
                return await method(request, timeout=min(CALL_TIMEOUT, max(0.1, deadline - loop.time())))
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
                if retryable and loop.time() < deadline - 0.1:
                    await asyncio.sleep(0.05)
                    retried = True
                    continue
                if retryable:
                    raise StoreUnavailable(
                        f"etcd did not answer within {RETRY_FOR:.0f}s ({e.details() or code.name}); "
                        f"most of its members ({', '.join(self.endpoints)}) may be down, so it has no "
                        "quorum: bring them back"
                    ) from e
                if "too many operations" in details:
                    raise TooLarge(
                        f"etcd refused the transaction: {e.details()} (etcd's --max-txn-ops, 128 by "
                        "default); split it into smaller ones"
                    ) from e
                raise StoreUnavailable(f"etcd: {e.details() or code.name}") from e

    async def get(self, key: str) -> Entry | None:
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=self._k(key)))
        return self._entry(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str) -> list[Entry]:
        k = self._k(prefix)
        resp = await self._call(
            self._kv.Range,
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
        for _ in range(UPDATE_ATTEMPTS):  # read, then compare-and-set on what was read
            old = await self.get(key)
            value = fn(old)
            if value is None:
                return None
            index = await self.cas(key, value, old.modify_index if old else 0)
            if index is not None:
                return index
        raise ServerError(f"could not write {key!r}: too many concurrent writers; try again")

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
        ops = [self._range_op(k, False) for k in keys] + [self._range_op(p, True) for p in prefixes]
        resp = await self._call(self._kv.Txn, rpc.TxnRequest(success=ops[:MAX_TXN_OPS]))
        ranges = [r.response_range.kvs for r in resp.responses]
        for op in ops[MAX_TXN_OPS:]:  # past etcd's limit for one Txn: the same revision, range by range
            op.request_range.revision = resp.header.revision
            ranges.append((await self._call(self._kv.Range, op.request_range)).kvs)
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
        got = await self.read([w.key for w in writes if not (isinstance(w, Delete) and w.prefix)])
        for w in writes:
            if isinstance(w, Put):
                e = got.entries.get(w.key)
                if e is None or e.value != w.value or e.lease != w.lease:
                    return False
            elif not w.prefix and got.entries.get(w.key) is not None:
                return False
        return True

    async def index(self) -> int:
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=NAMESPACE, count_only=True))
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
            "ipv4:" + ",".join(self.endpoints), options=[("grpc.lb_policy_name", "round_robin")]
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
                            (ev.kv.mod_revision, ev.kv.key[len(NAMESPACE) :].decode(errors="replace"))
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
                batch += value
                continue
            self.feed.publish(batch)
            batch = []
            self.feed.resync(value)
        self.feed.publish(batch)

    async def close(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        await self._channel.close()
