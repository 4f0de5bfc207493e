"""Ports: a host port already published on a node keeps a second container off it."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason
from shoal.scheduler.values import published_ports


class PortFilter:
    name = "port"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        if not spec.ports:
            return None
        used = published_ports(node)
        taken = [p for p in spec.ports if p in used]
        if not taken:
            return None
        detail = ", ".join(f"port {port}/{proto} (Host mode) is in use" for port, proto in taken)
        return Reason(self.name, "", detail, f"{taken[0][0]}/{taken[0][1]}")

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        return [
            (f"{self.name}:{p}/{proto}", ~ix.mask_of(ix.port_nodes.get((p, proto), ())))
            for p, proto in spec.ports
        ]
