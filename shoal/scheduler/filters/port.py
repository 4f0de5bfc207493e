"""Ports: a host port already published on a node keeps a second container off it."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class PortFilter:
    name = "port"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        if not spec.ports:
            return None
        used: set[int] = set()
        for p in spec.ports:
            used |= ix.port_nodes.get(p, set())
        return ~ix.mask_of(used)

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        taken = [p for p in spec.ports if j in ix.port_nodes.get(p, set())]
        return ", ".join(f"port {port}/{proto} (Host mode) is in use" for port, proto in taken)
