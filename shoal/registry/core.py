"""The registry's Consul semantics over a Store: KV with locks, sessions, the agent's services and checks,
and the catalog and health views.

The HTTP and DNS front ends call only this; it raises ShoalError subclasses, which http.py renders as
Consul replies. The one agent here is also the leader of a one-node datacenter, as DESIGN says;
services and checks registered through the agent belong to its node.

Every operation that writes several keys is one store transaction, decided on one snapshot: read what
the decision depends on (`Store.read`), decide (the `decide` functions below are pure: snapshot in,
result and a `Plan` of compares and writes out), commit with compares on exactly what was read, and read
again if someone wrote in between. So a service never appears before its checks, a deregistration
never leaves a check behind, an acquire never lands on a session being destroyed, and a kill -9 between
two writes leaves all of an operation or none of it.

Every transaction also carries the writes `indexes.plan` derives from it — Consul's index table
(index/service/web, index/nodes, ...), the by-service entries and KV tombstones — so a blocking query
wakes when, and only when, what it reads changed (views.py, blocking.py).

The check runner (checks.py) is told about checks through `CheckEvents`, which server.py wires; the
core does not import it, nor it the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from shoal.errors import BadRequest, NotFound, ServerError, TooLarge
from shoal.logs import kv
from shoal.registry import indexes, txn
from shoal.registry import model as m
from shoal.registry.blocking import Flights, Read, query
from shoal.registry.decode import HTTP_TOKEN, U64, Obj, normalize
from shoal.registry.faults import crash_point
from shoal.registry.leader import ELECTION, Leadership, candidate
from shoal.registry.model import (
    CHECKS,
    HELD,
    KV,
    LOCK_DELAYS,
    NODES,
    SERVICES,
    SESSIONS,
    TTL_TOUCH,
    Check,
    CheckDef,
    KVEntry,
    Node,
    Service,
    Session,
)
from shoal.registry.store import Store
from shoal.registry.store.base import Compare, Delete, Entry, Put, Snapshot, Write
from shoal.registry.views import Views

log = logging.getLogger("shoal.registry")
SERF_HEALTH = "serfHealth"
MIN_TTL, MAX_TTL = 10.0, 86400.0  # Consul's session_ttl_min default and structs.SessionTTLMax
# Consul's structs.SessionTTLMultiplier: a session is invalidated 2x its TTL after its last renewal, a
# grace its clients count on (they renew at TTL/2 and treat the TTL as the lock's guaranteed lifetime)
SESSION_TTL_MULTIPLIER = 2
MIN_INTERVAL = 0.1  # probes run no more often than this (Consul's floor is 1 s; tests use 200 ms)
ATTEMPTS = 64  # reads and commits before an operation gives up against concurrent writers
RELEASE_BATCH = 40  # locks released per transaction when a session ends: with their held/ entries and
# (Behavior delete) tombstones, within the 128 compares and 128 writes etcd takes in one transaction
REINDEX_BATCH = 60
REAP_EVERY = 60.0  # seconds between looks for KV tombstones past indexes.TOMBSTONE_TTL
MANAGER_SERVICE, MANAGER_CHECK = "manager", "manager-lease"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Config:
    node: str = "shoal"
    address: str = "127.0.0.1"
    datacenter: str = "dc1"
    domain: str = "shoal"
    server_port: int = 8300
    http_port: int = 8500
    dns_port: int = 8600
    enable_script_checks: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What one decision commits: the compares that must still hold, and the writes."""

    compares: tuple[Compare, ...] = ()
    writes: tuple[Write, ...] = ()


class CheckEvents(Protocol):
    """What the check runner hears from the registry, after each change is committed."""

    def schedule(self, c: Check) -> None: ...

    def unschedule(self, check_id: str, node: str) -> None: ...

    def ttl_touched(self, c: Check) -> None: ...

    def status_changed(self, c: Check) -> None: ...


class _NoChecks:
    """No check runner attached (tests of the core alone, or before server.py wires one)."""

    def schedule(self, c: Check) -> None:
        pass

    def unschedule(self, check_id: str, node: str) -> None:
        pass

    def ttl_touched(self, c: Check) -> None:
        pass

    def status_changed(self, c: Check) -> None:
        pass


def _changed(entry: Entry | None, data: bytes) -> bool:
    return entry is None or entry.value != data


def _kv(key: str, e: Entry | None) -> KVEntry | None:
    return KVEntry.decode(key, e.value, e.create_index, e.modify_index) if e else None


@functools.lru_cache(maxsize=4096)
def _until(raw: bytes) -> float:
    """A lock delay's end (seconds since the epoch) as another registry wrote it; unreadable is none."""
    try:
        v = json.loads(raw)
    except ValueError:
        return 0.0
    return float(v) if isinstance(v, int | float) else 0.0


def _node_id(node: str) -> str:
    """The ID a node registered without one gets: stable, from its name."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, node))


def _node_name(name: str) -> str:
    """A node name is one path segment of the store's layout (services/<node>/<id>)."""
    if not name:
        raise BadRequest("Must provide node")
    if "/" in name:
        raise BadRequest(f"Invalid node name {name!r}: must not contain '/'")
    return name


_UNITLESS = re.compile(r"[-+]?[0-9]*\.?[0-9]+")  # Go's time.ParseDuration: a number needs its unit


def session_ttl(raw: Any) -> tuple[float, str]:
    """A session's TTL (seconds, and the text Consul answers back) as Consul's Session.Apply checks it:
    a Go duration, 0 for none, else 10s to 24h; anything else is Consul's 500 and its words, which
    clients match to adjust their TTL."""
    if raw is None or raw == "":
        return 0.0, ""
    if isinstance(raw, str):
        text = raw
        negative = raw.strip().startswith("-")
        try:
            ttl = m.parse_duration(raw.strip().lstrip("-+"), "TTL")
        except BadRequest:
            shown = raw[:64]
            why = "missing unit in duration" if _UNITLESS.fullmatch(raw) else "invalid duration"
            raise ServerError(f"Session TTL '{shown}' invalid: time: {why} \"{shown}\"") from None
        if negative:
            ttl = -ttl
    else:
        ttl = m.parse_duration(raw, "TTL")  # a number (shoal also takes those): nanoseconds
        text = m.format_duration(ttl) if ttl else ""
    if ttl and not MIN_TTL <= ttl <= MAX_TTL:
        raise ServerError(
            f"Invalid Session TTL '{round(ttl * 1e9)}', must be between "
            f"[{m.format_duration(MIN_TTL)}=24h0m0s]"
        )
    return ttl, (text if ttl else "")


