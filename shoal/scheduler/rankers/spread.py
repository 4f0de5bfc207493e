"""spread: the node least reserved after this container wins; fewer containers break a tie."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec
from shoal.scheduler.rankers import reserved_share


class LeastReserved:
    name = "spread"
    per_node = True

    def score(self, ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
        share = reserved_share(ix, spec, nodes)
        return np.subtract(1.0, share, out=share)


class FewestContainers:
    """1 for an empty node, 1/2 with one container, 1/(1+N) with N."""

    name = "containers"
    per_node = True

    def score(self, ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + ix.containers[nodes])
