"""The embedded store: SQLite in WAL mode with group commit.

Every write is acknowledged only after the transaction holding it is fsynced (synchronous=FULL),
so each acknowledged write survives kill -9 and power loss. Every write queued while the last commit
ran goes into the next group, whose statements and COMMIT run in the event loop's thread (the COMMIT in
a committer thread once the disk is slow: see `_flush`): one fsync serves many writes, which is what
lifts PUT/s past the single-fsync ceiling. Reads run in the event loop's thread on their own
connection (WAL readers do not block the writer). Leases live in the file with their TTL; their
deadlines live in memory and restart from `now + ttl` when the store opens, as etcd does after a
leader change.

One process owns the file: the store takes an exclusive flock on it when it opens, so a second registry
on the same file is refused (naming the pid that holds it) instead of both writing. The index is read
inside each write transaction, and a `txn` runs its compares and its writes inside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import StoreUnavailable
from shoal.registry.faults import crash_point
from shoal.registry.store.base import (
    ChangeFeed,
    Compare,
    Entry,
    Put,
    Snapshot,
    Write,
    check_writes,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, create_index INTEGER NOT NULL,
    modify_index INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('index', 1);
"""
MAX_BATCH = 512
# While COMMIT (the fsync) takes less than this, it runs in the event loop's thread: see `_flush`.
INLINE_COMMIT_S = 0.002
WRITE_LOCK_WAIT_S = 0.1  # the most a group waits for the file's write lock (see __init__)
_END = object()
# A test hook, set only by the durability test to prove it catches a store that acknowledges unsynced
# writes; nothing else sets it.
_SYNCHRONOUS = os.environ.get("SHOAL_SQLITE_SYNCHRONOUS", "FULL").upper()
if _SYNCHRONOUS not in ("FULL", "EXTRA", "NORMAL", "OFF"):
    raise SystemExit(f"SHOAL_SQLITE_SYNCHRONOUS={_SYNCHRONOUS!r}: must be FULL, EXTRA, NORMAL or OFF")
_COLS = "key, value, create_index, modify_index, lease"


@dataclass
class _Op:
    fn: Callable[[sqlite3.Connection, _Txn], Any]
    fut: asyncio.Future[Any]


class _OpFailed(Exception):
    """An op of an unguarded group raised: the group runs again, each op in a savepoint."""


@dataclass
class _Txn:
    """The index counter and the changes of one group commit."""

    index: int
    changes: list[tuple[int, str]] = field(default_factory=list)

    def bump(self, key: str) -> int:
        self.index += 1
        self.changes.append((self.index, key))
        return self.index


def _prefix_end(prefix: str) -> str:
    return prefix + "\U0010ffff"


