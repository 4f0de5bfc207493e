"""Health: a node whose agent check is not passing, or whose facts are older than the TTL, is out."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import PASSING, ContainerSpec, NodeState, Reason


class HealthFilter:
    name = "health"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        age = ctx.now - node.gathered_at
        if node.health != PASSING:
            return Reason(self.name, "", f"{node.health} (facts {age:.0f}s old)", node.health)
        if not age <= ctx.fact_ttl:
            return Reason(self.name, "", f"stale (facts {age:.0f}s old, TTL {ctx.fact_ttl:.0f}s)", "stale")
        return None

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        n = len(ix)
        out = [
            (f"{self.name}:{h}", ix.health_code[:n] != ix.health_codes[h])
            for h, count in ix.health_count.items()
            if count > 0 and h != PASSING
        ]
        out.append((f"{self.name}:stale", ctx.now - ix.gathered_at[:n] <= ctx.fact_ttl))
        return out
