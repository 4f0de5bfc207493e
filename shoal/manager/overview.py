"""What the dashboard (the seed's DockerUI) shows, as one plain document: a summary of every node (how many
are passing, stale, down, critical, draining; their containers), one page of node cards (health,
availability, live facts, containers), nodes needing attention first, datasets and snapshots with their
replicas (node, lag) and any move under way (phase, bytes, rate), the checks that matter (the page's and
every failing one), and the recent placement, move, promotion, replica, reschedule and drain decisions with
their reasons, those logged by earlier managers too (shoal.manager.decisions) (pure: built from the
cache's data and a clock).

Paged because at 1,000 nodes x 30 containers one document with every card is 30,000 container rows a
poll: only the page's cards are built, and the summary is counted from what the cache already keeps per
engine (`Engine.counts()`), so an answer costs O(nodes + the page's containers), not O(all containers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.cluster.status import RunState, status_text
from shoal.data.model import Dataset
from shoal.data.moves import Move
from shoal.errors import BadRequest
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
PER_PAGE, MAX_PER_PAGE = 50, 200  # node cards a page: the default and the most one answer holds
MAX_Q = 256  # a name filter longer than any node name matches nothing: refused rather than scanned
FAILING_CHECKS = 200  # non-passing checks of nodes off the page shown at most (the rest only counted)
# a card's health -> its place in the list: what an operator must look at comes first (a draining but
# passing node after every unhealthy one, before the passing ones)
ATTENTION = {"down": 0, "critical": 1, "stale": 2, "warning": 3, "unknown": 3}
DRAINING, FINE = 4, 5
HEALTHS = ("passing", "warning", "critical", "unknown", "stale", "down")
CHECK_FIELDS = ("Node", "CheckID", "Name", "Status", "ServiceName", "Output")


@dataclass(frozen=True, slots=True)
class Page:
    """Which node cards one answer holds: page `page` (1-based) of `per_page` cards, of the nodes whose
    name holds `q` (any case; "" = every node)."""

    page: int = 1
    per_page: int = PER_PAGE
    q: str = ""


FIRST_PAGE = Page()


def page_query(query: Mapping[str, str]) -> Page:
    """`?page=&per_page=&q=` as the dashboard sends them; a value out of range is a BadRequest naming the
    parameter and what it takes (a page past the last is no error: the answer is the last page, as nodes
    come and go between two polls)."""
    page = _int(query, "page", 1, None, "a page number from 1")
    per_page = _int(query, "per_page", PER_PAGE, MAX_PER_PAGE, f"a number of nodes from 1 to {MAX_PER_PAGE}")
    q = query.get("q", "").strip()
    if len(q) > MAX_Q:
        raise BadRequest(f"invalid q ({len(q)} characters): part of a node name, at most {MAX_Q} characters")
    return Page(page, per_page, q)


def _int(query: Mapping[str, str], key: str, default: int, most: int | None, takes: str) -> int:
    raw = query.get(key, "").strip()
    if not raw:
        return default
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1 or (most is not None and n > most):
        raise BadRequest(f"invalid {key} {raw!r}: {takes}")
    return n


def card_health(n: NodeState, now: float, fact_ttl: float, down: Mapping[str, float]) -> str:
    """What a card says: the agent's check, "stale" when its facts are older than `fact_ttl`, "down" when
    the failure detector says so."""
    if n.name in down:
        return "down"
    if n.gathered_at and now - n.gathered_at > fact_ttl:
        return "stale"
    return n.health


def overview(
    nodes: list[NodeState],
    containers: Mapping[str, list[dict[str, Any]]],
    states: Mapping[str, Mapping[str, RunState]],
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
    counts: Mapping[str, tuple[int, int, int]] | None = None,
    page: Page = FIRST_PAGE,
) -> dict[str, Any]:
    """Pure: the cluster as the dashboard shows it. `containers` is node -> its engine's container list,
    `states` node -> container id -> its RunState (each engine's own map, passed as it is, so nothing
    is merged across the cluster per poll), `counts` node -> (containers, running, paused) as each engine
    keeps them (counted from `containers` when not given), `replicas` dataset id -> each replica's row
    (node, lag, snapshot, error: Records.replica_rows), `moves` the moves under way, `down` node -> since
    when. Only the cards of `page` are built."""
    replicas, moves, down = replicas or {}, moves or {}, down or {}
    health = {n.name: card_health(n, now, fact_ttl, down) for n in nodes}
    summary = _summary(nodes, health, containers, draining, counts)
    q = page.q.casefold()
    shown = [n for n in nodes if q in n.name.casefold()] if q else list(nodes)
    shown.sort(key=lambda n: (_rank(health[n.name], n.name in draining), n.name))
    pages = max(1, math.ceil(len(shown) / page.per_page))
    at = min(page.page, pages)
    on_page = shown[(at - 1) * page.per_page : at * page.per_page]
    cards = [_card(n, health[n.name], containers, states, now, draining, down) for n in on_page]
    picked, by_status, left_off = _checks(checks, {n.name for n in on_page})
    return {
        "summary": summary,
        "nodes": cards,
        "page": at,
        "per_page": page.per_page,
        "pages": pages,
        "total_nodes": len(shown),
        "q": page.q,
        "datasets": [
            {
                **d.to_dict(),
                "mounts": mounts.get(d.id, 0),
                "replicas": replicas.get(d.id, []),
                "move": _move(moves[d.id], now) if d.id in moves else None,
            }
            for d in sorted(datasets, key=lambda d: d.created)
        ],
        "checks": picked,
        "check_counts": by_status,
        "checks_left_off": left_off,
        "decisions": [_shown(d) for d in decisions[:30]],
        "time": now,
    }


def _rank(health: str, draining: bool) -> int:
    return ATTENTION.get(health, DRAINING if draining else FINE)


def _summary(
    nodes: list[NodeState],
    health: Mapping[str, str],
    containers: Mapping[str, list[dict[str, Any]]],
    draining: frozenset[str],
    counts: Mapping[str, tuple[int, int, int]] | None,
) -> dict[str, Any]:
    """Every node, counted: by card health, draining, and their containers (from the engines' counts,
    which each engine recounts only when its list changed)."""
    by_health = dict.fromkeys(HEALTHS, 0)
    total = running = 0
    for n in nodes:
        h = health[n.name]
        by_health[h] = by_health.get(h, 0) + 1
        if counts is not None:
            c, r, _ = counts.get(n.name, (0, 0, 0))
        else:
            listed = containers.get(n.name, [])
            c, r = len(listed), sum(1 for x in listed if x.get("State") == "running")
        total, running = total + c, running + r
    return {
        "nodes": len(nodes),
        "health": by_health,
        "draining": sum(1 for n in nodes if n.name in draining),
        "containers": total,
        "running": running,
    }


def _card(
    n: NodeState,
    health: str,
    containers: Mapping[str, list[dict[str, Any]]],
    states: Mapping[str, Mapping[str, RunState]],
    now: float,
    draining: frozenset[str],
    down: Mapping[str, float],
) -> dict[str, Any]:
    age = now - n.gathered_at if n.gathered_at else None
    known = states.get(n.name, {})
    return {
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
                "status": status_text(known[c["Id"]], now) if c["Id"] in known else c.get("Status", ""),
            }
            for c in containers.get(n.name, [])
        ],
    }


def _checks(
    checks: list[dict[str, Any]], on_page: set[str]
) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """The checks worth a row: every check of the page's nodes and, from the other nodes, the failing
    ones up to FAILING_CHECKS; failing first. Also every check counted by status, and how many failing
    ones were left off."""
    by_status = {"passing": 0, "warning": 0, "critical": 0}
    picked: list[dict[str, Any]] = []
    failing = left_off = 0
    for c in checks:
        status = c.get("Status", "")
        by_status[status] = by_status.get(status, 0) + 1
        if c.get("Node") in on_page:
            picked.append(c)
        elif status != "passing":
            if failing < FAILING_CHECKS:
                picked.append(c)
                failing += 1
            else:
                left_off += 1
    picked.sort(key=lambda c: {"critical": 0, "warning": 1, "passing": 3}.get(c.get("Status", ""), 2))
    return [{k: c.get(k, "") for k in CHECK_FIELDS} for c in picked], by_status, left_off


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