def tagged_addresses(b: Obj, address: str, port: int, defaults: bool) -> dict[str, dict[str, Any]]:
    """A service's TaggedAddresses: {"lan": {"Address": ..., "Port": ...}, ...} as given, and with
    `defaults` (agent registrations) Consul's agent's own: lan_ipv4/wan_ipv4 (or _ipv6) for an IP
    address (agent.go addServiceInternal)."""
    out: dict[str, dict[str, Any]] = {}
    given = b.obj("taggedaddresses")
    for tag in sorted(given.data) if given else ():
        a = given.obj(tag) if given else None
        if a is not None:
            out[tag] = {"Address": a.str("address"), "Port": a.int("port", 0, 0, 65535)}
    if defaults:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is not None:
            v = "ipv4" if ip.version == 4 else "ipv6"
            for tag in (f"lan_{v}", f"wan_{v}"):
                out.setdefault(tag, {"Address": address, "Port": port})
    return out


class Registry:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.views = Views(store)
        self.flights = Flights(store.seen)
        self._lock_delay: dict[str, float] = {}  # kv key -> monotonic time until which acquire fails
        # every live session, so that one whose lease expired can still be invalidated with its own
        # lock delay and behavior after the store has deleted its record
        self._known: dict[str, Session] = {}
        self.checks: CheckEvents = _NoChecks()
        self._tasks: list[asyncio.Task[Any]] = []
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, config.node))
        # who runs the cluster-wide loops (session expiry, lock release, tombstone reaping, TTL timers):
        # this process alone over SQLite; the elected one of several over a shared etcd (server.py sets it)
        self.leadership = Leadership.solo({"name": config.node, "address": config.address})

    @property
    def shared(self) -> bool:
        return self.leadership.shared

    async def start(self) -> None:
        node = Node(self.config.node, self.config.address, self.config.datacenter, id=self.node_id)
        serf = Check(
            node.name, SERF_HEALTH, "Serf Health Status", m.PASSING, output="Agent alive and reachable"
        )
        records = {NODES + node.name: m.dump(node), serf.key(): m.dump(serf)}
        # what missing entries answer (indexes.py): made once, in a store that has none yet, so that a
        # missing key or session answers them from the first read on, never the store's whole index
        seeds = (indexes.KV_DELETED, indexes.SESSIONS_ENDED)

        def decide(snap: Snapshot) -> tuple[None, Plan]:
            writes = tuple(Put(k, v) for k, v in records.items() if _changed(snap.entries[k], v))
            writes += tuple(Put(k, b"") for k in seeds if snap.entries[k] is None)
            compares = tuple(Compare.on(k, snap.entries[k]) for k in (*records, *seeds))
            return None, Plan(compares, writes)

        await self._atomically([*records, *seeds], [], decide)
        if self.shared:
            await self._register_manager()
            self.leadership.add_task(self._lead)
            return
        self._known = {s.id: s for s in await self.sessions()}
        await self._release_orphans()
        await self._reindex()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch_sessions()))
        self._tasks.append(loop.create_task(self._reap_tombstones()))

    async def _register_manager(self) -> None:
        """A manager sharing the store is the service `manager` on its own node, so the registry's DNS
        (`manager.service.shoal`, A and SRV) and /v1/health/service/manager name the live managers. Its
        check `manager-lease` is the leader's to set: passing while the manager's election key (bound
        to its lease) stands, critical once it is gone (`_watch_managers`)."""
        me = self.leadership.me
        host, _, port = str(me.get("docker", "")).rpartition(":")
        if not host or not port.isdigit():
            return  # a registry alone (shoal registry): no Docker API to find
        await self.catalog_register(
            normalize(
                {
                    "Node": self.config.node,
                    "Address": self.config.address,
                    "Service": {
                        "ID": MANAGER_SERVICE,
                        "Service": MANAGER_SERVICE,
                        "Address": host,
                        "Port": int(port),
                        "Meta": {"consul": str(me.get("consul", "")), "dns": str(me.get("dns", ""))},
                    },
                    "Check": {
                        "CheckID": MANAGER_CHECK,
                        "Name": "Manager holds its lease",
                        "ServiceID": MANAGER_SERVICE,
                        "Status": m.PASSING,
                        "Output": "its election key stands in etcd",
                    },
                }
            )
        )

    async def _watch_managers(self) -> None:
        """Leader only: each manager's `manager-lease` check follows its election key (the lease of a
        manager that died expires within its TTL, and etcd deletes the key)."""
        index = 0
        while True:
            try:
                snap = await self.store.read([], [ELECTION])
                alive = {c.value.get("name") for c in (candidate(e) for e in snap.trees[ELECTION])}
                for c in await self.all_checks():
                    if c.id != MANAGER_CHECK:
                        continue
                    if c.node in alive:
                        await self.set_check_status(c, m.PASSING, "its election key stands in etcd")
                    else:
                        await self.set_check_status(
                            c, m.CRITICAL, "its lease in etcd expired: the manager is down or cut off"
                        )
                index = max(index, await self.store.wait([ELECTION], max(index, snap.index), 30.0))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                kv(log, "manager health watch failed; retrying", logging.WARNING, error=str(e), retry_in=1)
                await asyncio.sleep(1)

    async def touch_ttl(self, c: Check) -> None:
        """A TTL renewal through a follower, for the leader's timer (a renewal that changes nothing
        writes nothing to the check itself). Lost with its manager at worst: the next renewal comes."""
        body = json.dumps({"status": c.status, "output": c.output}).encode()
        await self.store.put(f"{TTL_TOUCH}{c.node}/{c.id}", body)

    async def ttl_touches(self) -> dict[tuple[str, str], int]:
        """Every follower renewal on record: (node, check id) -> its modify index."""
        out: dict[tuple[str, str], int] = {}
        for e in await self.store.range(TTL_TOUCH):
            node, _, cid = e.key[len(TTL_TOUCH) :].partition("/")
            out[(node, cid)] = e.modify_index
        return out

    async def _lead(self) -> None:
        """The leader's share over a shared store, from each takeover until it steps down: what a lone
        registry does at start (release locks of sessions that ended while nobody led, rebuild the
        by-service entries), then the session watch, the tombstone reaper and the managers' health.
        Its lock releases carry the term's fence, so a write a deposed leader was still making fails."""
        while True:
            try:
                self._known = {s.id: s for s in await self.sessions()}
                # a session whose lease expired while nobody led, or before this leader knew it, ended
                # with no index moving; this answers its watchers (Registry._invalidate)
                await self.store.put(indexes.SESSIONS_ENDED, b"")
                await self._release_orphans()
                await self._reindex()
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                kv(log, "takeover upkeep failed; retrying", logging.WARNING, error=str(e), retry_in=1)
                await asyncio.sleep(1)
        await asyncio.gather(self._watch_sessions(), self._reap_tombstones(), self._watch_managers())

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def index(self) -> int:
        return await self.store.index()

    async def wait(
        self, prefixes: Sequence[str], index: int, timeout: float, keys: Sequence[str] = ()
    ) -> int:
        return await self.store.wait(prefixes, index, timeout, keys)

    async def block(
        self,
        key: Hashable,
        read: Callable[[], Any],
        min_index: int | None,
        wait: float,
        woken: Callable[[int], None] | None = None,
    ) -> Read[Any]:
        """A blocking query over `read` (a view); `key` names the query, so readers of the same one
        woken by the same change share one read; `woken` hears the index of the change that woke it."""
        return await query(
            read, min_index or 0, wait, self.store.wait, self.flights, key, self.store.index, woken
        )

    async def _atomically(
        self,
        keys: Sequence[str],
        prefixes: Sequence[str],
        decide: Callable[[Snapshot], tuple[T, Plan]],
    ) -> tuple[T, int]:
        """Read, decide, commit with the plan's compares; again from the read if one fails. Returns the
        decision's result and the index it was committed at (the snapshot's when it writes nothing)."""
        for attempt in range(ATTEMPTS):
            snap = await self.store.read(keys, prefixes)
            result, plan = decide(snap)
            if not plan.writes:
                return result, snap.index
            index = await self._commit(snap, plan)
            if index is not None:
                return result, index
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise ServerError(
            f"gave up after {ATTEMPTS} attempts: other writers kept changing {', '.join(keys[:3])}; "
            "try again"
        )

    async def _commit(self, snap: Snapshot, plan: Plan) -> int | None:
        """`plan` as one store transaction, with the index, by-service and tombstone writes it implies
        (indexes.plan). A change to a node or to a node's own check bumps every service on that node:
        when the decision did not read the node's services, they are read here and the transaction
        compares on them, so a service registered meanwhile is never left out."""
        compares = list(plan.compares)
        trees: dict[str, Sequence[Entry]] = dict(snap.trees)
        touched = indexes.node_level_changes(plan.writes)
        need = sorted(n for n in touched if f"{SERVICES}{n}/" not in trees)
        if need:
            extra = await self.store.read([], [f"{SERVICES}{n}/" for n in need])
            trees.update(extra.trees)
            compares += [Compare.tree(p, extra.index) for p in extra.trees]
        held = {e.key: e for tree in trees.values() for e in tree}
        held.update(snap.entries)
        services_on: dict[str, list[str]] = {}
        for n in touched:
            names = [m.load_service(e.value, 0, 0).name for e in trees.get(f"{SERVICES}{n}/", ())]
            names += [
                m.load_service(w.value, 0, 0).name
                for w in plan.writes
                if isinstance(w, Put) and w.key.startswith(f"{SERVICES}{n}/")
            ]
            services_on[n] = names
        extra_writes = indexes.plan(
            plan.writes,
            held.get,
            lambda p: [e for k, e in held.items() if k.startswith(p) and e is not None],
            services_on,
        )
        return await self.store.txn(compares, [*plan.writes, *extra_writes])

    # --- KV -----------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> KVEntry | None:
        return _kv(key, await self.store.get(KV + key))

    async def kv_range(self, prefix: str) -> list[KVEntry]:
        n = len(KV)
        return [
            KVEntry.decode(e.key[n:], e.value, e.create_index, e.modify_index)
            for e in await self.store.range(KV + prefix)
        ]

    def _check_value(self, value: bytes, flags: int = 0) -> None:
        if len(value) > m.MAX_VALUE:
            raise TooLarge(
                f"Request body({len(value)} bytes) too large, max size: {m.MAX_VALUE} bytes. "
                "See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size."
            )
        if not 0 <= flags <= U64:
            raise BadRequest(f"Invalid flags {flags}: must be an integer from 0 to {U64}")

    def _check_key(self, key: str) -> None:
        if not key:
            raise BadRequest("Missing key name")

    async def kv_put(self, key: str, value: bytes, flags: int = 0, cas: int | None = None) -> bool:
        self._check_key(key)
        self._check_value(value, flags)

        def put(e: Entry | None) -> bytes | None:  # pure: the store runs it inside its group commit
            if cas is not None and cas != (e.modify_index if e else 0):
                return None
            old = _kv(key, e)
            # a plain PUT keeps the lock fields: it neither takes nor releases a lock
            return KVEntry(
                key, value, flags, old.lock_index if old else 0, old.session if old else ""
            ).encode()

        # one store round trip: the read and the write in one transaction (SQLite), or one etcd Txn
        # grouped with the other updates in flight (compared on a watch-fed guess, read again on a miss)
        return await self.store.update(KV + key, put) is not None

    async def kv_acquire(self, key: str, value: bytes, session_id: str, flags: int = 0) -> bool:
        """Consul's ?acquire: one transaction that compares the session's record and the key as read,
        so a session destroyed meanwhile can never end up holding the lock."""
        self._check_key(key)
        self._check_value(value, flags)
        skey, kkey, dkey = SESSIONS + session_id, KV + key, LOCK_DELAYS + key
        keys = [skey, kkey, dkey] if self.shared else [skey, kkey]

        def decide(snap: Snapshot) -> tuple[bool, Plan]:
            se = snap.entries[skey]
            if se is None or not session_id:
                raise ServerError(f'invalid session "{session_id}"')
            if self._lock_delay.get(key, 0.0) > time.monotonic():
                return False, Plan()
            if (de := snap.entries.get(dkey)) is not None and _until(de.value) > time.time():
                return False, Plan()  # a delay another registry started (a shared store)
            old = _kv(key, snap.entries[kkey])
            if old and old.session and old.session != session_id:
                return False, Plan()
            if old and old.session == session_id:
                new = replace(old, value=value, flags=flags)
            else:
                new = KVEntry(key, value, flags, (old.lock_index if old else 0) + 1, session_id)
            s = m.load_session(se.value, se.create_index, se.modify_index)
            return True, Plan(
                (Compare.on(skey, se), Compare.on(kkey, snap.entries[kkey])),
                (Put(kkey, new.encode()), Put(m.held_key(session_id, key), m.held_value(s))),
            )

        ok, _ = await self._atomically(keys, [], decide)
        return ok

    async def kv_release(self, key: str, value: bytes, session_id: str, flags: int = 0) -> bool:
        """Consul's ?release (kvsUnlockTxn): false, and nothing written, unless `session_id` holds the
        lock — whether or not that session still exists."""
        self._check_key(key)
        self._check_value(value, flags)
        if not session_id:
            raise ServerError("missing session")
        kkey = KV + key

        def decide(snap: Snapshot) -> tuple[bool, Plan]:
            old = _kv(key, snap.entries[kkey])
            if old is None or old.session != session_id:
                return False, Plan()
            new = replace(old, value=value, flags=flags, session="")
            return True, Plan(
                (Compare.on(kkey, snap.entries[kkey]),),
                (Put(kkey, new.encode()), Delete(m.held_key(session_id, key))),
            )

        ok, _ = await self._atomically([kkey], [], decide)
        return ok

    async def kv_delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        if recurse:
            # a lock index entry under held/ may outlive a key deleted here; ending its session clears it
            def tree(snap: Snapshot) -> tuple[bool, Plan]:
                if not snap.trees[KV + key]:
                    return True, Plan()
                return True, Plan((Compare.tree(KV + key, snap.index),), (Delete(KV + key, prefix=True),))

            ok, _ = await self._atomically([], [KV + key], tree)
            return ok
        kkey = KV + key

        def decide(snap: Snapshot) -> tuple[bool, Plan]:
            e = snap.entries[kkey]
            if cas is not None and (e.modify_index if e else 0) != cas:
                return False, Plan()
            if e is None:
                return True, Plan()
            old = _kv(key, e)
            held = (Delete(m.held_key(old.session, key)),) if old and old.session else ()
            return True, Plan((Compare.on(kkey, e),), (Delete(kkey), *held))

        ok, _ = await self._atomically([kkey], [], decide)
        return ok

    async def kv_txn(self, ops: list[txn.KVOp], dc: str | None = None) -> tuple[bool, dict[str, Any]]:
        """Consul's /v1/txn: every operation on one snapshot, then one store transaction (or, when an
        operation fails, nothing). Returns (applied, Consul's reply body)."""
        self.check_dc(dc)
        keys, prefixes = txn.reads(ops)

        def decide(snap: Snapshot) -> tuple[txn.Outcome, Plan]:
            now = time.monotonic()
            delayed = frozenset(
                op.key for op in ops if op.verb == "lock" and self._lock_delay.get(op.key, 0.0) > now
            )
            out = txn.plan(ops, snap, delayed)
            return out, (Plan() if out.errors else Plan(tuple(out.compares), tuple(out.writes)))

        out, index = await self._atomically(keys, prefixes, decide)
        return not out.errors, out.render(index)

    # --- sessions -------------------------------------------------------------------------------------

    async def session(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        e = await self.store.get(SESSIONS + session_id)
        return m.load_session(e.value, e.create_index, e.modify_index) if e else None

    async def sessions(self, node: str | None = None) -> list[Session]:
        out = [
            m.load_session(e.value, e.create_index, e.modify_index) for e in await self.store.range(SESSIONS)
        ]
        return [s for s in out if node is None or s.node == node]

    async def session_create(self, body: dict[str, Any], dc: str | None) -> str:
        self.check_dc(dc)
        b = Obj(body)
        node = b.str("node") or self.config.node
        behavior = (b.str("behavior") or "release").lower()
        if behavior not in ("release", "delete"):
            raise BadRequest(f"Invalid Behavior setting '{behavior}': must be 'release' or 'delete'")
        ttl, ttl_text = session_ttl(b.raw("ttl"))
        lock_delay = min(b.duration("lockdelay", "LockDelay", default="15s"), 60.0)  # Consul caps it at 60s
        if b.has("checks"):
            checks = b.strs("checks")
        elif b.has("nodechecks"):
            checks = b.strs("nodechecks")
        else:
            checks = (SERF_HEALTH,)
        name = b.str("name")
        keys = [NODES + node, *(f"{CHECKS}{node}/{cid}" for cid in checks)]

        def preconditions(snap: Snapshot) -> None:
            if snap.entries[NODES + node] is None:
                raise ServerError(f"Missing node registration: node {node!r} is not in the catalog")
            for cid in checks:
                c = snap.entries[f"{CHECKS}{node}/{cid}"]
                if c is None:
                    raise ServerError(f'Missing check "{cid}" registration')
                if m.load_check(c.value, 0, 0).status == m.CRITICAL:
                    raise ServerError(f'Check "{cid}" is in critical state')

        preconditions(await self.store.read(keys))  # before a lease exists, so a refusal leaves nothing
        sid = str(uuid.uuid4())
        lease = await self.store.grant(ttl * SESSION_TTL_MULTIPLIER) if ttl else 0
        crash_point("session-create-granted")
        s = Session(sid, name, node, lock_delay, behavior, ttl, tuple(checks), lease, ttl_text)

        def decide(snap: Snapshot) -> tuple[None, Plan]:
            preconditions(snap)
            compares = tuple(Compare.on(k, snap.entries[k]) for k in keys)
            return None, Plan(compares, (Put(SESSIONS + sid, m.dump(s), lease=lease),))

        try:
            await self._atomically(keys, [], decide)
        except BaseException:
            if lease:
                with contextlib.suppress(Exception):
                    await self.store.revoke(lease)
            raise
        self._known[sid] = s
        return sid

    async def session_destroy(self, session_id: str, dc: str | None = None) -> bool:
        self.check_dc(dc)
        s = await self.session(session_id)
        if s is None:
            return True
        self._known.pop(s.id, None)
        await self._invalidate(s.id, s.behavior, s.lock_delay, delete_record=True, seen=s.modify_index)
        crash_point("session-destroy-committed")
        if s.lease:
            await self.store.revoke(s.lease)
        return True

    async def session_renew(self, session_id: str, dc: str | None = None) -> Session:
        self.check_dc(dc)
        s = await self.session(session_id)
        if s is None or (s.lease and not await self.store.keepalive(s.lease)):
            raise NotFound(f"Session id '{session_id}' not found")
        return s

    def check_dc(self, dc: str | None) -> None:
        """Consul's answer to a datacenter it has no route to: a 500 in its exact words (structs.
        ErrNoDCPath), which clients match; this registry is the one datacenter there is."""
        if dc and dc != self.config.datacenter:
            raise ServerError("No path to datacenter")

    async def _invalidate(
        self,
        sid: str,
        behavior: str,
        lock_delay: float,
        delete_record: bool,
        fence: tuple[Compare, ...] = (),
        seen: int = 0,
    ) -> None:
        """What Consul does when a session ends: release (or, with Behavior delete, delete) every key it
        holds and start their lock delay; with `delete_record`, remove the session itself in the same
        transaction. The held/ index names the keys; compares on it and on each key make a concurrent
        acquire or release send us round again, so no lock is left on a dead session.

        It also moves index/sessions-ended past `seen`, the session's modify index as the caller knew it
        (0: not known), unless it is there already: a session the store's lease ended moved no index of
        ours, and this is what answers a watcher of its info, which holds `seen` (views.Views.session).
        One destroyed meanwhile has moved it already, and then nothing is written."""
        skey, prefix = SESSIONS + sid, m.held_key(sid, "")
        conflicts = 0
        while conflicts < ATTEMPTS:
            first = await self.store.read([skey, indexes.SESSIONS_ENDED], [prefix])
            held = list(first.trees[prefix])
            last = len(held) <= RELEASE_BATCH
            held = held[:RELEASE_BATCH]
            keys = [KV + h.key[len(prefix) :] for h in held]
            second = await self.store.read(keys)
            compares: list[Compare] = [Compare.on(k, second.entries[k]) for k in keys]
            writes: list[Write] = []
            released: list[tuple[str, float]] = []
            for h, k in zip(held, keys, strict=True):
                entry = _kv(k[len(KV) :], second.entries[k])
                if entry is None or entry.session != sid:
                    continue  # deleted, or released and taken since: only the index entry goes
                # the behavior and delay the session had when it took the lock (kept with the lock, so
                # they hold even for a session whose record is gone)
                how, delay = m.load_held(h.value) if h.value else (behavior, lock_delay)
                writes.append(Delete(k) if how == "delete" else Put(k, replace(entry, session="").encode()))
                released.append((entry.key, delay))
            if last:
                compares += [Compare.on(skey, first.entries[skey]), Compare.tree(prefix, first.index)]
                if delete_record and first.entries[skey] is not None:
                    writes.append(Delete(skey))
                if held:
                    writes.append(Delete(prefix, prefix=True))
                ended = first.entries[indexes.SESSIONS_ENDED]
                if not (seen and ended is not None and ended.modify_index > seen):
                    writes.append(Put(indexes.SESSIONS_ENDED, b""))
            else:
                compares += [Compare.on(h.key, h) for h in held]
                writes += [Delete(h.key) for h in held]
            writes += indexes.plan(writes, second.entries.get, lambda p: (), {})  # tombstones
            if self.shared:
                compares += fence
                now_wall = time.time()
                writes += [
                    Put(LOCK_DELAYS + key, json.dumps(now_wall + delay).encode())
                    for key, delay in released
                    if delay
                ]
            if writes and await self.store.txn(compares, writes) is None:
                conflicts += 1
                await asyncio.sleep(random.uniform(0, 0.01))
                continue
            now = time.monotonic()
            if len(self._lock_delay) > 10_000:  # forget delays that have passed
                self._lock_delay = {k: t for k, t in self._lock_delay.items() if t > now}
            for key, delay in released:
                if delay:
                    self._lock_delay[key] = now + delay
            if last:
                return
        raise ServerError(f"could not end session {sid}: its locks kept changing; try again")

    async def _watch_sessions(self) -> None:
        """Sessions whose lease expired vanish from the store; release their locks as Consul would."""
        index = await self.store.index()
        while True:
            try:
                index = max(index, await self.store.wait([SESSIONS], index, 30.0))
                live = {s.id: s for s in await self.sessions()}
                for sid in set(self._known) - set(live):
                    s = self._known[sid]
                    await self._invalidate(
                        sid,
                        s.behavior,
                        s.lock_delay,
                        delete_record=False,
                        fence=self.leadership.fence(),
                        seen=s.modify_index,
                    )
                    self._known.pop(sid, None)
                self._known.update(live)
            except asyncio.CancelledError:
                raise
            except Exception:
                kv(log, "session watch failed; retrying", logging.ERROR, exc_info=True, retry_in=1)
                await asyncio.sleep(1)

    async def _release_orphans(self) -> None:
        """At start: locks of sessions that ended while no registry was running."""
        live = {s.id for s in await self.sessions()}
        dead = {h.key[len(HELD) :].split("/", 1)[0] for h in await self.store.range(HELD)} - live
        for sid in sorted(dead):
            await self._invalidate(sid, "release", 0.0, delete_record=False, fence=self.leadership.fence())
        for e in await self.kv_range(""):  # held by a dead session but not in the index: release
            if e.session and e.session not in live:
                await self.store.cas(KV + e.key, replace(e, session="").encode(), e.modify_index)

    # --- nodes, services, checks ----------------------------------------------------------------------

    async def nodes(self) -> list[Node]:
        return [m.load_node(e.value, e.create_index, e.modify_index) for e in await self.store.range(NODES)]

    async def services(self, node: str | None = None) -> list[Service]:
        prefix = SERVICES + (f"{node}/" if node else "")
        return [
            m.load_service(e.value, e.create_index, e.modify_index) for e in await self.store.range(prefix)
        ]

    async def service(self, service_id: str, node: str | None = None) -> Service | None:
        e = await self.store.get(f"{SERVICES}{node or self.config.node}/{service_id}")
        return m.load_service(e.value, e.create_index, e.modify_index) if e else None

    async def all_checks(self, node: str | None = None) -> list[Check]:
        prefix = CHECKS + (f"{node}/" if node else "")
        return [m.load_check(e.value, e.create_index, e.modify_index) for e in await self.store.range(prefix)]

    async def check(self, check_id: str, node: str | None = None) -> Check | None:
        e = await self.store.get(f"{CHECKS}{node or self.config.node}/{check_id}")
        return m.load_check(e.value, e.create_index, e.modify_index) if e else None

    async def register_service(self, body: dict[str, Any]) -> Service:
        b = Obj(body)
        name = b.str("name")
        if not name:
            raise BadRequest("Missing service name")
        weights = b.obj("weights") or Obj({})
        address, port = b.str("address"), b.int("port", 0, 0, 65535)
        svc = Service(
            node=self.config.node,
            id=b.str("id") or name,
            name=name,
            tags=b.strs("tags"),
            address=address,
            port=port,
            meta=b.str_map("meta"),
            weights={
                "Passing": weights.int("passing", 1, 0, 2**31 - 1),
                "Warning": weights.int("warning", 1, 0, 2**31 - 1),
            },
            enable_tag_override=b.bool("enabletagoverride"),
            tagged_addresses=tagged_addresses(b, address, port, defaults=True),
        )
        defs = ([c] if (c := b.obj("check")) else []) + b.objs("checks")
        # parse every check before writing anything; a later definition of the same id wins
        wanted = {
            c.id: c
            for c in (self._check_from(d, svc, i + 1 if len(defs) > 1 else 0) for i, d in enumerate(defs))
        }
        skey, cprefix = f"{SERVICES}{svc.node}/{svc.id}", f"{CHECKS}{svc.node}/"

        def decide(snap: Snapshot) -> tuple[tuple[list[Check], set[str]], Plan]:
            existing = {e.key: e for e in snap.trees[cprefix]}
            compares, writes = [Compare.on(skey, snap.entries[skey])], []
            if _changed(snap.entries[skey], data := m.dump(svc)):
                writes.append(Put(skey, data))
            final = []
            for c in wanted.values():
                old_e = existing.get(c.key())
                if old_e is not None:
                    old = m.load_check(old_e.value, 0, 0)
                    same = c.definition == old.definition
                    c = replace(c, status=old.status if same else c.status, output=old.output)
                compares.append(Compare.on(c.key(), old_e))
                if _changed(old_e, data := m.dump(c)):
                    writes.append(Put(c.key(), data))
                final.append(c)
            stale = set()
            for k, e in existing.items():
                old = m.load_check(e.value, 0, 0)
                if old.service_id == svc.id and old.id not in wanted:
                    stale.add(old.id)
                    compares.append(Compare.on(k, e))
                    writes.append(Delete(k))
            return (final, stale), Plan(tuple(compares), tuple(writes))

        (final, stale), _ = await self._atomically([skey], [cprefix], decide)
        for c in final:
            self.checks.schedule(c)
        for cid in stale:
            self.checks.unschedule(cid, svc.node)
        return svc

    def _check_from(self, d: Obj, svc: Service | None, n: int, own_id: bool = False) -> Check:
        """A check definition as Consul's agent reads it. Within a service registration its id defaults
        to service:<id> (service:<id>:<n> among several); registered on its own (`own_id`), to its name,
        with or without a ServiceID (agent_endpoint.go AgentRegisterCheck)."""
        ttl = d.duration("ttl", "TTL")
        interval = d.duration("interval", "Interval")
        method = (d.str("method") or "GET").upper()
        if not HTTP_TOKEN.fullmatch(method):
            raise BadRequest(f"Invalid check Method {method[:40]!r}: must be an HTTP method such as GET")
        definition = CheckDef(
            ttl=ttl,
            http=d.str("http"),
            method=method,
            tcp=d.str("tcp"),
            args=d.strs("args") or d.strs("scriptargs"),
            interval=max(interval, MIN_INTERVAL) if interval else 0.0,
            timeout=d.duration("timeout", "Timeout") or 10.0,
            deregister_after=d.duration("deregistercriticalserviceafter", "DeregisterCriticalServiceAfter"),
        )
        kinds = [k for k in (ttl, definition.http, definition.tcp, definition.args) if k]
        if len(kinds) != 1:
            raise BadRequest("Invalid check: exactly one of TTL, HTTP, TCP or Args must be given")
        if not ttl and interval <= 0:
            raise BadRequest("Invalid check: HTTP, TCP and script checks need an Interval")
        if definition.args and not self.config.enable_script_checks:
            raise BadRequest(
                "Scripts are disabled on this agent; to enable, start it with --enable-script-checks"
            )
        status = (d.str("status") or m.CRITICAL).lower()
        if status not in m.STATUSES:
            raise BadRequest(f"Invalid check status {status[:40]!r}: must be passing, warning or critical")
        given_id = d.str("checkid") or d.str("id")
        if svc is not None and not own_id:
            cid = given_id or f"service:{svc.id}" + (f":{n}" if n else "")
            name = d.str("name") or f"Service '{svc.name}' check"
        else:
            name = d.str("name")
            if not name:
                raise BadRequest("Missing check name")
            cid = given_id or name
        return Check(
            node=self.config.node,
            id=cid,
            name=name,
            status=status,
            service_id=svc.id if svc else "",
            service_name=svc.name if svc else "",
            service_tags=svc.tags if svc else (),
            notes=d.str("notes"),
            definition=definition,
        )

    async def register_check(self, body: dict[str, Any]) -> Check:
        b = Obj(body)
        service_id = b.str("serviceid")
        svc = None
        skey = f"{SERVICES}{self.config.node}/{service_id}"
        if service_id:
            svc = await self.service(service_id)
            if svc is None:
                raise NotFound(f'ServiceID "{service_id}" does not exist')
        c = self._check_from(b, svc, 0, own_id=True)
        keys = [c.key(), *([skey] if svc else [])]

        def decide(snap: Snapshot) -> tuple[Check, Plan]:
            if svc is not None and snap.entries[skey] is None:
                raise NotFound(f'ServiceID "{service_id}" does not exist')
            new, old_e = c, snap.entries[c.key()]
            if old_e is not None:
                old = m.load_check(old_e.value, 0, 0)
                new = replace(
                    c, status=old.status if c.definition == old.definition else c.status, output=old.output
                )
            compares = tuple(Compare.on(k, snap.entries[k]) for k in keys)
            writes = (Put(c.key(), data),) if _changed(old_e, data := m.dump(new)) else ()
            return new, Plan(compares, writes)

        new, _ = await self._atomically(keys, [], decide)
        self.checks.schedule(new)
        return new

    async def deregister_check(self, check_id: str) -> None:
        key = f"{CHECKS}{self.config.node}/{check_id}"

        def decide(snap: Snapshot) -> tuple[None, Plan]:
            if snap.entries[key] is None or check_id == SERF_HEALTH:
                raise NotFound(
                    f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
                )
            return None, Plan((Compare.on(key, snap.entries[key]),), (Delete(key),))

        await self._atomically([key], [], decide)
        self.checks.unschedule(check_id, self.config.node)

    async def deregister_service(self, service_id: str) -> None:
        """The service and its checks go in one transaction: no reader sees the one without the other."""
        node = self.config.node
        removed = await self._remove_service(node, service_id, missing_ok=False)
        for cid in removed:
            self.checks.unschedule(cid, node)

    async def _remove_service(self, node: str, service_id: str, missing_ok: bool) -> list[str]:
        skey, cprefix = f"{SERVICES}{node}/{service_id}", f"{CHECKS}{node}/"

        def decide(snap: Snapshot) -> tuple[list[str], Plan]:
            se = snap.entries[skey]
            if se is None and not missing_ok:
                raise NotFound(
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the '
                    "service name."
                )
            mine = [e for e in snap.trees[cprefix] if m.load_check(e.value, 0, 0).service_id == service_id]
            compares = (Compare.on(skey, se), *(Compare.on(e.key, e) for e in mine))
            writes = (*((Delete(skey),) if se else ()), *(Delete(e.key) for e in mine))
            return [e.key[len(cprefix) :] for e in mine], Plan(compares, writes)

        removed, _ = await self._atomically([skey], [cprefix], decide)
        return removed

    async def update_check(self, check_id: str, status: Any, output: Any) -> Check:
        if not isinstance(status, str) or status not in m.STATUSES:
            raise BadRequest(f"Invalid check status: {str(status)[:40]!r}")
        if not isinstance(output, str):
            raise BadRequest("Request decode failed: Output must be a string")
        c = await self.check(check_id)
        if c is None or check_id == SERF_HEALTH:
            raise NotFound(
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
            )
        if len(output) > 4096:
            output = output[:4096] + " ... (Output truncated)"
        if c.definition.ttl:  # re-armed with what it is told now (its output is what expiry quotes)
            self.checks.ttl_touched(replace(c, status=status, output=output))
        return await self.set_check_status(c, status, output)

    async def set_check_status(self, c: Check, status: str, output: str) -> Check:
        """A compare-and-set on the check as read, so a status never resurrects a check deregistered
        meanwhile."""
        key = c.key()

        def decide(snap: Snapshot) -> tuple[tuple[Check, bool], Plan]:
            e = snap.entries[key]
            if e is None:
                return (c, False), Plan()
            cur = m.load_check(e.value, e.create_index, e.modify_index)
            if cur.status == status and cur.output == output:
                return (cur, False), Plan()
            new = replace(cur, status=status, output=output)
            return (new, True), Plan((Compare.on(key, e),), (Put(key, m.dump(new)),))

        (new, changed), _ = await self._atomically([key], [], decide)
        if changed:
            self.checks.status_changed(new)
        return new

    # --- catalog registration (remote nodes: shoal agents) ---------------------------------------------

    async def catalog_register(self, body: dict[str, Any]) -> None:
        """Consul's /v1/catalog/register, node, service and checks in one transaction. shoal extension:
        a check given a TTL here is timed by the registry like an agent TTL check, and registering it
        again as passing renews it; that is how the node agents (which have no Consul agent of their
        own) keep their node's check alive."""
        b = Obj(body)
        node = _node_name(b.str("node"))
        address = b.str("address")
        if not address:
            raise BadRequest("Must provide address")
        self.check_dc(b.str("datacenter") or None)
        n = Node(
            node,
            address,
            self.config.datacenter,
            id=b.str("id") or _node_id(node),
            meta=b.str_map("nodemeta"),
            tagged_addresses=b.str_map("taggedaddresses"),
        )
        svc = None
        if s := b.obj("service"):
            if not s.str("service"):
                raise BadRequest("Invalid Service: must have a Service name")
            address, port = s.str("address"), s.int("port", 0, 0, 65535)
            svc = Service(
                node=node,
                id=s.str("id") or s.str("service"),
                name=s.str("service"),
                tags=s.strs("tags"),
                address=address,
                port=port,
                meta=s.str_map("meta"),
                tagged_addresses=tagged_addresses(s, address, port, defaults=False),
            )
        checks: dict[str, Check] = {}
        for d in ([c] if (c := b.obj("check")) else []) + b.objs("checks"):
            cid = d.str("checkid") or d.str("name")
            if not cid:
                raise BadRequest("Invalid Check: must have a CheckID or Name")
            status = (d.str("status") or m.CRITICAL).lower()
            if status not in m.STATUSES:
                raise BadRequest(
                    f"Invalid check status {status[:40]!r}: must be passing, warning or critical"
                )
            definition = d.obj("definition") or Obj({})
            ttl = d.duration("ttl", "TTL") or definition.duration("ttl", "TTL")
            sid = d.str("serviceid")
            mine = svc is not None and sid == svc.id
            checks[cid] = Check(
                node=node,
                id=cid,
                name=d.str("name") or cid,
                status=status,
                service_id=sid,
                service_name=svc.name if svc and mine else "",
                service_tags=svc.tags if svc and mine else (),
                notes=d.str("notes"),
                output=d.str("output"),
                definition=CheckDef(ttl=ttl),
            )
        records = {NODES + node: m.dump(n)}
        if svc is not None:
            records[f"{SERVICES}{node}/{svc.id}"] = m.dump(svc)
        # a check of a service registered earlier takes that service's name and tags (Consul's
        # ensureCheckTxn), so the service's index and health views see it
        others = sorted(
            {
                f"{SERVICES}{node}/{c.service_id}"
                for c in checks.values()
                if c.service_id and not c.service_name
            }
        )

        dumped = {c.key(): m.dump(c) for c in checks.values() if not (c.service_id and not c.service_name)}

        def decide(snap: Snapshot) -> tuple[list[Check], Plan]:
            final, wanted = [], dict(records)
            for c in checks.values():
                if c.key() in dumped:
                    final.append(c)
                    wanted[c.key()] = dumped[c.key()]
                    continue
                if c.service_id and not c.service_name:
                    se = snap.entries[f"{SERVICES}{node}/{c.service_id}"]
                    if se is None:
                        raise ServerError(
                            f"Failed inserting check {c.id!r} on node {node!r}: Missing service "
                            f"registration {c.service_id!r}; register the service with the check"
                        )
                    other = m.load_service(se.value, 0, 0)
                    c = replace(c, service_name=other.name, service_tags=other.tags)
                final.append(c)
                wanted[c.key()] = m.dump(c)
            compares = [Compare.on(k, snap.entries[k]) for k in [*wanted, *others]]
            writes = tuple(Put(k, v) for k, v in wanted.items() if _changed(snap.entries[k], v))
            return final, Plan(tuple(compares), writes)

        keys = [*records, *(c.key() for c in checks.values()), *others]
        final, _ = await self._atomically(keys, [], decide)
        for c in final:
            if c.definition.ttl:
                self.checks.ttl_touched(c)
            self.checks.status_changed(c)

    async def catalog_deregister(self, body: dict[str, Any]) -> None:
        b = Obj(body)
        node = _node_name(b.str("node"))
        self.check_dc(b.str("datacenter") or None)
        service_id, check_id = b.str("serviceid"), b.str("checkid")
        if service_id:
            removed = await self._remove_service(node, service_id, missing_ok=True)
        elif check_id:
            key = f"{CHECKS}{node}/{check_id}"

            def one(snap: Snapshot) -> tuple[list[str], Plan]:
                e = snap.entries[key]
                return ([check_id], Plan((Compare.on(key, e),), (Delete(key),))) if e else ([], Plan())

            removed, _ = await self._atomically([key], [], one)
        else:
            nkey, sprefix, cprefix = NODES + node, f"{SERVICES}{node}/", f"{CHECKS}{node}/"

            def whole(snap: Snapshot) -> tuple[list[str], Plan]:
                writes: list[Write] = [Delete(nkey)] if snap.entries[nkey] else []
                writes += [Delete(p, prefix=True) for p in (sprefix, cprefix) if snap.trees[p]]
                return [e.key[len(cprefix) :] for e in snap.trees[cprefix]], Plan((), tuple(writes))

            removed, _ = await self._atomically([nkey], [sprefix, cprefix], whole)
        for cid in removed:
            self.checks.unschedule(cid, node)

    # --- upkeep: the by-service entries, and KV tombstones ---------------------------------------------

    async def _reindex(self) -> None:
        """At start: a by-service entry for every service instance and none for what is gone — a store
        written before they existed, or by hand, gets them here. Each batch compares on the services it
        read, so a registration made meanwhile by another manager is never undone."""
        snap = await self.store.read([], [SERVICES, indexes.BY_SERVICE])
        want: dict[str, tuple[Entry, bytes]] = {}
        for e in snap.trees[SERVICES]:
            svc = m.load_service(e.value, e.create_index, e.modify_index)
            ref = indexes.by_service_value(svc.node, svc.id)
            want[indexes.by_service(svc.name, svc.node, svc.id)] = (e, ref)
        have = {e.key: e for e in snap.trees[indexes.BY_SERVICE]}
        todo: list[tuple[Compare, Write]] = []
        for k, (e, v) in want.items():
            if k not in have or have[k].value != v:
                todo.append((Compare.on(e.key, e), Put(k, v)))
        for k, e in have.items():
            if k not in want:
                todo.append((Compare.on(k, e), Delete(k)))
        for i in range(0, len(todo), REINDEX_BATCH):
            batch = todo[i : i + REINDEX_BATCH]
            if await self.store.txn([c for c, _ in batch], [w for _, w in batch]) is None:
                kv(log, "by-service entries changed while rebuilt; next start retries", logging.WARNING)
        if todo:
            kv(log, "by-service entries rebuilt", changed=len(todo))

    async def _reap_tombstones(self) -> None:
        """Tombstones older than Consul's tombstone_ttl go; the same transaction bumps index/kv-reaped,
        which every prefix's index includes, so no prefix's index goes back when its newest tombstone
        does (where Consul lets it)."""
        while True:
            await asyncio.sleep(REAP_EVERY)
            try:
                await self.reap_tombstones(time.time())
            except asyncio.CancelledError:
                raise
            except Exception:
                kv(log, "reaping KV tombstones failed", logging.ERROR, exc_info=True, retry_in=REAP_EVERY)

    async def reap_tombstones(self, now: float, ttl: float = indexes.TOMBSTONE_TTL) -> int:
        old = [
            e for e in await self.store.range(indexes.TOMBSTONES) if indexes.tombstone_age(e.value, now) > ttl
        ]
        reaped = 0
        for i in range(0, len(old), REINDEX_BATCH):
            batch = old[i : i + REINDEX_BATCH]
            writes: list[Write] = [Delete(e.key) for e in batch]
            writes.append(Put(indexes.KV_FLOOR, b""))
            if await self.store.txn([Compare.on(e.key, e) for e in batch], writes) is not None:
                reaped += len(batch)
        return reaped

    # --- views ----------------------------------------------------------------------------------------

    async def health_service(
        self, name: str, tag: str | None = None, passing: bool = False, ignore_case: bool = False
    ) -> list[dict]:
        """The DNS interface's view: instances of `name` (service names match case-insensitively, as in
        Consul's catalog)."""
        from shoal.registry.views import Filters

        f = Filters(tags=(tag,) if tag else (), passing=passing)
        return (await self.views.health_service(name, f)).data
