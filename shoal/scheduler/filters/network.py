"""Networks: a container joins its user-defined networks on its own node, so the node must have them
(local-scope networks are per engine; the manager makes them on every node unless told one)."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason


class NetworkFilter:
    name = "network"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        missing = [net for net in spec.networks if net not in node.networks]
        if not missing:
            return None
        detail = f"has no network {', '.join(missing)} (docker network create {missing[0]} makes it)"
        return Reason(self.name, "", detail, missing[0])

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        return [(f"{self.name}:{net}", ix.mask_of(ix.network_nodes.get(net, ()))) for net in spec.networks]
