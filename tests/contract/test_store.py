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
