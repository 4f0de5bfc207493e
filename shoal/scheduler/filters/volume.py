"""Volumes: the node must serve the requested volume driver, and a named volume that already exists goes
with the container: mounting one that lives on node2 puts the container on node2 (its data is there),
while a name that exists nowhere yet may land anywhere (the engine makes it)."""

from __future__ import annotations

from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason


def _driver(spec: ContainerSpec) -> str:
    """The driver a node must serve ("": none beyond `local`, which every engine has)."""
    return spec.volume_driver if spec.volume_driver not in ("", "local") else ""


class VolumeFilter:
    name = "volume"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        driver = _driver(spec)
        if driver and driver not in node.volume_drivers:
            serves = ", ".join(sorted(node.volume_drivers))
            return Reason(
                self.name,
                "",
                f"does not serve volume driver {driver} (it serves {serves})",
                f"driver={driver}",
            )
        missing = [v for v in spec.volumes if v not in node.volumes and ctx.cluster.volume_homes(v)]
        if not missing:
            return None
        where = ", ".join(ctx.cluster.volume_homes(missing[0]))
        return Reason(
            self.name, "", f"does not hold volume {', '.join(missing)} (it lives on {where})", missing[0]
        )

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        out = []
        if driver := _driver(spec):
            out.append((f"{self.name}:driver={driver}", ix.mask_of(ix.driver_nodes.get(driver, ()))))
        for v in spec.volumes:
            if holders := ix.volume_nodes.get(v):
                out.append((f"{self.name}:{v}", ix.mask_of(holders)))
        return out
