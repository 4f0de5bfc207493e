"""The manager's cache of the cluster: nodes (from the registry, watched), and each engine's containers,
images and /info (listed at start, after every change the manager makes, and on a periodic resync).

The engines are the truth about containers and the registry the truth about nodes; this cache can be
thrown away at any time (a manager restart rebuilds it). It feeds the scheduler's ClusterIndex only
through `shoal.cluster.nodes.node_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shoal import keys
from shoal.cluster.nodes import node_state
from shoal.data.model import Dataset
from shoal.data.records import Records
from shoal.errors import Ambiguous, EngineError, NotFound, ShoalError
from shoal.registry.client import RegistryClient
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef

log = logging.getLogger("shoal.cluster")
RESYNC = 5.0
EVENT_DEBOUNCE = 0.02  # one refresh for a burst of events (create, attach, start...)
KINDS = frozenset({"info", "containers", "images", "volumes", "networks"})
_LIST = {
    "info": "/info",
    "containers": "/containers/json?all=1",
    "images": "/images/json",
    "volumes": "/volumes",
    "networks": "/networks",
}
EVENT_KINDS: dict[str, set[str]] = {
    "container": {"containers"},
    "image": {"images"},
    "volume": {"volumes"},
    "network": {"networks", "containers"},
}


def tagged(image: str) -> str:
    """An image reference with its tag, as Docker reads it: `busybox` is `busybox:latest`."""
    return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"


@dataclass
class Engine:
    node: str
    url: str  # tcp://host:port
    session: aiohttp.ClientSession
    info: dict[str, Any] = field(default_factory=dict)
    containers: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    networks: list[dict[str, Any]] = field(default_factory=list)
    reachable: bool = False
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # container id -> inspect's State
    dirty: set[str] = field(default_factory=set)  # kinds of object waiting to be listed again
    stale: set[str] = field(default_factory=set)  # container ids waiting to be inspected again
    refreshing: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return self.url.replace("tcp://", "http://", 1)

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        async with self.session.request(method, f"{self.base}/v1.41{path}", **kw) as r:
            body = await r.read()
            if r.status >= 400:
                raise EngineError.from_reply(r.status, body, self.node)
            return json.loads(body) if body else None


class Cluster:
    def __init__(self, registry: str) -> None:
        self.registry = registry.rstrip("/")
        self.index = ClusterIndex()
        self.engines: dict[str, Engine] = {}
        self._facts: dict[str, dict[str, Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._health: dict[str, str] = {}
        self.reservations: dict[str, tuple[float, int]] = {}  # container id -> (cpus, memory)
        self.datasets: list[Dataset] = []  # every dataset record, watched
        self.records: Records | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        self.client = RegistryClient(self.registry, self._session)
        self.records = Records(self.client)
        await self._load_nodes()
        await self._load_health()
        await self._load_datasets()
        await self.resync()
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._watch(self._load_nodes)),
            loop.create_task(self._watch(self._load_health)),
            loop.create_task(self._watch(self._load_datasets)),
            loop.create_task(self._resync_loop()),
            loop.create_task(self._follow_events()),
        ]

    @property
    def http(self) -> aiohttp.ClientSession:
        """The manager's client session (registry and engines), once started."""
        if self._session is None:
            raise ShoalError("the cluster cache is not started")
        return self._session

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session:
            await self._session.close()

    # --- registry ---------------------------------------------------------------------------------

    async def _load_nodes(self, index: int = 0) -> int:
        pairs, new_index = await self.client.list_prefix(keys.NODES, index=index, wait=60.0)
        facts, info = {}, {}
        for p in pairs:
            node, kind = keys.split_node_key(p.key)
            doc = p.json()
            if isinstance(doc, dict) and kind in keys.NODE_DOCS:
                (facts if kind == "facts" else info)[node] = doc
        self._facts, self._info = facts, info
        for gone in self.engines.keys() - facts.keys():  # a node whose records were deleted leaves
            del self.engines[gone]
        for node, doc in info.items():
            if node not in self.engines and doc.get("engine"):
                self.engines[node] = Engine(node, doc["engine"], self.http)
        self.reindex()
        return new_index

    async def _load_health(self, index: int = 0) -> int:
        entries, new_index = await self.client.health_checks(keys.AGENT_SERVICE, index=index, wait=60.0)
        self._health = {c["Node"]: c["Status"] for c in entries}
        self.reindex()
        return new_index

    async def _load_datasets(self, index: int = 0) -> int:
        assert self.records is not None
        self.datasets, new_index = await self.records.all(index, 60.0)
        self.reindex()
        return new_index

    def pool_of(self, node: str) -> dict[str, Any]:
        """What the node's agent says of its pool (kind, device, free_bytes), or {}."""
        return dict(self._info.get(node, {}).get("pool") or {})

    async def _watch(self, load) -> None:
        index = 0
        while True:
            try:
                index = await load(index or 1)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("registry watch failed (%s); retrying", e)
                await asyncio.sleep(1.0)

    # --- engines ----------------------------------------------------------------------------------

    async def _sync_engine(self, e: Engine, kinds: frozenset[str] | set[str] = KINDS) -> None:
        order = [k for k in KINDS if k in kinds]
        try:
            got = await asyncio.gather(*(e.json("GET", _LIST[k]) for k in order))
            e.reachable = True
        except (aiohttp.ClientError, TimeoutError, OSError, EngineError) as err:
            e.reachable = False
            log.warning("engine %s (%s) unreachable: %s", e.node, e.url, err)
            return
        for kind, value in zip(order, got, strict=True):
            setattr(e, kind, (value.get("Volumes") or []) if kind == "volumes" else value)
        if "containers" in kinds:
            await self._inspect_changed(e)

    async def _inspect_changed(self, e: Engine) -> None:
        """Inspect only the containers that are new, changed state, or had an event: that keeps each one's
        State (for STATUS) and reservations without inspecting every container on every refresh."""
        listed = {c["Id"]: c["State"] for c in e.containers}
        for cid in e.states.keys() - listed.keys():
            del e.states[cid]
        todo = [
            cid
            for cid, state in listed.items()
            if cid in e.stale or e.states.get(cid, {}).get("Status") != state or cid not in self.reservations
        ]
        e.stale -= set(todo)
        limit = asyncio.Semaphore(16)

        async def one(cid: str) -> None:
            async with limit:
                doc = await e.json("GET", f"/containers/{cid}/json")
            e.states[cid] = doc.get("State") or {}
            host = doc.get("HostConfig") or {}
            cpus = (host.get("NanoCpus") or 0) / 1e9 or (host.get("CpuShares") or 0) / 1024
            self.reservations[cid] = (float(cpus), int(host.get("Memory") or 0))

        await asyncio.gather(*(one(cid) for cid in todo), return_exceptions=True)

    async def resync(self, node: str | None = None) -> None:
        """Everything about one engine (or all), now."""
        engines = [self.engines[node]] if node else list(self.engines.values())
        await asyncio.gather(*(self._sync_engine(e) for e in engines))
        self.reindex()

    def mark(self, node: str, kinds: set[str], containers: tuple[str, ...] = (), delay: float = 0.0) -> None:
        """Something changed on `node`: list those kinds again (and re-inspect those containers) soon,
        once for a burst of changes. `fresh()` waits for it, so a read after a write sees the write."""
        e = self.engines.get(node)
        if e is None:
            return
        e.dirty |= kinds
        e.stale |= set(containers)
        if e.refreshing is None or e.refreshing.done():
            e.refreshing = asyncio.get_running_loop().create_task(self._refresh(e, delay))

    async def _refresh(self, e: Engine, delay: float) -> None:
        await asyncio.sleep(delay)
        while e.dirty:
            kinds, e.dirty = e.dirty, set()
            await self._sync_engine(e, kinds)
            self.reindex()

    async def fresh(self) -> None:
        """Wait for every refresh under way (each change marked before this call is then in the cache)."""
        pending = [e.refreshing for e in self.engines.values() if e.refreshing and not e.refreshing.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _follow_events(self) -> None:
        """Each engine's event stream marks what changed, so objects made behind the manager's back
        (a tag, a container started on the node itself) are seen at once, not at the next periodic resync."""
        followed: dict[str, asyncio.Task[None]] = {}
        while True:
            for node, e in list(self.engines.items()):
                if node not in followed or followed[node].done():
                    followed[node] = asyncio.get_running_loop().create_task(self._follow(e))
            await asyncio.sleep(RESYNC)

    async def _follow(self, e: Engine) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with e.session.get(
                f"{e.base}/v1.41/events", timeout=aiohttp.ClientTimeout(total=None)
            ) as r:
                async for line in r.content:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    kinds = EVENT_KINDS.get(ev.get("Type", ""), set(KINDS))
                    actor = (ev.get("Actor") or {}).get("ID", "")
                    ids = (actor,) if ev.get("Type") == "container" and actor else ()
                    self.mark(e.node, kinds, ids, delay=EVENT_DEBOUNCE)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(RESYNC)
            with contextlib.suppress(Exception):
                await self.resync()

    def reindex(self) -> None:
        if set(self.index.pos) - self._facts.keys():  # a node left: rare, so rebuild rather than unindex
            self.index = ClusterIndex()
        for node, facts_doc in self._facts.items():
            info_doc = self._info.get(node, {})
            e = self.engines.get(node)
            containers, images, cpus, mem = [], set(), 0.0, 0
            if e is not None:
                for c in e.containers:
                    ports = tuple(
                        (p["PublicPort"], p.get("Type", "tcp"))
                        for p in c.get("Ports") or []
                        if p.get("PublicPort")
                    )
                    running = c.get("State") == "running"
                    containers.append(
                        ContainerRef(
                            c["Id"],
                            c["Names"][0].lstrip("/") if c.get("Names") else "",
                            c.get("Image", ""),
                            c.get("Labels") or {},
                            ports,
                            running,
                        )
                    )
                    if running:
                        rc, rm = self.reservations.get(c["Id"], (0.0, 0))
                        cpus, mem = cpus + rc, mem + rm
                for i in e.images:
                    images.add(i["Id"])
                    images.update(t for t in i.get("RepoTags") or [] if t != "<none>:<none>")
            health = self._health.get(node, "unknown")
            if e is not None and not e.reachable:
                health = "critical"
            self.index.upsert(
                node_state(
                    facts_doc,
                    info_doc,
                    health,
                    containers,
                    e.info if e else None,
                    frozenset(images),
                    cpus,
                    mem,
                    frozenset(v["Name"] for v in (e.volumes if e else []))
                    | {d.name for d in self.datasets if d.node == node and d.kind == "dataset"},
                    frozenset(n["Name"] for n in e.networks) if e else frozenset(),
                )
            )

    # --- lookups ----------------------------------------------------------------------------------

    def locate(self, ref: str) -> tuple[Engine, dict[str, Any]]:
        """A container by full id, unique id prefix, name, or node/name, on any node."""
        node_part, _, name_part = ref.partition("/") if "/" in ref.lstrip("/") else ("", "", ref)
        ref = name_part.lstrip("/") if node_part else ref.lstrip("/")
        exact, prefix = [], []
        for e in self.engines.values():
            if node_part and e.node != node_part:
                continue
            for c in e.containers:
                names = [n.lstrip("/") for n in c.get("Names") or []]
                if c["Id"] == ref or ref in names:
                    exact.append((e, c))
                elif c["Id"].startswith(ref):
                    prefix.append((e, c))
        if exact:
            return exact[0]
        if len(prefix) == 1:
            return prefix[0]
        if prefix:
            raise Ambiguous(f"multiple containers match {ref!r}: use more of the id")
        raise NotFound(f"No such container: {ref}")

    async def find(self, ref: str) -> tuple[Engine, dict[str, Any]]:
        try:
            return self.locate(ref)
        except NotFound:
            await self.resync()
            return self.locate(ref)

    def name_in_use(self, name: str) -> dict[str, Any] | None:
        for e in self.engines.values():
            for c in e.containers:
                if f"/{name}" in (c.get("Names") or []):
                    return c
        return None

    def nodes_with_image(self, image: str) -> list[str]:
        ref = image if image.startswith("sha256:") else tagged(image)
        out = []
        for e in self.engines.values():
            for i in e.images:
                if (
                    ref in (i.get("RepoTags") or [])
                    or i["Id"] == ref
                    or i["Id"].removeprefix("sha256:").startswith(image.removeprefix("sha256:"))
                ):
                    out.append(e.node)
                    break
        return out

    async def image_holders(self, image: str) -> list[str]:
        """The nodes holding `image`, looking again once if the cache has none (it may lag a load or a
        build done on a node directly)."""
        holders = self.nodes_with_image(image)
        if not holders:
            await self.resync()
            holders = self.nodes_with_image(image)
        return holders

    def engine(self, node: str) -> Engine:
        try:
            return self.engines[node]
        except KeyError:
            raise NotFound(f"no node named {node!r}") from None

    def now(self) -> float:
        return time.time()
