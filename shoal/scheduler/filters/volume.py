"""Volumes: the node must serve the requested volume driver, and hold the named local volumes used."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class VolumeFilter:
    name = "volume"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        if not (spec.volume_driver and spec.volume_driver != "local") and not spec.volumes:
            return None
        m = ix.all()
        if spec.volume_driver and spec.volume_driver != "local":
            m &= ix.mask_of(ix.driver_nodes.get(spec.volume_driver, set()))
        if spec.volumes:
            m &= np.fromiter(
                (all(v in n.volumes for v in spec.volumes) for n in ix.nodes), dtype=bool, count=len(ix)
            )
        return m

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        node = ix.nodes[j]
        if spec.volume_driver and spec.volume_driver not in node.volume_drivers:
            serves = ", ".join(sorted(node.volume_drivers))
            return f"does not serve volume driver {spec.volume_driver} (it serves {serves})"
        missing = [v for v in spec.volumes if v not in node.volumes]
        return f"does not hold volume {', '.join(missing)}"