def _holder(path: str) -> str:
    """Who holds the flock on `path`, from /proc/locks (Linux): "pid N", or a plain phrase."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            f = line.split()
            if len(f) >= 6 and f[1] == "FLOCK" and f[2] != "->" and f[5] == dev:
                return f"pid {f[4]}"
    return "another process"


def _lock(path: str) -> int:
    """An exclusive flock on the database file itself, held while the store is open."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StoreUnavailable(f"sqlite store {path}: cannot lock it: {e.strerror}") from None
        raise StoreUnavailable(
            f"sqlite store {path} is in use by {_holder(path)} (another registry holds its lock); "
            "stop that registry first, or give this one its own --store"
        ) from None
    return fd


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock_fd = _lock(path)
        self._loop = asyncio.get_running_loop()
        self._pending: list[_Op] = []  # writes waiting for the next group commit
        self._committing = False  # a group's COMMIT is under way (inline or in the committer thread)
        self._flush_due = False
        self._closing = False
        self._commit_s = 0.0  # COMMIT's recent time (moving average): inline while under INLINE_COMMIT_S
        self._drained: asyncio.Event | None = None
        self._commits: queue.SimpleQueue[tuple[list[_Op], _Txn, list[Any], float] | object] = (
            queue.SimpleQueue()
        )
        self._reader = self._connect()
        self._reader.executescript(_SCHEMA)
        self._reader.commit()
        self._index = self._reader.execute("SELECT value FROM meta WHERE name='index'").fetchone()[0]
        self.feed = ChangeFeed(self._index)
        self._deadlines: dict[int, float] = {
            lid: time.monotonic() + ttl for lid, ttl in self._reader.execute("SELECT id, ttl FROM leases")
        }
        self._ttls: dict[int, float] = dict(self._reader.execute("SELECT id, ttl FROM leases").fetchall())
        self.commits = 0  # group commits made (each one fsync) and the writes they acknowledged:
        self.committed = 0  # committed / commits is the group size (figures for shoal.metrics)
        self.commit_seconds = 0.0  # time in those commits, BEGIN to fsync'd COMMIT
        self._conn = self._connect()  # the writer's: statements in the loop's thread, COMMIT there or not
        # Its statements run in the loop's thread, so it never waits long for the file's write lock: only
        # another program writing to the file behind the registry's back can hold it (the flock keeps
        # other registries out), and the loop must not stand still behind that for the 30 s of
        # `_connect`; such a group fails at once, naming the lock, and the next one tries again.
        self._conn.execute(f"PRAGMA busy_timeout={int(WRITE_LOCK_WAIT_S * 1000)}")
        self._writer = threading.Thread(target=self._commit_loop, name=f"sqlite-commit:{path}", daemon=True)
        self._writer.start()
        self._reaper = self._loop.create_task(self._reap_leases())

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return cls(path)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"sqlite store {path}: {e}") from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS}")
        return conn

    # --- writes: grouped in the loop's thread, committed there while the disk is fast -------------

    async def _write(self, fn: Callable[[sqlite3.Connection, _Txn], Any]) -> Any:
        if self._closing:
            raise StoreUnavailable(f"sqlite store {self.path} is closing")
        fut = self._loop.create_future()
        self._pending.append(_Op(fn, fut))
        if not self._committing:
            self._flush_soon()
        return await fut

    def _flush_soon(self) -> None:
        """The next group starts two loop turns from now: the requests read in this turn and the next
        queue their writes first (a request's bytes arrive in one turn, its handler runs in the next), so
        a group holds about every client in flight instead of the few whose handlers ran first."""
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._loop.call_soon, self._flush)

    def _flush(self) -> None:
        """Start the next group commit: every write queued since the last one began. Its statements run
        here, in the loop's thread (a few microseconds each). COMMIT, the fsync, runs here too while
        commits take under INLINE_COMMIT_S, and in the committer thread otherwise, where the writes
        that arrive meanwhile form the next group.

        Why not a writer thread for all of it (as before): each statement gives up the GIL and must take
        it back from a loop busy serving requests (60 us an op and 200 us a BEGIN, where the statement
        takes 5), and on a loaded 2-core machine handing COMMIT to a thread and its answer back cost two
        wake-ups, 400 us, twice the fsync itself (benchmarks/registry_kv.py: 5,700 PUT/s that way,
        6,700 so on the same loop, 7,200-7,500 on uvloop). The price: while commits stay fast, the loop
        waits out each fsync (0.2-0.3 ms here); once a disk slows down past INLINE_COMMIT_S, commits
        move to the thread and reads and blocking queries stop waiting on it, until it is fast again. A
        disk that hangs outright in the middle of an inline commit stops the whole registry, its reads
        too (with the writer thread before, it stopped every write and the TTL checks they carry)."""
        self._flush_due = False
        if self._committing or not self._pending:
            return
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        conn, t0 = self._conn, time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:  # the usual group, where no op fails: each op straight into the one transaction
                txn, results = self._apply(conn, batch, guarded=False)
            except _OpFailed:  # one failed: the group again, each op in a savepoint, failing alone
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                txn, results = self._apply(conn, batch, guarded=True)
            conn.execute("UPDATE meta SET value=? WHERE name='index'", (txn.index,))
        except Exception as e:  # the file refused it (disk full, I/O error): nothing of it is written
            self._failed(batch, e)
            return
        self._committing = True
        if self._commit_s < INLINE_COMMIT_S:
            self._committed(batch, txn, results, t0, self._commit())
        else:
            self._commits.put((batch, txn, results, t0))

    def _commit(self) -> Exception | None:
        """COMMIT: the fsync, after which the group is durable; its time feeds the inline-or-thread
        choice (a moving average, so one slow checkpoint does not move every later commit)."""
        t = time.perf_counter()
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            return e
        finally:
            self._commit_s += (time.perf_counter() - t - self._commit_s) * 0.2
        return None

    def _commit_loop(self) -> None:
        """The committer thread, for commits while the disk is slow: COMMIT (the GIL is free during the
        fsync), then the answer back to the loop. One group at a time: the loop starts the next only
        after this one is answered."""
        while (job := self._commits.get()) is not _END:
            batch, txn, results, t0 = job  # type: ignore[misc]
            err = self._commit()
            self._loop.call_soon_threadsafe(self._committed, batch, txn, results, t0, err)

    def _committed(
        self,
        batch: list[_Op],
        txn: _Txn,
        results: list[tuple[_Op, bool, Any]],
        t0: float,
        err: Exception | None,
    ) -> None:
        self._committing = False
        if err is not None:
            self._failed(batch, err)
            return
        self._index = txn.index
        self.commits += 1
        self.committed += len(batch)
        self.commit_seconds += time.perf_counter() - t0
        self._resolve(results, txn.changes, txn.index)
        self._next()

    def _failed(self, batch: list[_Op], e: Exception) -> None:
        """A group the file refused: rolled back, every write in it failed, the next group goes on."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        err = StoreUnavailable(f"sqlite store {self.path}: {e}")
        self._resolve([(op, False, err) for op in batch], [], None)
        self._next()

    def _next(self) -> None:
        """After a group is answered: the writes queued meanwhile form the next one, or, with none left,
        a closing store may go on closing."""
        if self._pending:
            self._flush_soon()
        elif self._drained is not None:
            self._drained.set()

    @staticmethod
    def _apply(
        conn: sqlite3.Connection, batch: list[_Op], guarded: bool
    ) -> tuple[_Txn, list[tuple[_Op, bool, Any]]]:
        """The group's ops in the open transaction. Unguarded, the first op that fails raises _OpFailed
        (the caller rolls back and runs them again guarded); guarded, each runs in a savepoint, and one
        that fails is rolled back alone while the rest of the group commits. Two savepoint statements an
        op were a fifth of the writer's time, for a failure most groups never see. Ops are functions of
        the connection and the txn only, so running a group twice writes what running it once would."""
        # the index as the file has it, read under the write lock
        txn = _Txn(index=conn.execute("SELECT value FROM meta WHERE name='index'").fetchone()[0])
        results: list[tuple[_Op, bool, Any]] = []
        for op in batch:
            if not guarded:
                try:
                    results.append((op, True, op.fn(conn, txn)))
                except Exception as e:
                    raise _OpFailed from e
                continue
            conn.execute("SAVEPOINT op")
            mark = (txn.index, len(txn.changes))
            try:
                results.append((op, True, op.fn(conn, txn)))
                conn.execute("RELEASE op")
            except Exception as e:  # one bad op fails alone; the rest of the group commits
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                txn.index, txn.changes[mark[1] :] = mark[0], []
                results.append((op, False, e))
        return txn, results

    def _resolve(
        self, results: list[tuple[_Op, bool, Any]], changes: list[tuple[int, str]], index: int | None
    ):
        self.feed.publish(changes)
        for op, ok, value in results:
            if op.fut.done():
                continue
            if ok:
                op.fut.set_result(value)
            else:
                op.fut.set_exception(value)

    # --- the Store contract -----------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        row = self._reader.execute(f"SELECT {_COLS} FROM kv WHERE key=?", (key,)).fetchone()
        return Entry(*row) if row else None

    async def range(self, prefix: str) -> list[Entry]:
        return self._range(self._reader, prefix)

    @staticmethod
    def _range(c: sqlite3.Connection, prefix: str) -> list[Entry]:
        rows = c.execute(
            f"SELECT {_COLS} FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, _prefix_end(prefix))
        ).fetchall()
        return [Entry(*r) for r in rows]

    async def read(self, keys: Sequence[str] = (), prefixes: Sequence[str] = ()) -> Snapshot:
        c = self._reader
        c.execute("BEGIN")  # one WAL read snapshot for every select below
        try:
            index = c.execute("SELECT value FROM meta WHERE name='index'").fetchone()[0]
            entries = {}
            for k in keys:
                row = c.execute(f"SELECT {_COLS} FROM kv WHERE key=?", (k,)).fetchone()
                entries[k] = Entry(*row) if row else None
            trees = {p: self._range(c, p) for p in prefixes}
        finally:
            c.execute("COMMIT")
        return Snapshot(index, entries, trees)

    async def txn(self, compares: Sequence[Compare], writes: Sequence[Write]) -> int | None:
        check_writes(writes)
        return await self._write(lambda c, t: self._txn(c, t, compares, writes))

    def _txn(
        self, c: sqlite3.Connection, t: _Txn, compares: Sequence[Compare], writes: Sequence[Write]
    ) -> int | None:
        for cmp in compares:
            if cmp.prefix:
                newer = c.execute(
                    "SELECT 1 FROM kv WHERE key >= ? AND key < ? AND modify_index > ? LIMIT 1",
                    (cmp.key, _prefix_end(cmp.key), cmp.modify_index),
                ).fetchone()
                if newer:
                    return None
            else:
                row = c.execute("SELECT modify_index FROM kv WHERE key=?", (cmp.key,)).fetchone()
                if (row[0] if row else 0) != cmp.modify_index:
                    return None
        idx = t.index + 1
        changed: list[str] = []
        for i, w in enumerate(writes):
            if i == 1:
                crash_point("store-txn-mid", (x.key for x in writes))
            if isinstance(w, Put):
                if w.lease and not c.execute("SELECT 1 FROM leases WHERE id=?", (w.lease,)).fetchone():
                    raise StoreUnavailable(f"lease {w.lease} not found (expired or revoked)")
                c.execute(
                    "INSERT INTO kv VALUES (?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                    "modify_index=excluded.modify_index, lease=excluded.lease",
                    (w.key, w.value, idx, idx, w.lease),
                )
                changed.append(w.key)
            elif w.prefix:
                end = _prefix_end(w.key)
                gone = [
                    r[0] for r in c.execute("SELECT key FROM kv WHERE key >= ? AND key < ?", (w.key, end))
                ]
                c.execute("DELETE FROM kv WHERE key >= ? AND key < ?", (w.key, end))
                changed += gone
            elif c.execute("DELETE FROM kv WHERE key=?", (w.key,)).rowcount:
                changed.append(w.key)
        if not changed:
            return t.index
        t.index = idx
        t.changes.extend((idx, k) for k in changed)
        return idx

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return await self._write(lambda c, t: self._put(c, t, key, value, lease, None))

    async def cas(self, key: str, value: bytes, index: int, *, lease: int = 0) -> int | None:
        return await self._write(lambda c, t: self._put(c, t, key, value, lease, index))

    def _put(
        self, c: sqlite3.Connection, t: _Txn, key: str, value: bytes, lease: int, cas: int | None
    ) -> int | None:
        row = c.execute("SELECT create_index, modify_index FROM kv WHERE key=?", (key,)).fetchone()
        if cas is not None and (row[1] if row else 0) != cas:
            return None
        if lease and not c.execute("SELECT 1 FROM leases WHERE id=?", (lease,)).fetchone():
            raise StoreUnavailable(f"lease {lease} not found (expired or revoked)")
        idx = t.bump(key)
        c.execute(
            "INSERT INTO kv VALUES (?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
            "modify_index=excluded.modify_index, lease=excluded.lease",
            (key, value, row[0] if row else idx, idx, lease),
        )
        return idx

    async def update(self, key: str, fn: Callable[[Entry | None], bytes | None]) -> int | None:
        def op(c: sqlite3.Connection, t: _Txn) -> int | None:
            row = c.execute(f"SELECT {_COLS} FROM kv WHERE key=?", (key,)).fetchone()
            value = fn(Entry(*row) if row else None)
            if value is None:
                return None
            idx = t.bump(key)
            c.execute(
                "INSERT INTO kv VALUES (?,?,?,?,0) ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                "modify_index=excluded.modify_index, lease=0",
                (key, value, row[2] if row else idx, idx),
            )
            return idx

        return await self._write(op)

    async def delete(self, key: str, *, index: int | None = None) -> int | None:
        def fn(c: sqlite3.Connection, t: _Txn) -> int | None:
            row = c.execute("SELECT modify_index FROM kv WHERE key=?", (key,)).fetchone()
            if row is None or (index is not None and row[0] != index):
                return None
            c.execute("DELETE FROM kv WHERE key=?", (key,))
            return t.bump(key)

        return await self._write(fn)

    async def delete_prefix(self, prefix: str) -> int | None:
        def fn(c: sqlite3.Connection, t: _Txn) -> int | None:
            keys = [
                r[0]
                for r in c.execute(
                    "SELECT key FROM kv WHERE key >= ? AND key < ?", (prefix, _prefix_end(prefix))
                )
            ]
            if not keys:
                return None
            c.execute("DELETE FROM kv WHERE key >= ? AND key < ?", (prefix, _prefix_end(prefix)))
            t.index += 1
            t.changes.extend((t.index, k) for k in keys)
            return t.index

        return await self._write(fn)

    async def index(self) -> int:
        return self._index

    def seen(self) -> int:
        return self.feed.last_index

    async def wait(
        self, prefixes: Sequence[str], index: int, timeout: float, keys: Sequence[str] = ()
    ) -> int:
        return await self.feed.wait(prefixes, index, timeout, keys)

    async def grant(self, ttl: float) -> int:
        def fn(c: sqlite3.Connection, t: _Txn) -> int:
            lid = c.execute("INSERT INTO leases (ttl) VALUES (?)", (ttl,)).lastrowid
            return int(lid or 0)

        lid = await self._write(fn)
        self._ttls[lid] = ttl
        self._deadlines[lid] = time.monotonic() + ttl
        return lid

    async def keepalive(self, lease: int) -> bool:
        if lease not in self._deadlines:
            return False
        self._deadlines[lease] = time.monotonic() + self._ttls[lease]
        return True

    async def revoke(self, lease: int) -> None:
        self._deadlines.pop(lease, None)
        self._ttls.pop(lease, None)

        def fn(c: sqlite3.Connection, t: _Txn) -> None:
            keys = [r[0] for r in c.execute("SELECT key FROM kv WHERE lease=?", (lease,))]
            c.execute("DELETE FROM kv WHERE lease=?", (lease,))
            c.execute("DELETE FROM leases WHERE id=?", (lease,))
            if keys:
                t.index += 1
                t.changes.extend((t.index, k) for k in keys)

        await self._write(fn)

    async def _reap_leases(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for lid in [lid for lid, d in self._deadlines.items() if d <= now]:
                with contextlib.suppress(Exception):
                    await self.revoke(lid)

    async def close(self) -> None:
        """Every write already accepted is committed and answered; new ones are refused."""
        self._reaper.cancel()
        self._closing = True
        if self._pending or self._committing:
            self._drained = asyncio.Event()
            await self._drained.wait()
        self._commits.put(_END)
        await asyncio.to_thread(self._writer.join, 10)
        self._conn.close()
        self._reader.close()
        os.close(self._lock_fd)  # last: the lock outlives every connection to the file
