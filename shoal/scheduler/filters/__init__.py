"""One filter per module, each a feasibility check over the whole index at once (`mask`) and a
person-readable reason for one node (`explain`), cheapest first in `DEFAULT_FILTERS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec

FACT_TTL = 30.0  # facts older than this count as absent (the node is left out as stale)


@dataclass(frozen=True, slots=True)
class Context:
    now: float
    fact_ttl: float = FACT_TTL
    soft: bool = True  # soft expressions count as hard on the first pass


class Filter(Protocol):
    name: str

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        """Which nodes pass; None when the request does not involve this filter."""

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        """Why node j does not pass (only asked about nodes that did not)."""


def default_filters() -> list[Filter]:
    from shoal.scheduler.filters.affinity import AffinityFilter
    from shoal.scheduler.filters.constraint import ConstraintFilter
    from shoal.scheduler.filters.dependency import DependencyFilter
    from shoal.scheduler.filters.health import HealthFilter
    from shoal.scheduler.filters.network import NetworkFilter
    from shoal.scheduler.filters.port import PortFilter
    from shoal.scheduler.filters.resources import ResourcesFilter
    from shoal.scheduler.filters.volume import VolumeFilter

    return [
        HealthFilter(),
        ConstraintFilter(),
        AffinityFilter(),
        DependencyFilter(),
        PortFilter(),
        VolumeFilter(),
        NetworkFilter(),
        ResourcesFilter(),
    ]
