"""The dashboard (the seed's DockerUI): one page served by the manager at /dashboard, fed by
/shoal/v1/overview — nodes with health and live facts, containers per node, datasets and snapshots,
services and checks, and the recent placement decisions with their reasons. The page polls, so it is live."""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import Any

from aiohttp import web

from shoal.api.docker.common import manager_of, reply_json
from shoal.cluster.status import status_text
from shoal.data.model import Dataset
from shoal.errors import ShoalError
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
) -> dict[str, Any]:
    """Pure: the cluster as the dashboard shows it."""
    out_nodes = []
    for n in sorted(nodes, key=lambda n: n.name):
        age = now - n.gathered_at if n.gathered_at else None
        health = n.health if age is None or age <= fact_ttl else "stale"
        out_nodes.append(
            {
                "name": n.name,
                "address": n.address,
                "engine": n.engine,
                "health": health,
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
            {**d.to_dict(), "mounts": mounts.get(d.id, 0)} for d in sorted(datasets, key=lambda d: d.created)
        ],
        "checks": [
            {k: c.get(k, "") for k in ("Node", "CheckID", "Name", "Status", "ServiceName", "Output")}
            for c in checks
        ],
        "decisions": decisions[:30],
        "time": now,
    }


async def overview_handler(request: web.Request) -> web.Response:
    m = manager_of(request)
    c = m.cluster
    checks: list[dict[str, Any]] = []
    mounts: dict[str, int] = {}
    with contextlib.suppress(ShoalError, ValueError):
        checks = await c.client.health_state("any")
    with contextlib.suppress(ShoalError, ValueError):
        assert c.records is not None
        mounts = await c.records.all_mounts()
    states = {cid: s for e in c.engines.values() for cid, s in e.states.items()}
    doc = overview(
        list(c.index.nodes),
        {e.node: e.containers for e in c.engines.values()},
        states,
        c.datasets,
        mounts,
        checks,
        list(reversed(m.decisions)),
        c.now(),
        m.fact_ttl,
    )
    return reply_json(doc)


async def page(request: web.Request) -> web.Response:
    html = resources.files("shoal.api.dashboard").joinpath("index.html").read_text()
    return web.Response(text=html, content_type="text/html")
