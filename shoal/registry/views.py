"""The registry's read views as Consul shapes them, each with the index Consul keys it on and the store
keys a blocking reader of it waits on (see blocking.py, indexes.py).

A view of one service reads its index key and its by-service entries first, then the instances, their
nodes and their checks: the index comes from the first read, so whatever changes between the two reads
is newer than the index answered and the client's next blocking query returns at once — no change is
ever missed, and nothing outside the service is read.

Filters are Consul's: repeated `tag` all required (case-insensitive), repeated `node-meta` all required,
`passing`, and `filter=` (bexpr.py) on the entries as answered.

A view that reads more than its own table waits on, and answers the highest of, the index keys of
everything it reads: Consul's ServicesByNodeMeta (agent/consul/state/catalog.go) keys
/v1/catalog/services?node-meta= on max(services, nodes), so a node whose meta changes wakes its
watchers. A change to a node reaches one service's views through that service's own index key, which
the node's change bumps (indexes.plan), as Consul's updateAllServiceIndexesOfNode does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.registry import bexpr
from shoal.registry import model as m
from shoal.registry.blocking import Read
from shoal.registry.indexes import (
    CHECKS_INDEX,
    KV_DELETED,
    KV_FLOOR,
    NODES_INDEX,
    SERVICES_INDEX,
    SESSIONS_ENDED,
    TOMBSTONES,
    by_service_prefix,
    checks_index,
    load_ref,
    node_checks_index,
    node_index,
    service_index,
)
from shoal.registry.model import CHECKS, KV, NODES, SERVICES, SESSIONS, Check, KVEntry, Node, Service
from shoal.registry.store import Store
from shoal.registry.store.base import Entry, Snapshot


@dataclass(frozen=True, slots=True)
class KVChanges:
    """What ?recurse&since=N answers: the entries written after N, or (`whole`) every entry."""

    entries: list[KVEntry]
    whole: bool


@dataclass(frozen=True, slots=True)
class Filters:
    tags: tuple[str, ...] = ()
    node_meta: tuple[tuple[str, str], ...] = ()
    passing: bool = False
    expr: bexpr.Filter | None = field(default=None)

    @property
    def needs_nodes(self) -> bool:
        return bool(self.node_meta)


NONE = Filters()
SPREAD = 32  # instances on up to this many nodes are read key by key; more, by whole prefixes


def _index(snap: Snapshot, *keys: str) -> int:
    """The modify index of the first of `keys` that exists, else the snapshot's (never 0)."""
    for k in keys:
        if (e := snap.entries.get(k)) is not None:
            return max(1, e.modify_index)
    return max(1, snap.index)


def _service_index(first: Snapshot, name: str, found: bool) -> int:
    """A service's own index key, which every change to it bumps and nothing deletes, so it holds for
    a service with no instance left too. A name never registered has none, and answers 1: no write
    moves that, and its first registration answers more (Consul answers the index of the last time any
    service lost its last instance, "service_last_extinction", which another service's deregistration
    moves). Instances with no index key are from a store written before there were any: the services'
    index, as before."""
    if (e := first.entries.get(service_index(name))) is not None:
        return max(1, e.modify_index)
    return _index(first, SERVICES_INDEX) if found else 1


def _gone(snap: Snapshot, key: str) -> int:
    """What a missing entry answers: the index key of its table's deletions (indexes.py, "Missing
    entries"), or, in a store from before that key, the snapshot's."""
    e = snap.entries.get(key)
    return max(1, e.modify_index if e is not None else snap.index)


def _highest(snap: Snapshot, *keys: str) -> int:
    """The highest modify index of `keys` that exist (a view reading several tables answers the newest
    of their indexes, as Consul's maxIndexTxn does), else the snapshot's (never 0)."""
    found = [e.modify_index for k in keys if (e := snap.entries.get(k)) is not None]
    return max(1, max(found) if found else snap.index)


# The fields of /v1/catalog/services' entries that come from the node's record, not the service's (the
# node's name is the service's own field); a filter on one of them makes the answer depend on nodes.
_NODE_RECORD = frozenset({"ID", "Address", "Datacenter", "TaggedAddresses", "NodeMeta"})


