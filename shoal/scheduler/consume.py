"""consume(): a placement taken, as a pure step (Nova's consume_from_request): the chosen node with the
new container on it and the container's CPUs and memory reserved, so the next decision sees them.

The manager puts the result back with `ClusterIndex.upsert`; facts and labels are carried over as the
same objects, so the index re-reads only the node's containers and reservations.
"""

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
