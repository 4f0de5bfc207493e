"""The cluster as a whole: what /info and the dashboard show (plain views, built from the cache), the
merged event stream, and `docker system df` over every node."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from shoal.cluster.engine import CONNECT, Engine
from shoal.errors import ShoalError
from shoal.manager.objects import on_every_node, successes, swarm_id
from shoal.manager.overview import FIRST_PAGE, Page, overview
from shoal.scheduler.model import NodeState

if TYPE_CHECKING:
    from shoal.manager.service import Manager

EVENT_BUFFER = (
    256  # events waiting for a slow reader; past it the reader is dropped, not the manager's memory
)


@dataclass(frozen=True, slots=True)
class NodeView:
    state: NodeState
    health: str  # Healthy | Unhealthy | Pending (classic Swarm's words)
    containers: int
    running: int
    paused: int
    availability: str = "active"  # active | drain (swarm mode's words: `shoal node drain`)
    error: str = ""  # classic Swarm's "Error" line: why the node is not healthy ("" = none)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What /info shows: the cluster's totals and each node."""

    name: str
    strategy: str
    nodes: tuple[NodeView, ...]
    containers: int
    running: int
    paused: int
    images: int
    volume_drivers: tuple[str, ...]
    now: float


def time_iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def swarm_health(node: NodeState, now: float, fact_ttl: float) -> str:
    """classic Swarm's node status: Healthy, Unhealthy, or Pending (not yet known)."""
    if node.health == "passing" and now - node.gathered_at > fact_ttl:
        return "Unhealthy"
    return {"passing": "Healthy", "critical": "Unhealthy"}.get(node.health, "Pending")