def _selects(tree: Any, fields: frozenset[str]) -> bool:
    """Whether a compiled filter's expression names any of the top-level `fields`."""
    if isinstance(tree, bexpr.Match):
        return bool(tree.path) and tree.path[0] in fields
    if isinstance(tree, bexpr.Not):
        return _selects(tree.operand, fields)
    return _selects(tree.left, fields) or _selects(tree.right, fields)


def _tags_ok(tags: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    have = {t.lower() for t in tags}
    return all(t.lower() in have for t in wanted)


def _meta_ok(meta: dict[str, str], wanted: tuple[tuple[str, str], ...]) -> bool:
    return all(meta.get(k) == v for k, v in wanted)


def _node(e: Entry) -> Node:
    return m.load_node(e.value, e.create_index, e.modify_index)


def _service(e: Entry) -> Service:
    return m.load_service(e.value, e.create_index, e.modify_index)


def _check(e: Entry) -> Check:
    return m.load_check(e.value, e.create_index, e.modify_index)


def catalog_entry(n: Node, svc: Service) -> dict[str, Any]:
    d: dict[str, Any] = {
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.to_consul()["TaggedAddresses"],
        "NodeMeta": n.meta,
        "ServiceKind": "",
        "ServiceID": svc.id,
        "ServiceName": svc.name,
        "ServiceTags": list(svc.tags),
        "ServiceAddress": svc.address,
    }
    if svc.tagged_addresses:  # Consul's structs.ServiceNode: omitempty
        d["ServiceTaggedAddresses"] = svc.tagged_addresses
    d.update(
        ServiceMeta=svc.meta,
        ServicePort=svc.port,
        ServiceWeights=svc.weights,
        ServiceEnableTagOverride=svc.enable_tag_override,
        CreateIndex=svc.create_index,
        ModifyIndex=svc.modify_index,
    )
    return d


class Views:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- one service --------------------------------------------------------------------------------

    async def _instances(
        self, name: str, with_checks: bool
    ) -> tuple[Snapshot, list[tuple[Node, Service, list[Check]]]]:
        """The first snapshot (index key, by-service entries) and every instance of `name` with its node
        (and, with `with_checks`, its node's checks), ordered by node then service id."""
        prefix = by_service_prefix(name)
        first = await self.store.read([service_index(name), SERVICES_INDEX], [prefix])
        refs = sorted({ref for e in first.trees[prefix] if (ref := load_ref(e.value)) is not None})
        if not refs:
            return first, []
        nodes = sorted({n for n, _ in refs})
        if len(nodes) <= SPREAD:
            second = await self.store.read(
                [f"{SERVICES}{n}/{sid}" for n, sid in refs] + [NODES + n for n in nodes],
                [f"{CHECKS}{n}/" for n in nodes] if with_checks else [],
            )
            entries = dict(second.entries)
            checks_on = {n: second.trees[f"{CHECKS}{n}/"] for n in nodes} if with_checks else {}
        else:  # a service on many nodes: three ranges read less than a key or two per instance
            second = await self.store.read([], [NODES, SERVICES, *([CHECKS] if with_checks else [])])
            entries = {e.key: e for p in (NODES, SERVICES) for e in second.trees[p]}
            checks_on = {}
            for e in second.trees[CHECKS] if with_checks else ():
                checks_on.setdefault(e.key[len(CHECKS) :].partition("/")[0], []).append(e)
        out = []
        for n, sid in refs:
            se, ne = entries.get(f"{SERVICES}{n}/{sid}"), entries.get(NODES + n)
            if se is None or ne is None:
                continue
            svc = _service(se)
            if svc.name.lower() != name.lower():
                continue
            checks = [c for c in map(_check, checks_on.get(n, ())) if c.service_id in ("", sid)]
            out.append((_node(ne), svc, checks))
        return first, out

    async def health_service(self, name: str, f: Filters = NONE) -> Read[list[dict[str, Any]]]:
        first, instances = await self._instances(name, with_checks=True)
        out = []
        for node, svc, checks in instances:
            if not _tags_ok(svc.tags, f.tags) or not _meta_ok(node.meta, f.node_meta):
                continue
            if f.passing and any(c.status != m.PASSING for c in checks):
                continue
            entry = {
                "Node": node.to_consul(),
                "Service": svc.to_health(),
                "Checks": [c.to_consul() for c in checks],
            }
            if f.expr is None or f.expr.keep(entry):
                out.append(entry)
        index = _service_index(first, name, bool(instances))
        return Read(out, index, first.index, keys=(service_index(name),))

    async def catalog_service(self, name: str, f: Filters = NONE) -> Read[list[dict[str, Any]]]:
        first, instances = await self._instances(name, with_checks=False)
        out = []
        for node, svc, _ in instances:
            if not _tags_ok(svc.tags, f.tags) or not _meta_ok(node.meta, f.node_meta):
                continue
            entry = catalog_entry(node, svc)
            if f.expr is None or f.expr.keep(entry):
                out.append(entry)
        index = _service_index(first, name, bool(instances))
        return Read(out, index, first.index, keys=(service_index(name),))

    async def health_checks(self, name: str, f: Filters = NONE) -> Read[list[dict[str, Any]]]:
        first, instances = await self._instances(name, with_checks=True)
        seen: set[tuple[str, str]] = set()
        out = []
        for node, _, checks in instances:
            if not _meta_ok(node.meta, f.node_meta):
                continue
            for c in checks:
                if c.service_name.lower() != name.lower() or (c.node, c.id) in seen:
                    continue
                seen.add((c.node, c.id))
                d = c.to_consul()
                if f.expr is None or f.expr.keep(d):
                    out.append(d)
        index = _service_index(first, name, bool(instances))
        return Read(out, index, first.index, keys=(service_index(name),))

    # --- the whole catalog, and one node --------------------------------------------------------------

    async def catalog_services(self, f: Filters = NONE) -> Read[dict[str, list[str]]]:
        """Consul's Services, or with node-meta its ServicesByNodeMeta: then (and for a filter on the
        node's fields) the nodes are read too, and the query waits on and answers the higher of the
        services' and the nodes' indexes, so a node's meta changing wakes it. A filter on the service's
        fields alone reads no node: the services' index, as Consul's."""
        nodes_too = f.needs_nodes or (f.expr is not None and _selects(f.expr.tree, _NODE_RECORD))
        keys = (SERVICES_INDEX, NODES_INDEX) if nodes_too else (SERVICES_INDEX,)
        snap = await self.store.read(keys, [SERVICES, *([NODES] if nodes_too else [])])
        nodes = {n.name: n for n in map(_node, snap.trees[NODES])} if nodes_too else {}
        out: dict[str, set[str]] = {}
        for svc in map(_service, snap.trees[SERVICES]):
            if nodes_too or f.expr is not None:
                # without the nodes read, the filter names none of the node's fields
                node = nodes.get(svc.node) if nodes_too else Node(svc.node, "", "")
                if node is None or not _meta_ok(node.meta, f.node_meta):
                    continue
                if f.expr is not None and not f.expr.keep(catalog_entry(node, svc)):
                    continue
            out.setdefault(svc.name, set()).update(svc.tags)
        data = {k: sorted(v) for k, v in sorted(out.items())}
        return Read(data, _highest(snap, *keys), snap.index, keys=keys)

    async def catalog_nodes(self, f: Filters = NONE) -> Read[list[dict[str, Any]]]:
        snap = await self.store.read([NODES_INDEX], [NODES])
        out = []
        for node in map(_node, snap.trees[NODES]):
            d = node.to_consul()
            if _meta_ok(node.meta, f.node_meta) and (f.expr is None or f.expr.keep(d)):
                out.append(d)
        return Read(out, _index(snap, NODES_INDEX), snap.index, keys=(NODES_INDEX,))

    async def catalog_node(self, name: str, f: Filters = NONE) -> Read[dict[str, Any] | None]:
        key = node_index(name)
        snap = await self.store.read([key, NODES_INDEX, NODES + name], [f"{SERVICES}{name}/"])
        ne = snap.entries[NODES + name]
        data = None
        if ne is not None:
            services = {}
            for svc in map(_service, snap.trees[f"{SERVICES}{name}/"]):
                d = svc.to_health()
                if f.expr is None or f.expr.keep(d):
                    services[svc.id] = d
            data = {"Node": _node(ne).to_consul(), "Services": services}
        return Read(data, _index(snap, key, NODES_INDEX), snap.index, keys=(key,))

    async def health_state(self, state: str, f: Filters = NONE) -> Read[list[dict[str, Any]]]:
        """Checks in `state`, keyed on that state's index. With node-meta the nodes are read too, and
        the query waits on the nodes' index as well and answers the higher of the two: Consul's
        parseChecksByNodeMeta watches the nodes it read but answers the checks' index alone, so there
        a node moving into or out of the filter wakes the query, whose index did not move, and the
        move is answered only when the wait ends (or a check changes), under the old index."""
        key = CHECKS_INDEX if state == "any" else checks_index(state)
        snap = await self.store.read(
            [key, CHECKS_INDEX, *([NODES_INDEX] if f.needs_nodes else [])],
            [CHECKS, *([NODES] if f.needs_nodes else [])],
        )
        nodes = {n.name: n for n in map(_node, snap.trees[NODES])} if f.needs_nodes else {}
        out = []
        for c in map(_check, snap.trees[CHECKS]):
            if state != "any" and c.status != state:
                continue
            if f.needs_nodes and (c.node not in nodes or not _meta_ok(nodes[c.node].meta, f.node_meta)):
                continue
            d = c.to_consul()
            if f.expr is None or f.expr.keep(d):
                out.append(d)
        index = _index(snap, key, CHECKS_INDEX)
        if not f.needs_nodes:
            return Read(out, index, snap.index, keys=(key,))
        nodes_at = snap.entries.get(NODES_INDEX)
        index = max(index, nodes_at.modify_index if nodes_at else 0)
        return Read(out, index, snap.index, keys=(key, NODES_INDEX))

    async def health_node(self, name: str, f: Filters = NONE) -> Read[list[dict[str, Any]]]:
        key = node_checks_index(name)
        snap = await self.store.read([key, CHECKS_INDEX], [f"{CHECKS}{name}/"])
        out = [
            d
            for d in (c.to_consul() for c in map(_check, snap.trees[f"{CHECKS}{name}/"]))
            if f.expr is None or f.expr.keep(d)
        ]
        return Read(out, _index(snap, key, CHECKS_INDEX), snap.index, keys=(key,))

    async def agent_service(self, node: str, service_id: str) -> Read[Service | None]:
        key = f"{SERVICES}{node}/{service_id}"
        snap = await self.store.read([key])
        e = snap.entries[key]
        return Read(_service(e) if e else None, _index(snap, key), snap.index, keys=(key,))

    # --- KV and sessions ----------------------------------------------------------------------------

    async def kv_get(self, key: str) -> Read[KVEntry | None]:
        """Consul's KVS.Get: the key's ModifyIndex when it exists. One point read (the hot path): what
        the store had published before it is what a blocked reader waits after, so no later change
        goes unseen. When the key is missing, the index of the last KV deletion, read with the key
        in one snapshot: a KV put elsewhere does not move it, and the key's deletion does (Consul: the
        kvs table's index, which any KV write moves)."""
        at = self.store.seen()
        e = await self.store.get(KV + key)
        if e is not None:
            data = KVEntry.decode(key, e.value, e.create_index, e.modify_index)
            return Read(data, max(1, e.modify_index), at, keys=(KV + key,))
        snap = await self.store.read([KV + key, KV_DELETED])
        if (e := snap.entries[KV + key]) is not None:  # written since the first read
            data = KVEntry.decode(key, e.value, e.create_index, e.modify_index)
            return Read(data, max(1, e.modify_index), snap.index, keys=(KV + key,))
        return Read(None, _gone(snap, KV_DELETED), snap.index, keys=(KV + key,), missing=True)

    async def kv_list(self, prefix: str) -> Read[list[KVEntry]]:
        """Consul's KVS.List: the highest index under the prefix, deletions (tombstones) included, and
        never below the reaped tombstones' floor. With nothing under it, not even a tombstone, the last
        KV deletion's index (or the floor's, if higher): a put elsewhere does not move it, the deletion
        that emptied the prefix does (Consul: the kvs table's index, which any KV write moves)."""
        snap, index = await self._kv_tree(prefix)
        n = len(KV)
        entries = [
            KVEntry.decode(e.key[n:], e.value, e.create_index, e.modify_index)
            for e in snap.trees[KV + prefix]
        ]
        return Read(entries, index, snap.index, prefixes=(KV + prefix,))

    async def kv_changes(self, prefix: str, since: int) -> Read[KVChanges]:
        """shoal's own ?recurse&since=N (not Consul's): the entries under the prefix written after index
        N, where nothing was deleted anywhere in the KV since N -- else, or for N at or past what the store
        holds (a registry restored from older state), or an empty prefix, every entry, as ?recurse. A
        watcher of 1,000 nodes' documents that one agent rewrote reads that one document, not 3,000 (2.9
        MB, parsed twice a second, was the manager's largest cost at idle). Deletions (rare: a node that
        leaves) answer whole because the KV's tombstones are reaped: only a whole answer tells the reader
        what is gone. The index is ?recurse's, so the reader's next N is the index it was answered."""
        snap, index = await self._kv_tree(prefix)
        tree = snap.trees[KV + prefix]
        deleted = snap.entries[KV_DELETED]
        floor = snap.entries[KV_FLOOR]
        whole = (
            since <= 0
            or since > snap.index
            or not tree
            or (deleted is not None and deleted.modify_index > since)
            or (floor is not None and floor.modify_index > since)
        )
        n = len(KV)
        entries = [
            KVEntry.decode(e.key[n:], e.value, e.create_index, e.modify_index)
            for e in tree
            if whole or e.modify_index > since
        ]
        return Read(KVChanges(entries, whole), index, snap.index, prefixes=(KV + prefix,))

    async def _kv_tree(self, prefix: str) -> tuple[Snapshot, int]:
        """The prefix's entries and tombstones, and its index as Consul's KVS.List answers it."""
        snap = await self.store.read([KV_FLOOR, KV_DELETED], [KV + prefix, TOMBSTONES + prefix])
        floor = snap.entries[KV_FLOOR]
        found = [e.modify_index for e in snap.trees[KV + prefix]]
        found += [t.modify_index for t in snap.trees[TOMBSTONES + prefix]]
        if found:
            index = max(*found, floor.modify_index if floor else 0)
        else:
            index = max(_gone(snap, KV_DELETED), floor.modify_index if floor else 0)
        return snap, max(1, index)

    async def session(self, session_id: str) -> Read[list[dict[str, Any]]]:
        """/v1/session/info: a session answers its own index (Consul: the sessions table's). One that is
        not there answers the index of the last time a session ended (Consul: the sessions table's), and
        waits on that too: a session whose lease the store let expire is gone before the leader bumps it
        (Registry._invalidate), and the bump is what answers its watcher with an index past the one it
        had. A watcher told the session is missing keeps waiting across such bumps (blocking.py)."""
        key = SESSIONS + session_id
        snap = await self.store.read([key, SESSIONS_ENDED])
        e = snap.entries[key]
        if e is None:
            return Read([], _gone(snap, SESSIONS_ENDED), snap.index, keys=(key, SESSIONS_ENDED), missing=True)
        data = [m.load_session(e.value, e.create_index, e.modify_index).to_consul()]
        return Read(data, max(1, e.modify_index), snap.index, keys=(key,))

    async def sessions(self, node: str | None = None) -> Read[list[dict[str, Any]]]:
        snap = await self.store.read([], [SESSIONS])
        data = [
            s.to_consul()
            for s in (m.load_session(e.value, e.create_index, e.modify_index) for e in snap.trees[SESSIONS])
            if node is None or s.node == node
        ]
        return Read(data, max(1, snap.index), snap.index, prefixes=(SESSIONS,))
