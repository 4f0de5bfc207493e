"""The cluster store: etcd v3 over gRPC (aetcd's generated stubs on one grpc.aio channel).

The channel names every member and balances round-robin, so a stopped member is routed around.
Every call has a deadline: without quorum etcd does not answer, and the user gets StoreUnavailable
saying so instead of a hang. Entry indexes are etcd revisions (create_revision, mod_revision), so
Consul's indexes survive a manager restart unchanged. One watch over the store's namespace feeds
the ChangeFeed that blocking queries wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc
from aetcd import rpc

from shoal.errors import StoreUnavailable
from shoal.registry.store.base import ChangeFeed, Entry

NAMESPACE = b"/shoal/"
CALL_TIMEOUT = 2.0  # one attempt
RETRY_FOR = 8.0  # all attempts: a lost member or a leader election is over well within this


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
            kv.key[len(NAMESPACE) :].decode(), kv.value, kv.create_revision, kv.mod_revision, kv.lease
        )

    async def _call(self, method, request):
        """One RPC, each attempt with a short deadline, retried while a lost member's connections are
        replaced or a new leader is elected; past RETRY_FOR the cluster has no quorum and we say so.
        (A retried write that had in fact been applied is applied again: puts are idempotent; a CAS
        then reports failure although its value stands.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR
        while True:
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
                    continue
                if retryable:
                    raise StoreUnavailable(
                        f"etcd did not answer within {RETRY_FOR:.0f}s ({e.details() or code.name}); "
                        f"most of its members ({', '.join(self.endpoints)}) may be down, so it has no "
                        "quorum: bring them back"
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
        k = self._k(key)
        cmp = rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=k, mod_revision=index)
        op = rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value, lease=lease))
        resp = await self._call(self._kv.Txn, rpc.TxnRequest(compare=[cmp], success=[op]))
        return resp.header.revision if resp.succeeded else None

    async def delete(self, key: str, *, index: int | None = None) -> int | None:
        k = self._k(key)
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
        cmps = [rpc.Compare(result=rpc.Compare.GREATER, target=rpc.Compare.VERSION, key=k, version=0)]
        if index is not None:
            cmps.append(
                rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=k, mod_revision=index)
            )
        resp = await self._call(self._kv.Txn, rpc.TxnRequest(compare=cmps, success=[op]))
        return resp.header.revision if resp.succeeded else None

    async def delete_prefix(self, prefix: str) -> int | None:
        k = self._k(prefix)
        resp = await self._call(self._kv.DeleteRange, rpc.DeleteRangeRequest(key=k, range_end=_end(k)))
        return resp.header.revision if resp.deleted else None

    async def index(self) -> int:
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=NAMESPACE, count_only=True))
        return max(1, resp.header.revision)

    async def wait(self, prefixes: Sequence[str], index: int, timeout: float) -> int:
        return await self.feed.wait(prefixes, index, timeout)

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
        return False

    async def revoke(self, lease: int) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    async def _watch_loop(self, start: int) -> None:
        """Feeds every change in our namespace to the ChangeFeed, resuming after the last one seen."""
        last = start
        while True:
            try:
                req = rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=NAMESPACE, range_end=_end(NAMESPACE), start_revision=last + 1
                    )
                )
                queue: asyncio.Queue[rpc.WatchRequest] = asyncio.Queue()
                await queue.put(req)

                async def requests(q: asyncio.Queue[rpc.WatchRequest] = queue):
                    while True:
                        yield await q.get()

                async for resp in self._watch.Watch(requests()):
                    changes = [
                        (ev.kv.mod_revision, ev.kv.key[len(NAMESPACE) :].decode()) for ev in resp.events
                    ]
                    if changes:
                        last = changes[-1][0]
                        self.feed.publish(changes)
                    elif resp.header.revision > last and not resp.created:
                        last = resp.header.revision
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        await self._channel.close()
