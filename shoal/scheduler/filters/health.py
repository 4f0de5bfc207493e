"""Health: a node whose agent check is not passing, or whose facts are older than the TTL, is out."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class HealthFilter:
    name = "health"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray:
        n = len(ix)
        return ix.healthy[:n] & (ctx.now - ix.gathered_at[:n] <= ctx.fact_ttl)

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        node = ix.nodes[j]
        age = ctx.now - node.gathered_at
        if node.health != "passing":
            return f"{node.health} (facts {age:.0f}s old)"
        return f"stale (facts {age:.0f}s old, TTL {ctx.fact_ttl:.0f}s)"
