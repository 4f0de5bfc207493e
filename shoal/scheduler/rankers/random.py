"""random: any node that passed the filters; a seed makes the draw repeatable (tests)."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class Random:
    name = "random"
    per_node = False  # a new draw every time: nothing to keep between decisions

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def score(self, ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
        return self._rng.random(len(nodes))