def merge_df(results: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """`docker system df` over every node (pure): one image id counts once (as in /images/json), one
    cluster-wide volume once under its bare name (its copies' sizes and references summed), containers
    and one node's volumes are named node/name (as in their lists)."""
    images: dict[str, dict[str, Any]] = {}
    containers, volumes, cache, layers = [], [], [], 0
    wide: dict[str, dict[str, Any]] = {}
    for node, r in results:
        layers += r.get("LayersSize") or 0
        for img in r.get("Images") or []:
            used = max(img.get("Containers", 0), 0)  # containers using it, on every node together
            if img["Id"] in images:
                images[img["Id"]]["Containers"] += used
            else:
                images[img["Id"]] = {**img, "Containers": used}
        containers += [
            {**x, "Names": [f"/{node}{n}" for n in x.get("Names") or []]} for x in r.get("Containers") or []
        ]
        for v in r.get("Volumes") or []:
            if mid := swarm_id(v):  # one cluster-wide volume (shoal.manager.objects): one row, sizes summed
                if mid in wide:
                    have, use = wide[mid].setdefault("UsageData", {}), v.get("UsageData") or {}
                    for k in ("Size", "RefCount"):
                        have[k] = max(have.get(k, 0), 0) + max(use.get(k, 0), 0)
                    continue
                wide[mid] = {**v, "UsageData": dict(v.get("UsageData") or {})}
                volumes.append(wide[mid])
            else:
                volumes.append({**v, "Name": f"{node}/{v['Name']}"})
        cache += r.get("BuildCache") or []
    return {
        "LayersSize": layers,
        "Images": list(images.values()),
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": cache,
    }


async def _or(empty: Any, read: Awaitable[Any]) -> Any:
    """A registry read for the dashboard, or `empty` while the registry is away (the page shows the rest)."""
    try:
        return await read
    except (ShoalError, ValueError):
        return empty


class System:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def role(self) -> tuple[str, str]:
        """classic Swarm's Role (primary or replica) and, on a replica, the primary's Docker API."""
        lead = self.m.leadership
        if lead.is_leader:
            return "primary", ""
        try:
            leader = await lead.leader()
        except ShoalError:
            leader = None
        return "replica", str((leader or {}).get("docker", ""))

    def view(self) -> ClusterView:
        c = self.m.cluster
        now = c.now()
        nodes = []
        total = running = paused = 0
        r = self.m.reschedule
        for node in sorted(c.index.nodes, key=lambda n: n.name):
            e = c.engines.get(node.name)
            # each engine counts its containers once per change of its list, not once per /info
            counts = e.counts() if e else (0, 0, 0)
            health = swarm_health(node, now, self.m.settings.fact_ttl)
            down = r.failure.down.get(node.name)
            error = ""
            if down is not None:
                health, error = "Unhealthy", f"down since {time_iso(down)} (agent and engine unanswered)"
            elif health == "Unhealthy":
                error = f"agent check {node.health}, facts from {now - node.gathered_at:.0f}s ago"
            availability = "drain" if node.name in r.draining else "active"
            nodes.append(NodeView(node, health, *counts, availability=availability, error=error))
        for e in c.engines.values():
            n, r, p = e.counts()
            total, running, paused = total + n, running + r, paused + p
        return ClusterView(
            self.m.settings.name,
            self.m.settings.strategy,
            tuple(nodes),
            total,
            running,
            paused,
            len({i["Id"] for e in c.engines.values() for i in e.images}),
            tuple(sorted({d for n in c.index.nodes for d in n.volume_drivers})),
            now,
        )

    async def overview(self, page: Page = FIRST_PAGE) -> dict[str, Any]:
        """The dashboard's document, one page of node cards; the registry's parts are left empty while the
        registry is away. Each engine's lists, states and counts are handed over as the cache holds them
        (O(nodes) a poll): only the page's containers become rows."""
        c = self.m.cluster
        # the registry's four reads at once: a poll waits for the slowest, not for their sum
        checks, mounts, replicas, under_way = await asyncio.gather(
            _or([], c.client.health_state("any")),
            _or({}, c.records.all_mounts()),
            _or({}, c.records.replica_rows(c.now())),
            _or({}, c.records.all_moves()),
        )
        moves = {i: m for i, (m, _) in under_way.items()}
        r = self.m.reschedule
        engines = c.engines.values()
        return overview(
            list(c.index.nodes),
            {e.node: e.containers for e in engines},
            {e.node: e.states for e in engines},
            c.datasets,
            mounts,
            checks,
            self.m.decisions.recent(),
            c.now(),
            self.m.settings.fact_ttl,
            replicas=replicas,
            moves=moves,
            draining=frozenset(r.draining),
            down=dict(r.failure.down),
            counts={e.node: e.counts() for e in engines},
            page=page,
        )

    async def df(self) -> dict[str, Any]:
        c = self.m.cluster
        results = await on_every_node(c, "GET", "/system/df", timeout=60)
        return merge_df([(e.node, r) for e, r in successes(results)])

    async def events(self, query: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Every engine's event stream merged into one, each event saying its node (as classic Swarm did).
        A reader that stops reading holds at most EVENT_BUFFER events: past that the engines' streams are
        let go and the merged stream ends once the reader has what was buffered."""
        c = self.m.cluster
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_BUFFER)

        async def one(e: Engine) -> None:
            node = c.index.get(e.node)
            tag = {
                "Name": e.node,
                "Id": node.id if node else e.node,
                "Addr": e.url.removeprefix("tcp://"),
                "Ip": node.address if node else "",
            }
            try:
                async with e.session.get(
                    e.url_for("/events"),
                    params=dict(query),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT),
                    ssl=e.ssl,
                ) as up:
                    async for line in up.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        ev["node"] = tag
                        # as classic Swarm: in Actor.Attributes too, the part the docker CLI prints
                        attrs = ev.setdefault("Actor", {}).setdefault("Attributes", {})
                        attrs.update(
                            {
                                "node.name": tag["Name"],
                                "node.id": tag["Id"],
                                "node.addr": tag["Addr"],
                                "node.ip": tag["Ip"],
                            }
                        )
                        queue.put_nowait(ev)
            except (aiohttp.ClientError, OSError, ValueError, TimeoutError, asyncio.QueueFull):
                pass
            finally:
                await queue.put(None)  # this engine's stream ended

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(one(e)) for e in c.engines.values()]
        ended = 0
        try:
            while ended < len(tasks):
                item = await queue.get()
                if item is None:
                    ended += 1
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()
