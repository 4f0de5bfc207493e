"""What the dashboard (the seed's DockerUI) shows, as one plain document: nodes with health, availability
(draining, down) and live facts, containers per node, datasets and snapshots with their replicas (node,
lag) and any move under way (phase, bytes, rate), services and checks, and the recent placement, move,
promotion, replica, reschedule and drain decisions with their reasons, those logged by earlier managers too
(shoal.manager.decisions) (pure: built from the cache's data and a clock)."""

from __future__ import annotations

from typing import Any

from shoal.cluster.status import status_text
from shoal.data.model import Dataset
from shoal.data.moves import Move
from shoal.scheduler.model import NodeState

KEY_FACTS = (
    "system_overload_1min",
    "system_overload_10min",
    "virtual",
    "hardwaremodel",
    "selinux_enforced",
    "processorcount",
    "memoryfree_mb",
    "docker_volume_drivers",
    "kernelrelease",
)


def overview(
    nodes: list[NodeState],
    containers: dict[str, list[dict[str, Any]]],
    states: dict[str, dict[str, Any]],
    datasets: list[Dataset],
    mounts: dict[str, int],
    checks: list[dict[str, Any]],
    decisions: list[dict[str, Any]],
    now: float,
    fact_ttl: float,
    replicas: dict[str, list[dict[str, Any]]] | None = None,
    moves: dict[str, Move] | None = None,
    draining: frozenset[str] = frozenset(),
    down: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Pure: the cluster as the dashboard shows it. `replicas` is dataset id -> each replica's row (node,
    lag, snapshot, error: Records.replica_rows), `moves` the moves under way, `down` node -> since when."""
    replicas, moves, down = replicas or {}, moves or {}, down or {}
    out_nodes = []
    for n in sorted(nodes, key=lambda n: n.name):
        age = now - n.gathered_at if n.gathered_at else None
        health = n.health if age is None or age <= fact_ttl else "stale"
        if n.name in down:
            health = "down"
        out_nodes.append(
            {
                "name": n.name,
                "address": n.address,
                "engine": n.engine,
                "health": health,
                "availability": "drain" if n.name in draining else "active",
                "down_for": round(now - down[n.name], 1) if n.name in down else None,
                "facts_age": round(age, 1) if age is not None else None,
                "facts": {k: n.facts[k] for k in KEY_FACTS if k in n.facts},
                "labels": dict(n.labels),
                "reserved": {"cpus": n.reserved_cpus, "memory": n.reserved_memory},
                "containers": [
                    {
                        "id": c["Id"][:12],
                        "name": (c.get("Names") or ["/?"])[0].lstrip("/"),
                        "image": c.get("Image", ""),
                        "state": c.get("State", ""),
                        "status": status_text(states[c["Id"]], now)
                        if c["Id"] in states
                        else c.get("Status", ""),
                    }
                    for c in containers.get(n.name, [])
                ],
            }
        )
    return {
        "nodes": out_nodes,
        "datasets": [
            {
                **d.to_dict(),
                "mounts": mounts.get(d.id, 0),
                "replicas": replicas.get(d.id, []),
                "move": _move(moves[d.id], now) if d.id in moves else None,
            }
            for d in sorted(datasets, key=lambda d: d.created)
        ],
        "checks": [
            {k: c.get(k, "") for k in ("Node", "CheckID", "Name", "Status", "ServiceName", "Output")}
            for c in checks
        ],
        "decisions": [_shown(d) for d in decisions[:30]],
        "time": now,
    }


def _shown(d: dict[str, Any]) -> dict[str, Any]:
    """A move, promotion, reschedule or drain that sent nothing anywhere (a move undone, a container not
    rescheduled) says where things stayed, where the page would say a placement found no node."""
    p = d.get("placement") or {}
    if not d.get("kind") or p.get("node"):
        return d
    source = d.get("source") or "its node"
    shown = {"drain": "draining", "replica": "no replica node fits"}.get(d["kind"], f"stays on {source}")
    return {**d, "placement": {**p, "node": shown}}


def _move(m: Move, now: float) -> dict[str, Any]:
    return {
        "source": m.source,
        "target": m.target,
        "phase": m.phase,
        "bytes": m.bytes,
        "rate": round(m.rate),
        "pulls": m.pulls,
        "for": round(now - m.started, 1) if m.started else None,
        "by": m.by,
    }
