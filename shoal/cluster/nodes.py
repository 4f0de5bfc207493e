"""From what the agents publish (facts, info, health) and what the engine reports, to a NodeState.

Pure, and the one road into the scheduler: the manager feeds it documents read from the registry,
the simulator feeds it documents shaped the same way, so a benchmark on 10,000 simulated nodes
runs the very code that places containers on real ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shoal.scheduler.model import ContainerRef, NodeState


def node_state(
    facts_doc: Mapping[str, Any],
    info_doc: Mapping[str, Any],
    health: str,
    containers: Sequence[ContainerRef] = (),
    engine_info: Mapping[str, Any] | None = None,
    images: frozenset[str] = frozenset(),
    reserved_cpus: float = 0.0,
    reserved_memory: int = 0,
    volumes: frozenset[str] = frozenset(),
    networks: frozenset[str] = frozenset(),
) -> NodeState:
    facts = dict(facts_doc.get("facts", {}))
    labels: dict[str, str] = {}
    labels.update(info_doc.get("engine_labels", {}))
    labels.update(info_doc.get("labels", {}))  # agent labels
    if engine_info:  # classic Swarm's engine-derived keys
        labels.update(
            {
                "storagedriver": engine_info.get("Driver", ""),
                "kernelversion": engine_info.get("KernelVersion", ""),
                "operatingsystem": engine_info.get("OperatingSystem", ""),
                "ostype": engine_info.get("OSType", ""),
            }
        )
    drivers = {d for d in str(facts.get("docker_volume_drivers", "")).split(",") if d} | {"local"}
    return NodeState(
        name=str(info_doc.get("node") or facts_doc.get("node")),
        id=str(info_doc.get("id", "")) or str(info_doc.get("node", "")),
        address=str(info_doc.get("address", "")),
        engine=str(info_doc.get("engine", "")),
        health=health,
        gathered_at=float(facts_doc.get("gathered_at", 0.0)),
        facts=facts,
        labels=labels,
        cpus=float(info_doc.get("cpus", 0) or 0),
        memory=int(float(info_doc.get("memory_mb", 0) or 0) * 1024 * 1024),
        reserved_cpus=reserved_cpus,
        reserved_memory=reserved_memory,
        containers=tuple(containers),
        images=images,
        volume_drivers=frozenset(drivers),
        volumes=volumes,
        networks=networks,
    )
