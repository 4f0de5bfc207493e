"""Consul's index table, kept in the store: which index keys a transaction's writes bump, and the keys
that name them.

A blocking query must wake only when what it reads changed, and answer an `X-Consul-Index` that moves
only then (Consul: agent/consul/state/catalog.go keys `/v1/health/service/web` on the table-index
entry "service.web", which every change to web's instances, their checks or their nodes bumps; kvs.go
answers a key's own ModifyIndex and a prefix's highest index, tombstones included). Here the entry is a
store key, `index/service/web`, put in the same transaction as the change: its modify index *is* the
index of that change, every registry process (and every manager on etcd) sees the same one, and a
blocked reader waits on that one key instead of on the whole catalog.

`plan` is pure: the writes of one transaction and what the keys held before, in; the extra writes
(index bumps, by-service entries, KV tombstones), out. The core adds them to every transaction it
commits, so no caller can forget one.

Missing entries. Consul answers a missing key the kvs table's index (kvsGetTxn, kvs.go), a session id
nobody holds the sessions table's (SessionGet, session.go), a service with no instance the index of the
last time any service lost its last one (maxIndexForService, catalog.go), so that the answer never goes
below what the entry answered while it was there. Here the tables' indexes are narrower, moving only
when something stops being there, which is all that rule needs: `kv-deleted` with every KV deletion
(single, recursive, a session's Behavior delete), `sessions-ended` with every session that ends (the
leader bumps it after a lease expiry the store made, and at each takeover, see Registry._invalidate).
A KV put elsewhere, or a session created, leaves a missing key's or session's index where it was; a
service keeps its own index key for good, so one that never registered answers 1 (views.py).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.registry.model import CHECKS, KV, NODES, SERVICES, SESSIONS
from shoal.registry.store.base import Delete, Entry, Put, Write

INDEX = "index/"
NODES_INDEX = INDEX + "nodes"  # /v1/catalog/nodes: node records
SERVICES_INDEX = INDEX + "services"  # /v1/catalog/services: service instances
CHECKS_INDEX = INDEX + "checks"  # /v1/health/state/any: every check
KV_FLOOR = INDEX + "kv-reaped"  # above every tombstone reaped so far (see Registry._reap_tombstones)
# What something missing answers (see "Missing entries" above): a KV key or an empty prefix the index of
# the last KV deletion, a session id the index of the last time a session ended.
KV_DELETED = INDEX + "kv-deleted"
SESSIONS_ENDED = INDEX + "sessions-ended"
BY_SERVICE = "by-service/"
TOMBSTONES = "tombstones/"
TOMBSTONE_TTL = 15 * 60.0  # Consul's default tombstone_ttl


def escape(name: str) -> str:
    """A name as one path segment: `/` cannot end up splitting it, so a prefix of one name never
    matches another (service "a" is not under "a/b")."""
    return name.replace("%", "%25").replace("/", "%2F")


def service_index(name: str) -> str:
    """/v1/health/service/<name>, /v1/catalog/service/<name>, /v1/health/checks/<name> (service names
    match case-insensitively, as Consul's catalog indexes them)."""
    return f"{INDEX}service/{escape(name.lower())}"


def checks_index(status: str) -> str:
    """/v1/health/state/<status>."""
    return f"{INDEX}checks/{status}"


def node_index(node: str) -> str:
    """/v1/catalog/node/<node>: the node and its services."""
    return f"{INDEX}node/{node}"


def node_checks_index(node: str) -> str:
    """/v1/health/node/<node>: the node's checks."""
    return f"{INDEX}node-checks/{node}"


def by_service_prefix(name: str) -> str:
    return f"{BY_SERVICE}{escape(name.lower())}/"


def by_service(name: str, node: str, service_id: str) -> str:
    return f"{by_service_prefix(name)}{node}/{escape(service_id)}"


def by_service_value(node: str, service_id: str) -> bytes:
    return json.dumps([node, service_id]).encode()


def load_ref(raw: bytes) -> tuple[str, str] | None:
    """(node, service id) from a by-service entry; None for a damaged one (the read skips it)."""
    try:
        node, sid = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return (node, sid) if isinstance(node, str) and isinstance(sid, str) else None


def tombstone(key: str) -> str:
    return TOMBSTONES + key


def tombstone_value(now: float | None = None) -> bytes:
    return json.dumps({"deleted_at": time.time() if now is None else now}).encode()


def tombstone_age(raw: bytes, now: float) -> float:
    """Seconds since the deletion; a damaged tombstone counts as old (it is reaped)."""
    try:
        return now - float(json.loads(raw)["deleted_at"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


@dataclass(frozen=True, slots=True)
class _Svc:
    name: str


@dataclass(frozen=True, slots=True)
class _Chk:
    status: str
    service_id: str
    service_name: str


@functools.lru_cache(maxsize=1024)  # the same value is read by node_level_changes and plan
def _svc(raw: bytes | None) -> _Svc | None:
    if raw is None:
        return None
    try:
        return _Svc(str(json.loads(raw)["name"]))
    except (ValueError, KeyError, TypeError):
        return None


@functools.lru_cache(maxsize=1024)  # the same value is read by node_level_changes and plan
def _chk(raw: bytes | None) -> _Chk | None:
    if raw is None:
        return None
    try:
        d: dict[str, Any] = json.loads(raw)
        return _Chk(str(d["status"]), str(d.get("service_id", "")), str(d.get("service_name", "")))
    except (ValueError, KeyError, TypeError):
        return None


def _split(key: str, prefix: str) -> tuple[str, str]:
    node, _, rest = key[len(prefix) :].partition("/")
    return node, rest


def node_level_changes(writes: Sequence[Write]) -> set[str]:
    """Nodes whose every service's index a transaction bumps — a node record or a node-level check
    changes — and so whose service list `plan` needs."""
    out = set()
    for w in writes:
        if w.key.startswith(NODES):
            out.add(w.key[len(NODES) :])
        elif w.key.startswith(CHECKS):
            node, cid = _split(w.key, CHECKS)
            if not cid:  # a prefix delete of the node's checks
                out.add(node)
            elif isinstance(w, Put):
                c = _chk(w.value)
                if c is None or not c.service_name:
                    out.add(node)
            else:
                out.add(node)  # a deleted check may be node-level; plan decides from what it held
    return out


def plan(
    writes: Sequence[Write],
    before: Callable[[str], Entry | None],
    under: Callable[[str], Sequence[Entry]],
    services_on: Mapping[str, Iterable[str]],
    now: float | None = None,
) -> list[Write]:
    """The writes a transaction of `writes` must carry as well. `before(key)` is what a written key held
    in the snapshot the writes were decided on, `under(prefix)` what a deleted prefix held, and
    `services_on[node]` the names of the services on each node of `node_level_changes(writes)`."""
    bumps: set[str] = set()
    extra: dict[str, Write] = {}

    def each(w: Write) -> Iterable[tuple[str, bytes | None, bytes | None]]:
        """(key, old value, new value) for every key `w` changes."""
        if isinstance(w, Put):
            old = before(w.key)
            yield w.key, (old.value if old else None), w.value
        elif w.prefix:
            for e in under(w.key):
                yield e.key, e.value, None
        else:
            old = before(w.key)
            yield w.key, (old.value if old else None), None

    def all_services(node: str) -> None:
        bumps.update(service_index(n) for n in services_on.get(node, ()))

    for w in writes:
        if w.key.startswith(KV):
            if isinstance(w, Delete):
                extra[tombstone(w.key[len(KV) :])] = Put(tombstone(w.key[len(KV) :]), tombstone_value(now))
                bumps.add(KV_DELETED)
            continue
        if w.key.startswith(SESSIONS) and isinstance(w, Delete):
            bumps.add(SESSIONS_ENDED)
            continue
        if not w.key.startswith((NODES, SERVICES, CHECKS)):
            continue
        for key, old, new in each(w):
            if key.startswith(NODES):
                node = key[len(NODES) :]
                bumps.update((NODES_INDEX, node_index(node)))
                all_services(node)
            elif key.startswith(SERVICES):
                node, sid = _split(key, SERVICES)
                bumps.update((SERVICES_INDEX, node_index(node)))
                o, n = _svc(old), _svc(new)
                for s in (o, n):
                    if s is not None:
                        bumps.add(service_index(s.name))
                if o is not None and (n is None or n.name.lower() != o.name.lower()):
                    k = by_service(o.name, node, sid)
                    extra[k] = Delete(k)
                if n is not None and (o is None or n.name.lower() != o.name.lower()):
                    k = by_service(n.name, node, sid)
                    extra[k] = Put(k, by_service_value(node, sid))
            elif key.startswith(CHECKS):
                node, _ = _split(key, CHECKS)
                bumps.update((CHECKS_INDEX, node_checks_index(node)))
                o, n = _chk(old), _chk(new)
                if o is None and n is None:  # unreadable: every state view may have changed
                    bumps.update(checks_index(s) for s in ("passing", "warning", "critical"))
                    all_services(node)
                for c in (o, n):
                    if c is None:
                        continue
                    bumps.add(checks_index(c.status))
                    if c.service_name:
                        bumps.add(service_index(c.service_name))
                    else:
                        all_services(node)  # a node's check is part of every service on it
    written = {w.key for w in writes}  # an index key the caller writes itself is not put twice
    for k in bumps - written:
        extra.setdefault(k, Put(k, b""))
    return list(extra.values())
