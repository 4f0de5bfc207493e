"""Dependencies: links, --volumes-from and --net/--pid/--ipc container: put a container on the node
of the containers it refers to."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class DependencyFilter:
    name = "dependency"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        if not spec.depends_on:
            return None
        homes = {ix.container_node.get(d) for d in spec.depends_on}
        if None in homes or len(homes) != 1:
            return np.zeros(len(ix), dtype=bool)
        return ix.mask_of(homes)  # type: ignore[arg-type]

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        missing = [d for d in spec.depends_on if d not in ix.container_node]
        if missing:
            return f"no node has container {', '.join(missing)} (a dependency)"
        homes = {d: ix.nodes[ix.container_node[d]].name for d in spec.depends_on}
        if len(set(homes.values())) > 1:
            return "dependencies are on different nodes: " + ", ".join(
                f"{d} on {n}" for d, n in homes.items()
            )
        return f"does not hold {', '.join(spec.depends_on)} (a dependency)"
