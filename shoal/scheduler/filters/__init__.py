"""One filter per module. Each says what it means once, per node, and once more, vectorised, as an
optimisation that a property test (tests/unit/scheduler/test_filters_agree.py) holds to that meaning:

- `check(node, spec, ctx) -> Reason | None`: the meaning. None passes; a Reason says which expression
  failed and why, in words a person can act on. It reads the node and, where a rule relates nodes to
  each other (a dependency's home, an existing volume's node), the cluster-wide lookups in `ctx`.
- `clauses(ix, spec, ctx) -> [(key, mask)]`: the same rule over every node of the index at once, one
  clause per reason `check` can give, in the order `check` tries them, each with the Reason.key it
  counts under. A node passes the filter when it passes every clause (`mask`); the first clause it fails
  is its reason's key, so per-reason counts (Nomad's ConstraintFiltered) cost a few numpy operations on
  any cluster size, and `check` is only asked about the few nodes a person is shown.

`check` takes a Context and not only the node (STYLE.md's `check(node, spec)`): whether a node passes
also depends on the clock and the fact TTL (health), on whether soft expressions still count (the first
pass), and for two filters on other nodes; those are not properties of the node. Filters run cheapest
first, in `default_filters()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason

FACT_TTL = 30.0  # facts older than this count as absent (the node is left out as stale)

Clause = tuple[str, np.ndarray]  # (Reason.key of the nodes that fail it, which nodes pass)


class Lookups(Protocol):
    """Cluster-wide facts a per-node check needs (ClusterIndex provides them)."""

    def container_homes(self, ref: str) -> tuple[str, ...]: ...

    def volume_homes(self, volume: str) -> tuple[str, ...]: ...


class _Nothing:
    def container_homes(self, ref: str) -> tuple[str, ...]:
        return ()

    def volume_homes(self, volume: str) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Context:
    now: float
    fact_ttl: float = FACT_TTL
    soft: bool = True  # soft expressions count as hard on the first pass
    cluster: Lookups = field(default_factory=_Nothing)  # place() passes the index

    def counts(self, e_soft: bool) -> bool:
        """Does an expression count on this pass?"""
        return self.soft or not e_soft


class Filter(Protocol):
    name: str

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        """None if the node passes, else the first reason it does not."""

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> Sequence[Clause]:
        """The same rule over the whole index; empty when the request does not involve this filter."""


def mask(f: Filter, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
    """Which nodes pass `f` (the fast path); None when the request does not involve it."""
    cs = f.clauses(ix, spec, ctx)
    if not cs:
        return None
    m = cs[0][1]
    for _, c in cs[1:]:
        m = m & c
    return m


def default_filters() -> list[Filter]:
    from shoal.scheduler.filters.affinity import AffinityFilter
    from shoal.scheduler.filters.constraint import ConstraintFilter
    from shoal.scheduler.filters.dependency import DependencyFilter
    from shoal.scheduler.filters.health import HealthFilter
    from shoal.scheduler.filters.network import NetworkFilter
    from shoal.scheduler.filters.port import PortFilter
    from shoal.scheduler.filters.resources import ResourcesFilter
    from shoal.scheduler.filters.slots import SlotsFilter
    from shoal.scheduler.filters.volume import VolumeFilter

    return [
        HealthFilter(),
        ConstraintFilter(),
        AffinityFilter(),
        DependencyFilter(),
        PortFilter(),
        SlotsFilter(),
        VolumeFilter(),
        NetworkFilter(),
        ResourcesFilter(),
    ]
