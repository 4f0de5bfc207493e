"""Container slots: a node labelled `containerslots=N` (classic Swarm's engine label; shoal also reads
`com.docker.swarm.containerslots`, as an engine or agent label) holds at most N containers, counting
every container on it, stopped ones too, as Swarm's slots filter counted them. A value that is not a
whole number is ignored, as Swarm ignored it."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason
from shoal.scheduler.values import container_slots


class SlotsFilter:
    name = "containerslots"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        slots = container_slots(node)
        if slots is None or len(node.containers) < slots:
            return None
        detail = f"has no free container slot ({len(node.containers)} containers, containerslots={slots})"
        return Reason(self.name, "", detail, "full")

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        n = len(ix)
        if not ix.slotted:  # no node has the label: nothing to say (and nothing to compute)
            return []
        return [(f"{self.name}:full", ix.containers[:n] < ix.slots[:n])]
