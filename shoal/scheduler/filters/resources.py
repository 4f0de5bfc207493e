"""Resources: what `-m`, `--cpus` and `--cpu-shares` reserve must fit in what the node has left."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec

MiB = 1024 * 1024


class ResourcesFilter:
    name = "resources"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        if not spec.memory and not spec.cpus:
            return None
        n = len(ix)
        m = np.ones(n, dtype=bool)
        if spec.memory:
            m &= ix.memory[:n] - ix.reserved_memory[:n] >= spec.memory
        if spec.cpus:
            m &= ix.cpus[:n] - ix.reserved_cpus[:n] >= spec.cpus - 1e-9
        return m

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        node = ix.nodes[j]
        free_mem = node.memory - node.reserved_memory
        if spec.memory and free_mem < spec.memory:
            return f"memory {spec.memory // MiB}M > free {max(free_mem, 0) // MiB}M"
        free_cpu = node.cpus - node.reserved_cpus
        return f"cpus {spec.cpus:g} > free {max(free_cpu, 0):g}"
