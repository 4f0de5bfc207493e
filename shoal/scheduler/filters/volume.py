"""Volumes: the node must serve the requested volume driver, and a named volume that already exists goes
with the container: mounting one that lives on node2 puts the container on node2 (its data is there),
while a name that exists nowhere yet may land anywhere (the engine makes it)."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


def _holders(ix: ClusterIndex, volume: str) -> list[int]:
    return [j for j, n in enumerate(ix.nodes) if volume in n.volumes]


class VolumeFilter:
    name = "volume"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        if not (spec.volume_driver and spec.volume_driver != "local") and not spec.volumes:
            return None
        m = ix.all()
        if spec.volume_driver and spec.volume_driver != "local":
            m &= ix.mask_of(ix.driver_nodes.get(spec.volume_driver, set()))
        for v in spec.volumes:
            if holders := _holders(ix, v):
                m &= ix.mask_of(holders)
        return m

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        node = ix.nodes[j]
        if spec.volume_driver and spec.volume_driver not in node.volume_drivers:
            serves = ", ".join(sorted(node.volume_drivers))
            return f"does not serve volume driver {spec.volume_driver} (it serves {serves})"
        missing = [v for v in spec.volumes if v not in node.volumes and _holders(ix, v)]
        where = ", ".join(ix.nodes[h].name for h in _holders(ix, missing[0])) if missing else ""
        return f"does not hold volume {', '.join(missing)} (it lives on {where})"
