"""The cluster as the filters read it: node states, and indexes that make a decision over 10,000 nodes
cost a few vectorised operations instead of a Python loop per node.

- every key a constraint can name maps each distinct candidate string to the nodes that have it, so
  `==`/`!=` visit distinct values (a handful for `architecture`), not nodes;
- numeric facts keep their float per node, compared as one numpy array;
- an expression's node mask is cached until a node's value for that key changes (a per-key version).

Updating one node (its facts changed, a container was placed) touches only that node's entries.
Pure data structure: no I/O; the manager feeds it from the registry and the engines, the simulator
from generated nodes, through the same `upsert`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from shoal.scheduler.expr import EQ, NUMERIC, Expr
from shoal.scheduler.model import PASSING, NodeState

_BOOL = {True: ("true", "True"), False: ("false", "False")}
ENGINE_KEYS = ("storagedriver", "kernelversion", "operatingsystem", "ostype")


def candidates(node: NodeState, key: str) -> tuple[str, ...]:
    """Every string a node offers for `key`: its name/id for `node`; else its label and its fact
    (both, when both exist: `operatingsystem` is Docker's "Debian GNU/Linux 12" and Facter's "Debian")."""
    if key == "node":
        return (node.name, node.id) if node.id else (node.name,)
    out: list[str] = []
    if key in node.labels:
        out.append(str(node.labels[key]))
    if key in node.facts:
        v = node.facts[key]
        out.extend(_BOOL[v] if isinstance(v, bool) else (_fmt(v),))
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10:
            out.append(f"0{v}")  # also as two digits: the seed's /[0-2][0-5]/ reads a 2-digit percentage
    return tuple(out)


def number(node: NodeState, key: str) -> float | None:
    v = node.facts.get(key, node.labels.get(key))
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else str(v)
    return str(v)


class ClusterIndex:
    def __init__(self, nodes: Iterable[NodeState] = ()) -> None:
        self.nodes: list[NodeState] = []
        self.pos: dict[str, int] = {}
        self._values: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        self._keys_of: list[dict[str, tuple[str, ...]]] = []
        self._num: dict[str, np.ndarray] = {}
        self._version: dict[str, int] = defaultdict(int)
        self._cache: dict[tuple[Expr, int, int], np.ndarray] = {}
        self._cap = 0
        self.healthy = np.zeros(0, dtype=bool)
        self.gathered_at = np.zeros(0)
        self.cpus = np.zeros(0)
        self.memory = np.zeros(0)
        self.reserved_cpus = np.zeros(0)
        self.reserved_memory = np.zeros(0)
        self.containers = np.zeros(0)
        self.container_node: dict[str, int] = {}  # container name and id -> node
        self.port_nodes: dict[tuple[int, str], set[int]] = defaultdict(set)
        self.driver_nodes: dict[str, set[int]] = defaultdict(set)
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
            "gathered_at",
            "cpus",
            "memory",
            "reserved_cpus",
            "reserved_memory",
            "containers",
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
        j = self.pos.get(node.name)
        keys = {"node": candidates(node, "node")}
        for key in {*node.facts, *node.labels}:
            keys[key] = candidates(node, key)
        if j is None:
            j = len(self.nodes)
            if j >= self._cap:
                self._grow()
            self.nodes.append(node)
            self._keys_of.append({})
            self.pos[node.name] = j
            old_keys: dict[str, tuple[str, ...]] = {}
        else:
            old_keys = self._keys_of[j]
            self._forget_objects(j)
            self.nodes[j] = node
        # only keys whose values changed are touched, so placing a container (which changes no fact)
        # keeps every cached expression mask valid
        for key in old_keys.keys() - keys.keys():
            self._unindex(j, key, old_keys[key])
        for key, cands in keys.items():
            if old_keys.get(key) == cands:
                continue
            if key in old_keys:
                self._unindex(j, key, old_keys[key])
            for c in cands:
                self._values[key][c].add(j)
            self._version[key] += 1
            num = number(node, key) if key != "node" else None
            if num is not None:
                if key not in self._num:
                    self._num[key] = np.full(self._cap, np.nan)
                self._num[key][j] = num
        self._keys_of[j] = keys
        self.healthy[j] = node.health == PASSING
        self.gathered_at[j] = node.gathered_at
        self.cpus[j] = node.cpus
        self.memory[j] = node.memory
        self.reserved_cpus[j] = node.reserved_cpus
        self.reserved_memory[j] = node.reserved_memory
        self.containers[j] = len(node.containers)
        for c in node.containers:
            self.container_node[c.name] = j
            self.container_node[c.id] = j
            for p in c.ports:
                self.port_nodes[p].add(j)
        for d in node.volume_drivers:
            self.driver_nodes[d].add(j)
        return j

    def _unindex(self, j: int, key: str, cands: tuple[str, ...]) -> None:
        for c in cands:
            s = self._values[key].get(c)
            if s is not None:
                s.discard(j)
                if not s:
                    del self._values[key][c]
        self._version[key] += 1
        if key in self._num:
            self._num[key][j] = np.nan

    def _forget_objects(self, j: int) -> None:
        """Drops node j's containers, ports and drivers from the indexes (its keys are diffed instead)."""
        old = self.nodes[j]
        for c in old.containers:
            self.container_node.pop(c.name, None)
            self.container_node.pop(c.id, None)
            for p in c.ports:
                self.port_nodes[p].discard(j)
        for d in old.volume_drivers:
            self.driver_nodes[d].discard(j)

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
        """Nodes for which constraint `e` holds, cached until a node's value for e.key changes."""
        key = (e, self._version[e.key], len(self.nodes))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = len(self.nodes)
        if e.op in NUMERIC:
            vals = self._num.get(e.key)
            if vals is None:
                m = np.zeros(n, dtype=bool)
            else:
                v = vals[:n]
                with np.errstate(invalid="ignore"):
                    m = {"<": v < e.number, "<=": v <= e.number, ">": v > e.number, ">=": v >= e.number}[e.op]
        else:
            hits: list[int] = []
            for value, nodes in self._values.get(e.key, {}).items():
                if e.matches(value):
                    hits.extend(nodes)
            m = self.mask_of(hits)
            if e.op != EQ:
                m = ~m
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = m
        return m
