"""One contract, two stores: every assertion runs on SQLite and on a real etcd."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from shoal.registry.store import open_store
from tests.etcd import single_etcd


@pytest.fixture(scope="module")
def etcd_endpoint():
    with single_etcd() as ep:
        yield ep


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/registry.db"
    # a fresh namespace per test: the namespace is fixed, so wipe it
    ep = request.getfixturevalue("etcd_endpoint")

    async def wipe():
        s = await open_store(f"etcd://{ep}")
        await s.delete_prefix("")
        await s.close()

    asyncio.run(wipe())
    return f"etcd://{ep}"


def run(url, fn):
    async def main():
        store = await open_store(url)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_put_then_get_returns_the_value_and_its_indexes(store_url):
    async def fn(s):
        i1 = await s.put("a/b", b"one")
        e = await s.get("a/b")
        assert (e.key, e.value, e.create_index, e.modify_index) == ("a/b", b"one", i1, i1)
        i2 = await s.put("a/b", b"two")
        e = await s.get("a/b")
        assert e.value == b"two" and e.create_index == i1 and e.modify_index == i2 > i1
        assert await s.index() >= i2
        assert await s.get("a/nope") is None

    run(store_url, fn)


def test_range_is_sorted_and_includes_the_prefix_itself(store_url):
    async def fn(s):
        for k in ("web/b", "web", "web/a", "webx", "other"):
            await s.put(k, k.encode())
        assert [e.key for e in await s.range("web")] == ["web", "web/a", "web/b", "webx"]
        assert [e.key for e in await s.range("web/")] == ["web/a", "web/b"]
        assert [e.key for e in await s.range("")] == ["other", "web", "web/a", "web/b", "webx"]

    run(store_url, fn)


def test_cas_zero_creates_only_and_a_stale_index_fails_without_bumping(store_url):
    async def fn(s):
        i1 = await s.cas("lock", b"x", 0)
        assert i1 is not None
        assert await s.cas("lock", b"y", 0) is None
        before = await s.index()
        assert await s.cas("lock", b"y", i1 - 1 if i1 > 1 else 999999) is None
        assert await s.index() == before
        i2 = await s.cas("lock", b"y", i1)
        assert i2 is not None and (await s.get("lock")).value == b"y"

    run(store_url, fn)


def test_delete_with_and_without_index_and_by_prefix(store_url):
    async def fn(s):
        i = await s.put("k", b"v")
        assert await s.delete("k", index=i + 100) is None
        assert await s.get("k") is not None
        assert await s.delete("k", index=i) is not None
        assert await s.get("k") is None
        assert await s.delete("k") is None
        for k in ("p/1", "p/2", "q"):
            await s.put(k, b"")
        assert await s.delete_prefix("p/") is not None
        assert [e.key for e in await s.range("")] == ["q"]

    run(store_url, fn)


def test_wait_wakes_on_a_change_under_the_prefix_only(store_url):
    async def fn(s):
        start = await s.index()

        async def writer():
            await asyncio.sleep(0.1)
            await s.put("other/x", b"1")
            await asyncio.sleep(0.1)
            return await s.put("watched/x", b"2")

        t0 = time.monotonic()
        w = asyncio.create_task(writer())
        woke = await s.wait(["watched/"], start, timeout=5)
        assert woke == await w
        assert 0.15 < time.monotonic() - t0 < 2

    run(store_url, fn)


def test_wait_sees_a_change_made_before_it_was_called(store_url):
    async def fn(s):
        start = await s.index()
        idx = await s.put("watched/y", b"1")
        await asyncio.sleep(0.05)  # etcd's watch delivers a few ms later
        assert await s.wait(["watched/"], start, timeout=2) == idx

    run(store_url, fn)


def test_wait_times_out_with_the_same_index(store_url):
    async def fn(s):
        start = await s.index()
        t0 = time.monotonic()
        assert await s.wait(["quiet/"], start, timeout=0.3) == start
        assert 0.25 < time.monotonic() - t0 < 1.5

    run(store_url, fn)


def test_wait_on_exact_keys_wakes_only_for_those_keys(store_url):
    """A blocking query waits on the one index key its answer depends on; keys that merely share its
    beginning (another service's index) do not wake it."""

    async def fn(s):
        start = await s.index()

        async def later():
            await asyncio.sleep(0.1)
            await s.put("index/service/web2", b"")
            await s.put("index/service/we", b"")
            await asyncio.sleep(0.1)
            return await s.put("index/service/web", b"")

        w = asyncio.create_task(later())
        woke = await s.wait([], start, 5, keys=["index/service/web"])
        assert woke == await w

    run(store_url, fn)


def test_waiters_that_time_out_or_wake_are_forgotten(store_url):
    async def fn(s):
        start = await s.index()
        quiet = [s.wait([], start, 0.2, keys=[f"quiet/{i}"]) for i in range(50)]
        quiet += [s.wait([f"quiet/{i}/"], start, 0.2) for i in range(50)]
        woken = [asyncio.ensure_future(s.wait(["loud/"], start, 5, keys=["loud/x"])) for _ in range(50)]
        await asyncio.sleep(0.05)
        idx = await s.put("loud/x", b"1")
        assert await asyncio.gather(*quiet) == [start] * 100
        assert await asyncio.gather(*woken) == [idx] * 50
        assert s.feed.waiting == 0

    run(store_url, fn)


def test_a_lease_not_kept_alive_deletes_its_keys(store_url):
    async def fn(s):
        lease = await s.grant(1)
        await s.put("session/a", b"x", lease=lease)
        await asyncio.sleep(0.6)
        assert await s.keepalive(lease)
        await asyncio.sleep(0.6)
        assert await s.get("session/a") is not None  # kept alive past its first TTL
        deadline = time.monotonic() + 5
        while await s.get("session/a") is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await s.get("session/a") is None
        assert not await s.keepalive(lease)

    run(store_url, fn)


def test_revoking_a_lease_deletes_its_keys_at_once(store_url):
    async def fn(s):
        lease = await s.grant(30)
        await s.put("session/b", b"x", lease=lease)
        await s.put("plain", b"y")
        await s.revoke(lease)
        assert await s.get("session/b") is None and await s.get("plain") is not None

    run(store_url, fn)


def test_concurrent_cas_lets_exactly_one_writer_win(store_url):
    async def fn(s):
        results = await asyncio.gather(*(s.cas("race", str(i).encode(), 0) for i in range(16)))
        assert sum(r is not None for r in results) == 1

    run(store_url, fn)


def test_sqlite_keeps_every_acknowledged_write_across_a_reopen():
    path = Path(tempfile.mkdtemp()) / "r.db"

    async def write():
        s = await open_store(f"sqlite://{path}")
        idx = await asyncio.gather(*(s.put(f"k/{i}", b"v") for i in range(200)))
        await s.close()
        return max(idx)

    last = asyncio.run(write())

    async def read():
        s = await open_store(f"sqlite://{path}")
        try:
            return len(await s.range("k/")), await s.index()
        finally:
            await s.close()

    assert asyncio.run(read()) == (200, last)


def test_txn_applies_every_write_at_one_index_or_nothing(store_url):
    from shoal.registry.store.base import Compare, Delete, Put

    async def fn(s):
        i0 = await s.put("svc/web", b"v0")
        await s.put("chk/web:1", b"old")
        idx = await s.txn(
            [Compare("svc/web", i0), Compare("chk/web:2", 0)],
            [Put("svc/web", b"v1"), Put("chk/web:2", b"new"), Delete("chk/web:1")],
        )
        assert idx is not None and idx > i0
        snap = await s.read(["svc/web", "chk/web:1", "chk/web:2"], ["chk/"])
        assert snap.entries["svc/web"].value == b"v1" and snap.entries["svc/web"].modify_index == idx
        assert snap.entries["chk/web:2"].create_index == idx and snap.entries["chk/web:1"] is None
        assert [e.key for e in snap.trees["chk/"]] == ["chk/web:2"] and snap.index == idx
        # one stale compare: nothing at all is written and the index stays
        before = await s.index()
        assert await s.txn([Compare("svc/web", i0)], [Put("svc/web", b"v2"), Put("other", b"x")]) is None
        assert await s.index() == before
        assert (await s.get("svc/web")).value == b"v1" and await s.get("other") is None

    run(store_url, fn)


def test_txn_tree_compare_fails_once_a_key_under_it_is_created_or_changed(store_url):
    from shoal.registry.store.base import Compare, Delete, Put

    async def fn(s):
        await s.put("held/s1/a", b"")
        snap = await s.read(prefixes=["held/s1/"])
        await s.put("held/s1/b", b"")  # created after the read
        assert await s.txn([Compare.tree("held/s1/", snap.index)], [Delete("held/s1/", prefix=True)]) is None
        snap = await s.read(prefixes=["held/s1/"])
        assert await s.txn([Compare.tree("held/s1/", snap.index)], [Delete("held/s1/", prefix=True)])
        assert await s.range("held/s1/") == []
        # an empty tree compares as unchanged
        assert await s.txn([Compare.tree("nothing/", 1)], [Put("x", b"1")]) is not None

    run(store_url, fn)


def test_txn_refuses_a_key_written_twice_or_under_a_deleted_prefix(store_url):
    from shoal.registry.store.base import Delete, Put

    async def fn(s):
        with pytest.raises(ValueError):
            await s.txn([], [Put("a", b"1"), Put("a", b"2")])
        with pytest.raises(ValueError):
            await s.txn([], [Delete("p/", prefix=True), Put("p/x", b"1")])

    run(store_url, fn)


def test_a_txn_wakes_waiters_on_every_key_it_wrote(store_url):
    from shoal.registry.store.base import Put

    async def fn(s):
        start = await s.index()
        w1 = asyncio.create_task(s.wait(["one/"], start, 5))
        w2 = asyncio.create_task(s.wait(["two/"], start, 5))
        await asyncio.sleep(0.05)
        idx = await s.txn([], [Put("one/a", b""), Put("two/b", b"")])
        assert await w1 == idx and await w2 == idx

    run(store_url, fn)


def test_a_second_sqlite_store_on_the_same_file_is_refused_naming_the_holder(tmp_path):
    import os

    from shoal.errors import StoreUnavailable

    url = f"sqlite://{tmp_path}/r.db"

    async def fn(s):
        with pytest.raises(StoreUnavailable) as err:
            await open_store(url)
        assert f"{tmp_path}/r.db" in err.value.message and f"pid {os.getpid()}" in err.value.message
        await s.put("still", b"mine")

    run(url, fn)
    run(url, lambda s: s.get("still"))  # closed: the lock went with it


def test_etcd_watch_resumes_after_compaction_and_blocked_readers_still_wake(etcd_endpoint):
    from aetcd import rpc

    async def fn(s):
        start = await s.index()
        s._watcher.cancel()  # the watch is away (a lost connection) ...
        blocked = asyncio.create_task(s.wait(["kv/"], start, 10))
        for i in range(5):  # ... while others write, and etcd compacts what it missed
            await s.put(f"kv/{i}", b"x")
        now = await s.index()
        await rpc.KVStub(s._channel).Compact(rpc.CompactionRequest(revision=now, physical=True), timeout=5)
        s._watcher = asyncio.get_running_loop().create_task(s._watch_loop(start))
        assert await asyncio.wait_for(blocked, 5) >= now  # woken to re-read, not left hanging
        later = asyncio.create_task(s.wait(["kv/"], now, 5))
        await asyncio.sleep(0.1)
        idx = await s.put("kv/after", b"y")
        assert await later == idx  # and the watch is live again

    run(f"etcd://{etcd_endpoint}", fn)


def test_a_read_of_more_keys_than_one_etcd_txn_takes_is_still_one_snapshot(store_url):
    from shoal.registry.store.base import Put

    async def fn(s):
        keys = [f"many/{i:03}" for i in range(300)]
        for i in range(0, 300, 100):
            await s.txn([], [Put(k, b"1") for k in keys[i : i + 100]])
        before = await s.index()
        snap = await s.read(keys, ["many/"])
        assert snap.index == before and all(snap.entries[k] is not None for k in keys)
        assert len(snap.trees["many/"]) == 300

    run(store_url, fn)
