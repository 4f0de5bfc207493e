"""Networks: a container joins its user-defined networks on its own node, so the node must have them
(local-scope networks are per engine; the manager makes them on every node unless told one)."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class NetworkFilter:
    name = "network"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        if not spec.networks:
            return None
        return np.fromiter(
            (all(net in n.networks for net in spec.networks) for n in ix.nodes), dtype=bool, count=len(ix)
        )

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        missing = [net for net in spec.networks if net not in ix.nodes[j].networks]
        return f"has no network {', '.join(missing)} (docker network create {missing[0]} makes it)"
