"""The SQLite store's group commit, on a real database file and its real writer thread: writes that
queue while a commit is under way go in one transaction, and one of them that fails fails alone -- the
others commit, the index counts only what was written, and the change feed names only those keys."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import pytest

from shoal.errors import StoreUnavailable
from shoal.registry.store.sqlite import SQLiteStore


async def _grouped(store: SQLiteStore, bad_at: int | None, n: int = 40) -> list[object]:
    """`n` writes queued behind a commit held open, so the writer takes them as one group; the one at
    `bad_at` names a lease that does not exist."""
    held, release = threading.Event(), threading.Event()

    def hold(_c: object, _t: object) -> None:
        held.set()
        release.wait(10)

    blocker = asyncio.ensure_future(store._write(hold))
    await asyncio.to_thread(held.wait, 10)
    writes = [
        asyncio.ensure_future(store.put(f"g/{i:03d}", b"v%d" % i, lease=999_999 if i == bad_at else 0))
        for i in range(n)
    ]
    await asyncio.sleep(0.05)  # every write is in the writer's queue
    commits = store.commits
    release.set()
    await blocker
    got = await asyncio.gather(*writes, return_exceptions=True)
    assert store.commits == commits + 2  # the held one, then all 40 in one group
    return got


@pytest.mark.parametrize("bad_at", [None, 0, 17, 39])
def test_a_failing_write_fails_alone_in_its_group(bad_at: int | None) -> None:
    async def run() -> None:
        store = await SQLiteStore.open(str(Path(tempfile.mkdtemp()) / "registry.db"))
        try:
            start = await store.index()
            got = await _grouped(store, bad_at)
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
