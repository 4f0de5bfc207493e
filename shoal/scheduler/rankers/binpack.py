"""binpack: the node most reserved after this container (that still fits: the resources filter saw to
that) wins, so others stay empty for big containers; more containers break a tie."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec
from shoal.scheduler.rankers import reserved_share


class MostReserved:
    name = "binpack"
    per_node = True

    def score(self, ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
        return reserved_share(ix, spec, nodes)


class MostContainers:
    """0 for an empty node, N/(1+N) with N containers."""

    name = "containers"
    per_node = True

    def score(self, ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
        c = ix.containers[nodes]
        return c / (1.0 + c)
