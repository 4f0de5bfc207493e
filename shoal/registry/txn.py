"""Consul's transaction API (`PUT /v1/txn`) for KV operations: parsing, and the plan, as pure functions.

Consul runs a transaction's operations in order inside one state-store transaction: each sees the
writes of the ones before it, every failing operation is reported (`OpIndex`, `What`, in Consul's
words) and then nothing is written. `plan` does the same over one store snapshot and returns the
results, the errors, and the compares and writes that make it one store transaction; the core commits
it and plans again from a fresh snapshot if a compare failed. Limits are Consul's: 128 operations,
512 KiB of request (`txn_max_req_len`), 512 KiB per value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import Any

from shoal.errors import BadRequest, TooLarge
from shoal.registry import model as m
from shoal.registry.decode import Obj, parse_json
from shoal.registry.model import KV, SESSIONS, KVEntry
from shoal.registry.store.base import Compare, Delete, Put, Snapshot, Write

MAX_OPS = 128
MAX_BYTES = 512 * 1024
PENDING = -1  # the index of a write in this transaction: known once it commits
READS = ("get", "get-or-empty", "get-tree", "check-index", "check-session", "check-not-exists")
WRITES = ("set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas")
TREES = ("get-tree", "delete-tree")


@dataclass(frozen=True, slots=True)
class KVOp:
    verb: str
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str = ""


def parse(raw: bytes) -> list[KVOp]:
    """The request body as KV operations; 400 for what cannot be read, 413 for what is too large."""
    if len(raw) > MAX_BYTES:
        raise TooLarge(f"Request body too large, max size: {MAX_BYTES} bytes")
    data = parse_json(raw, "Failed to parse body")
    if not isinstance(data, list):
        raise BadRequest("Failed to parse body: the body must be a JSON array of operations")
    if len(data) > MAX_OPS:
        raise TooLarge(f"Transaction contains too many operations ({len(data)} > {MAX_OPS})")
    ops = []
    for i, item in enumerate(data):
        op = Obj(item, f"[{i}]")
        kv = op.obj("kv")
        if kv is None:
            other = [k.capitalize() for k in ("node", "service", "check", "session") if op.has(k)]
            if other:
                raise BadRequest(
                    f"Failed to parse body: operation {i} is a {other[0]} operation; shoal's transactions "
                    "take KV operations only (register nodes, services and checks with /v1/catalog/register)"
                )
            raise BadRequest(f"Failed to parse body: operation {i} has no KV operation")
        value = kv.raw("value")
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"Failed to parse body: unexpected value type in operation {i}")
        try:
            blob = base64.b64decode(value, validate=True) if value else b""
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"Failed to parse body: failed to decode value: {e}") from None
        key = kv.str("key")
        if len(blob) > m.MAX_VALUE:
            raise TooLarge(f"Value for key {key[:200]!r} is too large ({len(blob)} > {m.MAX_VALUE} bytes)")
        ops.append(KVOp(kv.str("verb"), key, blob, kv.int("flags"), kv.int("index"), kv.str("session")))
    return ops


def reads(ops: list[KVOp]) -> tuple[list[str], list[str]]:
    """The store keys and prefixes a plan of `ops` reads (one snapshot holds them all)."""
    keys: dict[str, None] = {}
    prefixes: dict[str, None] = {}
    for op in ops:
        if op.verb in TREES:
            prefixes[KV + op.key] = None
        elif op.key:
            keys[KV + op.key] = None
        if op.verb == "lock" and op.session:
            keys[SESSIONS + op.session] = None
    return list(keys), list(prefixes)


@dataclass
class Outcome:
    """A planned transaction: what Consul answers, and what the store must do to make it so."""

    results: list[tuple[KVEntry, bool]] = field(default_factory=list)  # (entry, with its value)
    errors: list[tuple[int, str]] = field(default_factory=list)
    compares: list[Compare] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)

    def render(self, index: int) -> dict[str, Any]:
        """Consul's reply body; written entries carry the index the transaction committed at."""
        if self.errors:
            return {"Results": None, "Errors": [{"OpIndex": i, "What": w} for i, w in self.errors]}
        out = []
        for e, with_value in self.results:
            e = replace(
                e,
                value=e.value if with_value else b"",
                create_index=index if e.create_index == PENDING else e.create_index,
                modify_index=index if e.modify_index == PENDING else e.modify_index,
            )
            out.append({"KV": e.to_consul()})
        return {"Results": out, "Errors": None}


