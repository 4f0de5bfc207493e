"""Resources: what `-m`, `--cpus` and `--cpu-shares` reserve must fit in what the node has left."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason

MiB = 1024 * 1024
CPU_SLACK = 1e-9  # 0.1 + 0.2 cpus fit in 0.3


class ResourcesFilter:
    name = "resources"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        free_mem = node.memory - node.reserved_memory
        if spec.memory and not free_mem >= spec.memory:
            detail = f"memory {spec.memory // MiB}M > free {max(free_mem, 0) // MiB}M"
            return Reason(self.name, "", detail, "memory")
        free_cpu = node.cpus - node.reserved_cpus
        if spec.cpus and not free_cpu >= spec.cpus - CPU_SLACK:
            return Reason(self.name, "", f"cpus {spec.cpus:g} > free {max(free_cpu, 0):g}", "cpus")
        return None

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        n = len(ix)
        out = []
        if spec.memory:
            out.append((f"{self.name}:memory", ix.memory[:n] - ix.reserved_memory[:n] >= spec.memory))
        if spec.cpus:
            out.append((f"{self.name}:cpus", ix.cpus[:n] - ix.reserved_cpus[:n] >= spec.cpus - CPU_SLACK))
        return out
