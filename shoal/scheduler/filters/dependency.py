"""Dependencies: links, --volumes-from and --net/--pid/--ipc container: put a container on the node
of the containers it refers to (a node passes when it holds every one, by name or id)."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason
from shoal.scheduler.values import holds_container


class DependencyFilter:
    name = "dependency"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        lacks = [d for d in spec.depends_on if not holds_container(node, d)]
        if not lacks:
            return None
        homes = {d: ctx.cluster.container_homes(d) for d in spec.depends_on}
        if missing := [d for d, h in homes.items() if not h]:
            detail = f"no node has container {', '.join(missing)} (a dependency)"
        elif not set.intersection(*(set(hs) for hs in homes.values())):  # no one node holds them all
            detail = "dependencies are on different nodes: " + ", ".join(
                f"{d} on {'/'.join(h)}" for d, h in homes.items()
            )
        else:
            where = "; ".join(f"{d} is on {'/'.join(homes[d])}" for d in lacks)
            detail = f"does not hold {', '.join(lacks)} (a dependency: {where})"
        return Reason(self.name, "", detail, lacks[0])

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        return [(f"{self.name}:{d}", ix.mask_of(ix.container_nodes.get(d, ()))) for d in spec.depends_on]