def plan(ops: list[KVOp], snap: Snapshot, lock_delayed: frozenset[str] = frozenset()) -> Outcome:
    """Runs `ops` in order over `snap` (read with `reads(ops)`); pure. `lock_delayed` are the keys whose
    lock delay has not passed."""
    out = Outcome()
    known: dict[str, KVEntry | None] = {}
    for entries in snap.trees.values():
        for e in entries:
            known[e.key[len(KV) :]] = KVEntry.decode(
                e.key[len(KV) :], e.value, e.create_index, e.modify_index
            )
    for k, e in snap.entries.items():
        if k.startswith(KV):
            key = k[len(KV) :]
            known[key] = KVEntry.decode(key, e.value, e.create_index, e.modify_index) if e else None
    dirty: set[str] = set()
    held: dict[tuple[str, str], bytes | None] = {}  # (session, key) -> its held/ entry, None: delete
    deleted_trees: list[str] = []
    read_trees: list[str] = []

    def fail(i: int, what: str) -> None:
        out.errors.append((i, what))

    def write(key: str, entry: KVEntry | None) -> None:
        old = known.get(key)
        if entry is None and old is not None and old.session:
            held[(old.session, key)] = None
        known[key] = entry
        dirty.add(key)

    for i, op in enumerate(ops):
        k = op.key
        if not k and op.verb != "delete-tree":
            fail(i, "Must provide key")
            continue
        old = known.get(k)
        v = op.verb
        if v == "set" or v == "cas":
            if v == "cas" and (
                (op.index == 0 and old) or (op.index and (not old or old.modify_index != op.index))
            ):
                fail(i, f'failed to set key "{k}", index is stale')
                continue
            new = KVEntry(
                k,
                op.value,
                op.flags,
                old.lock_index if old else 0,
                old.session if old else "",
                old.create_index if old else PENDING,
                PENDING,
            )
            write(k, new)
            out.results.append((new, False))
        elif v == "lock":
            if not op.session:
                fail(i, "missing session")
                continue
            se = snap.entries.get(SESSIONS + op.session)
            if se is None:
                fail(i, f'invalid session "{op.session}"')
                continue
            if k in lock_delayed:
                fail(i, f'failed to lock key "{k}" due to lock delay')
                continue
            if old and old.session and old.session != op.session:
                fail(i, f'failed to lock key "{k}", lock is already held')
                continue
            lock_index = (
                old.lock_index if old and old.session == op.session else (old.lock_index if old else 0) + 1
            )
            new = KVEntry(
                k, op.value, op.flags, lock_index, op.session, old.create_index if old else PENDING, PENDING
            )
            write(k, new)
            held[(op.session, k)] = m.held_value(m.load_session(se.value, se.create_index, se.modify_index))
            out.results.append((new, False))
        elif v == "unlock":
            if not op.session:
                fail(i, "missing session")
                continue
            if old is None or old.session != op.session:
                fail(i, f'failed to unlock key "{k}", lock isn\'t held, or is held by another session')
                continue
            new = replace(old, value=op.value, flags=op.flags, session="", modify_index=PENDING)
            write(k, new)
            held[(op.session, k)] = None
            out.results.append((new, False))
        elif v == "get":
            if old is None:
                fail(i, f'key "{k}" doesn\'t exist')
            else:
                out.results.append((old, True))
        elif v == "get-or-empty":
            out.results.append((old or KVEntry(k, b"", op.flags), True))
        elif v == "get-tree":
            read_trees.append(k)
            out.results += [(e, True) for key, e in sorted(known.items()) if key.startswith(k) and e]
        elif v == "check-index":
            if old is None:
                fail(i, f'failed to check index, key "{k}" doesn\'t exist')
            elif old.modify_index != op.index:
                now = old.modify_index
                fail(i, f'failed index check for key "{k}", current modify index {now} != {op.index}')
            else:
                out.results.append((old, False))
        elif v == "check-session":
            if old is None:
                fail(i, f'failed to check session, key "{k}" doesn\'t exist')
            elif old.session != op.session:
                fail(
                    i,
                    f'failed session check for key "{k}", current session "{old.session}" != "{op.session}"',
                )
            else:
                out.results.append((old, False))
        elif v == "check-not-exists":
            if old is not None:
                fail(i, f'key "{k}" exists')
        elif v == "delete":
            write(k, None)
        elif v == "delete-cas":
            if old is not None and old.modify_index != op.index:
                fail(i, f'failed to delete key "{k}", index is stale')
            elif old is not None:
                write(k, None)
        elif v == "delete-tree":
            for key in [key for key, e in known.items() if key.startswith(k) and e]:
                write(key, None)
            deleted_trees.append(k)
        else:
            fail(i, f'unknown KV verb "{v[:64]}"')
    if out.errors:
        return out
    _commit_plan(out, snap, known, dirty, held, deleted_trees, read_trees)
    return out


def _commit_plan(
    out: Outcome,
    snap: Snapshot,
    known: dict[str, KVEntry | None],
    dirty: set[str],
    held: dict[tuple[str, str], bytes | None],
    deleted_trees: list[str],
    read_trees: list[str],
) -> None:
    at_start = {k: e for k, e in snap.entries.items()}
    for entries in snap.trees.values():
        at_start.update((e.key, e) for e in entries)
    writes: list[Write] = []
    puts = {k for k in dirty if known[k] is not None}
    for k in sorted(dirty):
        e = known[k]
        if e is not None:
            writes.append(Put(KV + k, e.encode()))
        elif at_start.get(KV + k) is not None:
            writes.append(Delete(KV + k))
    for (sid, k), value in sorted(held.items()):
        writes.append(Delete(m.held_key(sid, k)) if value is None else Put(m.held_key(sid, k), value))
    compares = [Compare.on(k, e) for k, e in snap.entries.items()]
    for p in dict.fromkeys(deleted_trees):
        if any(k.startswith(p) for k in puts):
            # a key set again under a deleted prefix: delete the rest one by one, and only if the tree is
            # still as read (etcd forbids a put under a deleted range in one transaction)
            compares.append(Compare.tree(KV + p, snap.index))
        else:
            writes = [w for w in writes if not (isinstance(w, Delete) and w.key.startswith(KV + p))]
            writes.append(Delete(KV + p, prefix=True))
    if not writes:
        return
    for p in dict.fromkeys(read_trees):  # what a get-tree answered must still be so at the commit
        compares.append(Compare.tree(KV + p, snap.index))
        compares += [Compare.on(e.key, e) for e in snap.trees.get(KV + p, ())]
    out.compares = list(dict.fromkeys(compares))
    out.writes = writes
