"""Rankers (Nova's weighers, Nomad's named scores): each gives every node a named score in 0..1, higher
is better, computed over the whole index at once. A Strategy (strategy.py) weights and sums them, and
breaks equal totals with its tie rankers; the Placement keeps each component, so `shoal why` can say
"spread 0.67 x1 -> 0.67" instead of one opaque number.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec


class Ranker(Protocol):
    name: str
    # a node's score depends only on its own row of the index and the request, so a ranking can be kept
    # between decisions and patched for the nodes that changed (shoal.scheduler.rank.KeptRank)
    per_node: bool

    def score(self, ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
        """One value in 0..1 for each of `nodes` (positions in the index: the candidates)."""


def reserved_share(ix: ClusterIndex, spec: ContainerSpec, nodes: np.ndarray) -> np.ndarray:
    """How full each node would be with this container: the larger of its reserved CPU and memory
    shares, counting the container's own reservation; in 0..1 (a node reserved beyond its size is 1;
    a node that reports no CPUs or memory counts as empty on that axis, as classic Swarm's weighNodes)."""
    cpu = ix.reserved_cpus[nodes]
    cpu += spec.cpus
    cpu *= ix.per_cpu[nodes]
    mem = ix.reserved_memory[nodes]
    mem += spec.memory
    mem *= ix.per_byte[nodes]
    share = np.maximum(cpu, mem, out=cpu)
    return np.minimum(np.maximum(share, 0.0, out=share), 1.0, out=share)
