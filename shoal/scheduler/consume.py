"""(placeholder until the scheduler helper's version lands)"""

from __future__ import annotations

from dataclasses import replace

from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState


def consume(node: NodeState, spec: ContainerSpec, container: ContainerRef) -> NodeState:
    return replace(
        node,
        containers=(*node.containers, container),
        reserved_cpus=node.reserved_cpus + spec.cpus,
        reserved_memory=node.reserved_memory + spec.memory,
    )
