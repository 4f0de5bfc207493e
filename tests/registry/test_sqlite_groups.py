"""The SQLite store's group commit, on a real database file: writes queued together go in one
transaction, and one of them that fails fails alone -- the others commit, the index counts only what
was written, and the change feed names only those keys. Both ways a group commits are run: in the event
loop's thread (a fast disk) and in the committer thread (a slow one), where reads go on meanwhile and
never see the group before it is durable."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shoal.errors import StoreUnavailable
from shoal.registry.store.sqlite import INLINE_COMMIT_S, WRITE_LOCK_WAIT_S, SQLiteStore

SLOW = INLINE_COMMIT_S * 500  # a recent commit time that sends commits to the committer thread


async def _open() -> SQLiteStore:
    return await SQLiteStore.open(str(Path(tempfile.mkdtemp()) / "registry.db"))


@pytest.mark.parametrize("disk", ["fast", "slow"])
@pytest.mark.parametrize("bad_at", [None, 0, 17, 39])
def test_a_failing_write_fails_alone_in_its_group(bad_at: int | None, disk: str) -> None:
    async def run() -> None:
        store = await _open()
        try:
            if disk == "slow":
                store._commit_s = SLOW
            start, commits = await store.index(), store.commits
            # 40 writes queued in one turn of the loop: one group; the one at bad_at names no lease
            got = await asyncio.gather(
                *(
                    store.put(f"g/{i:03d}", b"v%d" % i, lease=999_999 if i == bad_at else 0)
                    for i in range(40)
                ),
                return_exceptions=True,
            )
            assert store.commits == commits + 1
            for i, r in enumerate(got):
                if i == bad_at:
                    assert isinstance(r, StoreUnavailable) and "lease 999999 not found" in str(r)
                else:
                    assert isinstance(r, int)
            written = [i for i in range(len(got)) if i != bad_at]
            assert sorted(r for r in got if isinstance(r, int)) == list(
                range(start + 1, start + 1 + len(written))
            )
            assert await store.index() == start + len(written)
            entries = await store.range("g/")
            assert [e.key for e in entries] == [f"g/{i:03d}" for i in written]
            assert all(e.value == b"v%d" % int(e.key[2:]) for e in entries)
            # the change feed has reached the group's last write: a blocking reader wakes on it
            assert store.seen() == start + len(written)
            assert await store.wait(["g/"], start, 1.0) > start
        finally:
            await store.close()

    asyncio.run(run())


def test_on_a_slow_disk_reads_go_on_while_a_commit_waits_and_see_it_only_once_durable() -> None:
    async def run() -> None:
        store = await _open()
        try:
            await store.put("k", b"old")
            store._commit_s = SLOW
            gate, commit = threading.Event(), store._commit

            def stuck_fsync() -> Exception | None:  # the committer thread's COMMIT, held like a slow disk
                if threading.current_thread() is store._writer:
                    gate.wait(10)
                return commit()

            store._commit = stuck_fsync  # type: ignore[method-assign]
            write = asyncio.ensure_future(store.put("k", b"new"))
            later = asyncio.ensure_future(store.put("other", b"queued"))
            await asyncio.sleep(0.2)
            assert not write.done() and not later.done()
            got = await store.get("k")  # the loop still answers, with what is committed
            assert got is not None and got.value == b"old"
            gate.set()
            index = await write
            await later  # queued behind the held group: the next group, once that one answered
            got = await store.get("k")
            assert got is not None and got.value == b"new" and got.modify_index == index
        finally:
            gate.set()
            await store.close()

    asyncio.run(run())


def test_close_commits_what_was_accepted_and_refuses_what_comes_after() -> None:
    async def run() -> None:
        path = str(Path(tempfile.mkdtemp()) / "registry.db")
        store = await SQLiteStore.open(path)
        writes = [asyncio.ensure_future(store.put(f"c/{i}", b"x")) for i in range(10)]
        await asyncio.sleep(0)  # accepted: queued for the next group
        await store.close()
        assert all(isinstance(w.result(), int) for w in writes)
        with pytest.raises(StoreUnavailable, match="closing"):
            await store.put("c/late", b"x")
        again = await SQLiteStore.open(path)
        try:
            assert [e.key for e in await again.range("c/")] == [f"c/{i}" for i in range(10)]
        finally:
            await again.close()

    asyncio.run(run())


def test_a_program_holding_the_files_write_lock_fails_writes_at_once_and_the_loop_goes_on() -> None:
    async def run() -> None:
        path = str(Path(tempfile.mkdtemp()) / "registry.db")
        store = await SQLiteStore.open(path)
        other = sqlite3.connect(path, isolation_level=None)  # behind the registry's back
        try:
            await store.put("k", b"v")
            other.execute("BEGIN IMMEDIATE")
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match="database is locked"):
                await store.put("k", b"blocked")
            assert time.monotonic() - t0 < 10 * WRITE_LOCK_WAIT_S  # not the 30 s busy wait
            got = await store.get("k")
            assert got is not None and got.value == b"v"  # nothing of the failed group is there
            other.execute("ROLLBACK")
            await store.put("k", b"after")  # the next group goes through
            got = await store.get("k")
            assert got is not None and got.value == b"after"
        finally:
            other.close()
            await store.close()

    asyncio.run(run())
