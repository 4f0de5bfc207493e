"""The cluster as the filters' vectorised masks read it: node states, and indexes that make a decision over
10,000 nodes cost a few numpy operations instead of a Python loop per node.

- every key a constraint can name (node name/id, labels, facts) and every key an affinity can name
  (container names and ids, images, container labels) maps each distinct string to the nodes offering it
  (values.py says which strings: the same ones the filters' per-node `check` reads), so `==`/`!=` visit
  distinct values, or, where there are more distinct values than nodes (30 containers a node), every
  node's strings at once: each node's strings are kept joined (pattern.join, made when they change), and
  those of each block of 32 nodes joined again into one text, so one RE2 call answers a block where
  nothing matches, and one more each node that matches (pattern.find_joined); a changed node costs the
  rejoin of its block, when an expression new to the index next scans it;
- numeric facts keep their float per node, compared as one numpy array;
- an expression's node mask is cached and kept current from a per-key change log: after one node
  changed, only that node is matched again, so placing a container (which changes its node's container
  names) does not make the next `affinity:container==/re/` rescan the cluster;
- containers, ports, volumes, networks, volume drivers and health by value, for the other filters.

Updating one node touches only that node's entries; `upsert` skips what did not change (a placement
changes containers and reservations, never facts). Pure data structure, no I/O: the manager feeds it from
the registry and the engines, the simulator from generated nodes, through the same `upsert`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from shoal.scheduler import pattern
from shoal.scheduler.expr import EQ, NUMERIC, Expr
from shoal.scheduler.model import PASSING, ContainerRef, NodeState
from shoal.scheduler.values import (
    affinity_keys,
    candidates,
    changed_facts,
    constraint_keys,
    container_ports,
    container_slots,
    number,
)

__all__ = ["ClusterIndex", "candidates", "number"]  # candidates/number: the per-node meaning, in values.py

_MAX_CACHED = 4096  # expression masks kept per namespace
# nodes per joined text (_Text): one RE2 call each when nothing matches, and a changed node costs the
# rejoin of its block only (~75 KB at 30 containers a node: microseconds, in memory the allocator reuses)
_BLOCK = 32
_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


@dataclass(slots=True)
class _Cached:
    mask: np.ndarray  # one bool per node position, at least `covered` long
    covered: int  # nodes 0..covered-1 are up to date as of ...
    seen: int  # ... this many entries of the key's change log
    epoch: int  # the log's epoch (a cleared log starts a new one)


@dataclass(frozen=True, slots=True)
class _Text:
    """A block of _BLOCK nodes' strings for one key as one text: the nodes' pattern.joins joined by "\\n",
    so a match still lies within one string (pattern.find_joined), and the node it starts in is its
    owner."""

    data: bytes
    nodes: list[int]  # the node of each part, in text order
    starts: list[int]  # where each part starts in data (part k ends at starts[k + 1] - 1, its "\\n")


class _Strings:
    """One namespace of string-valued keys (constraint keys, or affinity keys).

    `eager`: join a node's strings when they change, if the key is one `_build` scans (affinities:
    `set` runs when an affinity asks, or as the index fills, so that is where the cost lands, not in the
    first placement of an expression new to the index); otherwise when a scan first needs them
    (constraints: facts change often, and few keys ever take the scan)."""

    def __init__(self, *, eager: bool = False) -> None:
        self.values: dict[str, dict[str, set[int]]] = defaultdict(dict)
        self.of_node: list[dict[str, tuple[str, ...]]] = []
        self.nodes_with: Counter[str] = Counter()
        self._eager = eager
        # key -> node -> pattern.join of its strings, for nodes whose strings hold no "\\n" ...
        self._joined: dict[str, dict[int, bytes]] = defaultdict(dict)
        self._lone: dict[str, set[int]] = defaultdict(set)  # ... and the nodes whose do (asked one by one)
        # (a node with strings in neither is not joined yet)
        # key -> block (j // _BLOCK) -> its joined nodes' strings as one text, dropped when one changes
        self._blocks: dict[str, dict[int, _Text]] = defaultdict(dict)
        self._log: dict[str, list[int]] = defaultdict(list)
        self._epoch: dict[str, int] = defaultdict(int)
        self._cached: dict[Expr, _Cached] = {}

    def set(self, j: int, keys: dict[str, tuple[str, ...]], only: Iterable[str] | None = None) -> list[str]:
        """Node j now offers `keys`; returns the keys whose values changed. `only`: the keys that may
        have (a node's new facts, where the rest of its keys are as they were)."""
        if j == len(self.of_node):
            self.of_node.append({})
        old = self.of_node[j]
        changed = []
        for key in old.keys() | keys.keys() if only is None else only:
            before, after = old.get(key), keys.get(key)
            if before == after:
                continue
            changed.append(key)
            by_value = self.values[key]
            was, now = set(before or ()), set(after or ())
            for v in was - now:
                s = by_value[v]
                s.discard(j)
                if not s:
                    del by_value[v]
            for v in now - was:
                by_value.setdefault(v, set()).add(j)
            self.nodes_with[key] += (after is not None) - (before is not None)
            self._rejoin(key, j, after)
            log = self._log[key]
            log.append(j)
            if len(log) > max(1024, len(self.of_node)):  # cheaper to rebuild than to replay
                log.clear()
                self._epoch[key] += 1
        self.of_node[j] = keys
        return changed

    def _rejoin(self, key: str, j: int, vals: tuple[str, ...] | None) -> None:
        """Node j's strings for `key` changed to `vals`: its joined form, now or when first needed. Now, a
        node that completes a block as the index fills builds the block's text as well."""
        blocks = self._blocks[key]
        blocks.pop(j // _BLOCK, None)
        self._joined[key].pop(j, None)
        self._lone[key].discard(j)
        if vals and self._eager and len(self.values[key]) > self.nodes_with[key]:  # a key _build scans
            self._join(key, j, vals)
            if j % _BLOCK == _BLOCK - 1 and j == len(self.of_node) - 1:
                blocks[j // _BLOCK] = self._block(key, j // _BLOCK)

    def _join(self, key: str, j: int, vals: tuple[str, ...]) -> bytes | None:
        buf = pattern.join(vals)
        if buf is None:
            self._lone[key].add(j)
        else:
            self._joined[key][j] = buf
        return buf

    def _block(self, key: str, b: int) -> _Text:
        """Block b's text, from its nodes' joins (made here for those not joined yet)."""
        joined, lone, of_node = self._joined[key], self._lone[key], self.of_node
        nodes, parts = [], []
        for j in range(b * _BLOCK, min((b + 1) * _BLOCK, len(of_node))):
            buf = joined.get(j)
            if buf is None:
                vals = None if j in lone else of_node[j].get(key)
                if not vals or (buf := self._join(key, j, vals)) is None:
                    continue
            nodes.append(j)
            parts.append(buf)
        starts = list(accumulate(map((1).__add__, map(len, parts)), initial=0))
        starts.pop()
        return _Text(b"\n".join(parts), nodes, starts)

    def mask(self, e: Expr, n: int) -> np.ndarray:
        """Nodes 0..n-1 for which e (== or != on strings) holds; read-only, valid until the next `set`."""
        log = self._log[e.key]
        c = self._cached.get(e)
        if c is None or c.epoch != self._epoch[e.key]:
            if len(self._cached) >= _MAX_CACHED:
                self._cached.clear()
            c = self._cached[e] = _Cached(self._build(e, n), n, len(log), self._epoch[e.key])
        else:
            if len(c.mask) < n:
                grown = np.zeros(max(n, 2 * len(c.mask)), dtype=bool)
                grown[: len(c.mask)] = c.mask
                c.mask = grown
            for j in log[c.seen :]:
                if j < c.covered:
                    c.mask[j] = self.holds(e, j)
            for j in range(c.covered, n):
                c.mask[j] = self.holds(e, j)
            c.covered, c.seen = n, len(log)
        view = c.mask[:n]
        view.flags.writeable = False
        return view

    def holds(self, e: Expr, j: int) -> bool:
        hit = self._hit(e, j)
        return hit if e.op == EQ else not hit

    def _hit(self, e: Expr, j: int) -> bool:
        vals = self.of_node[j].get(e.key)
        if not vals:
            return False
        if e.is_literal:
            return e.value in vals
        if len(vals) == 1:
            return e.matches(vals[0])
        return bool(self._scan(e, (j,)))

    def _scan(self, e: Expr, nodes: Iterable[int]) -> list[int]:
        """Which of `nodes` offer a string e's pattern occurs in: one RE2 call per node, over its strings
        joined (kept per node until they change)."""
        p, key, of_node = e.pattern, e.key, self.of_node
        assert p is not None
        joined, lone = self._joined[key], self._lone[key]
        hits = []
        for j in nodes:
            vals = of_node[j].get(key)
            if not vals:
                continue
            buf = joined.get(j)
            if buf is None and j not in lone:
                buf = self._join(key, j, vals)
            if p.search_joined(buf) if (buf is not None and p.joinable) else p.search_any(vals):
                hits.append(j)
        return hits

    def _scan_all(self, e: Expr) -> list[int]:
        """`_scan` of every node, in one RE2 call per block of _BLOCK nodes, plus one per node that
        matches: over a block's text, a match names the node it starts in, and the search goes on from
        the next node's first string (the match is the leftmost: no node in between has one)."""
        p, key = e.pattern, e.key
        assert p is not None
        if not p.joinable:
            return self._scan(e, range(len(self.of_node)))
        blocks, find = self._blocks[key], p.find_joined
        hits = []
        for b in range(-(-len(self.of_node) // _BLOCK)):
            t = blocks.get(b)
            if t is None:
                t = blocks[b] = self._block(key, b)
            if not t.nodes:
                continue
            data, nodes, starts, last = t.data, t.nodes, t.starts, len(t.nodes) - 1
            at = find(data)
            while at >= 0:
                k = bisect_right(starts, at) - 1
                hits.append(nodes[k])
                if k == last:
                    break
                at = find(data, starts[k + 1])
        of_node = self.of_node  # every block is built now, so every node's join is made: the lone are known
        hits.extend(j for j in self._lone[key] if p.search_any(of_node[j][key]))
        return hits

    def _build(self, e: Expr, n: int) -> np.ndarray:
        by_value = self.values.get(e.key, {})
        hits: list[int] = []
        if e.is_literal:
            hits.extend(by_value.get(e.value, ()))
        elif len(by_value) <= self.nodes_with[e.key]:  # few distinct values: match each once
            for value, nodes in by_value.items():
                if e.matches(value):
                    hits.extend(nodes)
        else:  # more values than nodes (container names): every node's strings at once
            hits = self._scan_all(e)
        m = np.zeros(max(n, 16), dtype=bool)
        if hits:
            m[hits] = True
        if e.op != EQ:
            m[:n] = ~m[:n]
        return m


class ClusterIndex:
    def __init__(self, nodes: Iterable[NodeState] = ()) -> None:
        self.nodes: list[NodeState] = []
        self.pos: dict[str, int] = {}
        self.constraints = _Strings()
        self.affinities = _Strings(eager=True)
        # nodes whose containers or images changed since the affinity namespace last read them: it is
        # brought up to date when an affinity is asked about, so a placement's consume (one container
        # more on one node) costs nothing for requests that name no affinity. A new node is read at once
        # (unless earlier ones wait: positions are filled in order), so filling the index pays for them
        # there, not the first affinity placement after it.
        self._affinity_stale: set[int] = set()
        self._num: dict[str, np.ndarray] = {}
        self._cap = 0
        self.healthy = np.zeros(0, dtype=bool)
        self.health_code = np.zeros(0, dtype=np.int16)
        self.health_codes: dict[str, int] = {PASSING: 0}
        self.health_count: Counter[str] = Counter()
        self.gathered_at = np.zeros(0)
        self.cpus = np.zeros(0)
        self.memory = np.zeros(0)
        self.per_cpu = np.zeros(0)  # 1 / cpus (0 where the node reports none): shares are products
        self.per_byte = np.zeros(0)  # 1 / memory, likewise
        self.reserved_cpus = np.zeros(0)
        self.reserved_memory = np.zeros(0)
        self.containers = np.zeros(0)
        self.slots = np.zeros(0)  # the containerslots label (inf: no limit)
        self.slotted = 0  # nodes that have one
        self.container_nodes: dict[str, set[int]] = defaultdict(set)  # container name and id -> nodes
        self.port_nodes: dict[tuple[int, str], set[int]] = defaultdict(set)
        self.driver_nodes: dict[str, set[int]] = defaultdict(set)
        self.volume_nodes: dict[str, set[int]] = defaultdict(set)
        self.network_nodes: dict[str, set[int]] = defaultdict(set)
        # every upsert's position, in order: what changed since a cached filter run (shoal.scheduler.memo);
        # cleared (a new epoch) when replaying it would cost more than a full run
        self.changes: list[int] = []
        self.change_epoch = 0
        self.memo: dict[object, object] = {}  # shoal.scheduler.memo's cached runs for this index
        for n in nodes:
            self.upsert(n)

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, name: str) -> NodeState | None:
        j = self.pos.get(name)
        return None if j is None else self.nodes[j]

    # --- maintenance ------------------------------------------------------------------------------

    def _grow(self) -> None:
        cap = max(16, self._cap * 2)
        for name in (
            "healthy",
            "health_code",
            "gathered_at",
            "cpus",
            "memory",
            "per_cpu",
            "per_byte",
            "reserved_cpus",
            "reserved_memory",
            "containers",
            "slots",
        ):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        for key, arr in self._num.items():
            new = np.full(cap, np.nan)
            new[: len(arr)] = arr
            self._num[key] = new
        self._cap = cap

    def upsert(self, node: NodeState) -> int:
        """Adds or replaces one node; returns its position."""
        j = self._upsert(node)
        self.changes.append(j)
        if len(self.changes) > max(1024, len(self.nodes) // 4):
            self.changes.clear()
            self.change_epoch += 1
        return j

    def _upsert(self, node: NodeState) -> int:
        j = self.pos.get(node.name)
        old: NodeState | None = None
        if j is None:
            j = len(self.nodes)
            if j >= self._cap:
                self._grow()
            self.nodes.append(node)
            self.pos[node.name] = j
        else:
            old = self.nodes[j]
            self.nodes[j] = node
            self.health_count[old.health] -= 1
            self.slotted -= container_slots(old) is not None
        same_facts = old is not None and (
            old.facts is node.facts and old.labels is node.labels and old.id == node.id
        )
        if not same_facts:
            if old is not None and old.labels is node.labels and old.id == node.id:
                # new facts alone (every agent's every publish): only the keys of facts that changed
                moved = changed_facts(old, node)
                keys = dict(self.constraints.of_node[j])
                for key in moved:
                    if key in node.facts or key in node.labels:
                        keys[key] = candidates(node, key)
                    else:
                        keys.pop(key, None)
                touched = self.constraints.set(j, keys, only=moved)
            else:
                touched = self.constraints.set(j, constraint_keys(node))
            for key in touched:
                num = number(node, key)
                if num is None:
                    if key in self._num:
                        self._num[key][j] = np.nan
                    continue
                if key not in self._num:
                    self._num[key] = np.full(self._cap, np.nan)
                self._num[key][j] = num
        if old is None and not self._affinity_stale:
            self.affinities.set(j, affinity_keys(node))
        elif old is None or old.containers is not node.containers or old.images is not node.images:
            self._affinity_stale.add(j)
        self.healthy[j] = node.health == PASSING
        self.health_code[j] = self.health_codes.setdefault(node.health, len(self.health_codes))
        self.health_count[node.health] += 1
        self.gathered_at[j] = node.gathered_at
        self.cpus[j] = node.cpus
        self.memory[j] = node.memory
        self.per_cpu[j] = 1.0 / node.cpus if node.cpus > 0 else 0.0
        self.per_byte[j] = 1.0 / node.memory if node.memory > 0 else 0.0
        self.reserved_cpus[j] = node.reserved_cpus
        self.reserved_memory[j] = node.reserved_memory
        self.containers[j] = len(node.containers)
        slots = container_slots(node)
        self.slots[j] = np.inf if slots is None else slots
        self.slotted += slots is not None
        if old is not None and _appended(old.containers, node.containers):
            # a placement (consume) adds one container: only its names and ports are new
            for c in node.containers[len(old.containers) :]:
                for s in (c.name, c.id):
                    self.container_nodes[s].add(j)
                for port in container_ports(c):
                    self.port_nodes[port].add(j)
        elif old is None or old.containers is not node.containers:
            _diff(
                self.container_nodes,
                j,
                {s for c in old.containers for s in (c.name, c.id)} if old else set(),
                {s for c in node.containers for s in (c.name, c.id)},
            )
            _diff(
                self.port_nodes,
                j,
                {p for c in old.containers for p in container_ports(c)} if old else set(),
                {p for c in node.containers for p in container_ports(c)},
            )
        if old is None or old.volume_drivers is not node.volume_drivers:
            _diff(self.driver_nodes, j, old.volume_drivers if old else (), node.volume_drivers)
        if old is None or old.volumes is not node.volumes:
            _diff(self.volume_nodes, j, old.volumes if old else (), node.volumes)
        if old is None or old.networks is not node.networks:
            _diff(self.network_nodes, j, old.networks if old else (), node.networks)
        return j

    # --- queries ----------------------------------------------------------------------------------

    def all(self) -> np.ndarray:
        return np.ones(len(self.nodes), dtype=bool)

    def mask_of(self, positions: Iterable[int]) -> np.ndarray:
        m = np.zeros(len(self.nodes), dtype=bool)
        idx = list(positions)
        if idx:
            m[idx] = True
        return m

    def expr_mask(self, e: Expr) -> np.ndarray:
        """Nodes for which `e` holds (a constraint on node keys, or an affinity on container keys).
        Read-only; valid until the next `upsert`."""
        n = len(self.nodes)
        if e.op in NUMERIC:
            vals = self._num.get(e.key)
            if vals is None:
                return np.zeros(n, dtype=bool)
            with np.errstate(invalid="ignore"):  # NaN (no number) fails every comparison
                return _COMPARE[e.op](vals[:n], e.number)
        if e.kind != "affinity":
            return self.constraints.mask(e, n)
        if self._affinity_stale:
            for j in sorted(self._affinity_stale):
                self.affinities.set(j, affinity_keys(self.nodes[j]))
            self._affinity_stale.clear()
        return self.affinities.mask(e, n)

    # cluster-wide lookups a per-node check needs for its reason (filters.Lookups)

    def container_homes(self, ref: str) -> tuple[str, ...]:
        """The nodes holding a container with this name or id, in node order."""
        return tuple(self.nodes[j].name for j in sorted(self.container_nodes.get(ref, ())))

    def volume_homes(self, volume: str) -> tuple[str, ...]:
        """The nodes holding a named volume (or dataset) of this name, in node order."""
        return tuple(self.nodes[j].name for j in sorted(self.volume_nodes.get(volume, ())))


def _appended(before: tuple[ContainerRef, ...], after: tuple[ContainerRef, ...]) -> bool:
    """`after` is `before` with containers added at its end (the same objects: a tuple compare that
    stops at the first identity it cannot confirm is C-speed)."""
    return after is not before and len(after) > len(before) and after[: len(before)] == before


def _diff(index: dict[object, set[int]], j: int, before: Iterable[object], after: Iterable[object]) -> None:
    before, after = set(before), set(after)
    for v in before - after:
        s = index.get(v)
        if s is not None:
            s.discard(j)
            if not s:
                del index[v]
    for v in after - before:
        index[v].add(j)
