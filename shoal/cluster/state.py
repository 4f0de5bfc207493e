"""The manager's cache of the cluster: nodes (from the registry, watched), and each engine's containers,
images, volumes, networks and /info (listed at start, after every change, on each engine's events and on
a periodic resync).

The engines are the truth about containers and the registry the truth about nodes; this cache can be
thrown away at any time (a manager restart rebuilds it). It feeds the scheduler's ClusterIndex only
through `shoal.cluster.nodes.node_state`, one node at a time, and the service layer (shoal.manager) is
the only thing that reads it. Every engine call has a deadline, and each engine refreshes on its own
task: a hung node goes stale alone.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from shoal import keys
from shoal.cluster import holds
from shoal.cluster.engine import CONNECT, LIST, Engine
from shoal.cluster.nodes import node_state
from shoal.cluster.shared import SharedStrings
from shoal.cluster.status import RunState
from shoal.data.model import Dataset
from shoal.data.records import Records
from shoal.errors import Ambiguous, EngineError, NotFound, ShoalError, Unavailable
from shoal.logs import kv
from shoal.registry.client import Access, KVPair, RegistryClient
from shoal.scheduler.consume import consume
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState

log = logging.getLogger("shoal.cluster")
RESYNC = 5.0  # each engine looked at this often (jittered): listed again, or only asked for /version ...
RESYNC_FOLLOWED = 30.0  # ... while its event stream is up and its last full list is younger than this
RESYNC_JITTER = 0.2  # +-20% a time, per engine: 1,000 engines do not all list at the same instant
RESYNC_TICK = 1.0  # how often the periodic resync looks for engines that are due
# ... and at most this many engines a second asked whether they answer, and listed whole: with more
# engines each is looked at less often (1,000: each asked every 10 s and listed every 50 s; classic
# Swarm refreshed each engine every 30-60 s). Every engine every 5 s cost a tenth of a core at 1,000.
LOOKS_PER_S = 100.0
LISTS_PER_S = 20.0
SYNC_AT_ONCE = 32  # engines listed at once by a resync of many: more only queue behind each other
FAILURES = 2  # periodic lists in a row with no answer before an engine that answered is unreachable
RELIST_EVERY = 0.25  # a registry watch lists again at most this often (a burst of writes, one list)
# ... and the nodes' watch reads at most this many entries a second: it reads only the documents written
# since its last read (?since), but a whole listing (after a deletion) of 1,000 nodes is 3,000 entries,
# 2.9 MB, and every 0.25 s that cost the manager an eighth of a core
NODE_ENTRIES_PER_S = 6000.0
_HEX = re.compile(r"[0-9a-f]{1,64}")  # what may be an image id's prefix
REFRESH_AGAIN = 1.0  # a refresh the engine did not answer is asked again after this
EVENT_DEBOUNCE = 0.02  # one refresh for a burst of events (create, attach, start...)
FRESH_WAIT = 1.0  # a read waits at most this long for refreshes under way (a hung engine stays stale)
LOOK_AGAIN = 2.0  # a lookup that missed asks the engines again, for at most this long
LOOK_EVERY = 1.0  # and not more often than this
KINDS = ("info", "containers", "images", "volumes", "networks")
LOOKED_UP = ("images", "networks")  # the kinds `_object_lookups` is made from
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
# a container joining or leaving a network changes its own entry, not the networks' list (dockerd lists
# networks without their containers): every `docker run` sends a connect, which listed the networks again
ATTACHMENTS = frozenset({"connect", "disconnect"})


def event_kinds(ev: dict[str, Any]) -> set[str]:
    """The kinds an engine's event may have changed (all of them for a type we do not know)."""
    type_ = ev.get("Type", "")
    if type_ == "network" and ev.get("Action") in ATTACHMENTS:
        return {"containers"}
    return EVENT_KINDS.get(type_, set(KINDS))


def tagged(image: str) -> str:
    """An image reference with its tag, as Docker reads it: `busybox` is `busybox:latest`."""
    return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"


def container_name(doc: dict[str, Any]) -> str:
    """The container's own name. dockerd also lists, while another container links to it, the link's
    name ("/linker/alias"), and may list it first: a name with a slash inside is never the own one."""
    names = [n.lstrip("/") for n in doc.get("Names") or []]
    return next((n for n in names if "/" not in n), names[0] if names else "")


class Probe:
    """The cache's hooks for the manager's figures: each engine call's and event's timing, and full index
    rebuilds. Does nothing until the manager's metrics replace `call`/`event` (shoal.metrics)."""

    def __init__(self) -> None:
        self.rebuilds = 0

    def call(self, node: str, seconds: float) -> None:
        pass

    def event(self, node: str, lag: float) -> None:
        pass


@dataclass(frozen=True, slots=True, eq=False)
class Reservation:
    """A placement's resources, taken while its create is on the way to the engine."""

    node: str
    spec: ContainerSpec
    ref: ContainerRef


@dataclass(frozen=True, slots=True)
class Located:
    """A container the cache knows: its engine and its list entry."""

    engine: Engine
    doc: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.doc["Id"])

    @property
    def node(self) -> str:
        return self.engine.node


class Cluster:
    def __init__(
        self, registry: str | Access, engine_tls: ssl.SSLContext | None = None, holder: str = ""
    ) -> None:
        self.access = registry if isinstance(registry, Access) else Access(registry)
        # beside other managers (a shared store): this manager's name in the placements it holds on a
        # node's document in the registry (holds.py), and every node's holds as last read; alone: ""
        self.holder = holder
        self.held: dict[str, tuple[dict[str, holds.Hold], int]] = {}
        self.registry = self.access.address.rstrip("/")
        self.engine_tls = engine_tls  # the manager's client certificate for the engines' --tlsverify
        self.index = ClusterIndex()
        self.probe = Probe()  # what the manager's /metrics reads (shoal.metrics.ManagerMetrics)
        self.engines: dict[str, Engine] = {}
        self._facts: dict[str, dict[str, Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._health: dict[str, str] = {}
        self.health_known = False  # the health watch's last read answered (False while the registry is away)
        self.reservations: dict[str, tuple[float, int]] = {}  # container id -> (cpus, memory)
        # container id -> the host ports it asked for (HostConfig.PortBindings): a created container not
        # yet started publishes none in the engine's list, but its start will take them
        self.bindings: dict[str, tuple[tuple[int, str], ...]] = {}
        self.datasets: list[Dataset] = []  # every dataset record, watched
        self._pending: dict[str, list[Reservation]] = {}  # node -> creates on their way to its engine
        self._doc_index: dict[str, int] = {}  # registry key -> ModifyIndex of the document last parsed
        self._applied = {"nodes": 0, "health": 0}  # the registry index each watch's view was read at
        self._nodes_read = 0  # entries in the nodes' watch's last answer (what paces it)
        self._by_id: dict[str, tuple[Engine, dict[str, Any]]] = {}  # container id -> where, its entry
        self._by_name: dict[str, dict[str, tuple[Engine, dict[str, Any]]]] = {}  # name -> node -> ...
        self._ids: list[str] | None = None  # every container id, sorted (for prefixes); None: stale
        # image ref -> nodes holding it, and every network name: built again only after an engine's images
        # or networks changed (each create asks both; a scan of 1,000 engines each time was O(cluster))
        self._objects_version = 0
        self._strings = SharedStrings()  # one copy of the strings 30,000 listed containers repeat
        self._lookups: tuple[int, dict[str, frozenset[str]], frozenset[str]] | None = None
        self._sync_limit = asyncio.Semaphore(SYNC_AT_ONCE)
        self._looking: asyncio.Future[None] | None = None
        self._looked_at = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._client: RegistryClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT),
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._client = self.access.client(self._session)
        await self._load_nodes()
        await self._load_health()
        await self._load_datasets()
        if self.holder:
            await self._load_holds()
        await self.resync()
        loop = asyncio.get_running_loop()
        if self.holder:
            self._tasks.append(loop.create_task(self._watch(self._load_holds)))
        self._tasks += [
            loop.create_task(self._watch(self._load_nodes, self._relist_nodes_every)),
            loop.create_task(self._watch(self._load_health)),
            loop.create_task(self._watch(self._load_datasets)),
            loop.create_task(self._resync_loop()),
            loop.create_task(self._follow_events()),
        ]

    def client_with(self, token: str) -> RegistryClient:
        """A registry client holding someone else's token (to ask the registry what that token is)."""
        if self._session is None:
            raise ShoalError("the cluster cache is not started")
        return replace(self.access, token=token).client(self._session)

    @property
    def client(self) -> RegistryClient:
        """The manager's registry client, once started."""
        if self._client is None:
            raise ShoalError("the cluster cache is not started")
        return self._client

    @property
    def records(self) -> Records:
        return Records(self.client)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session:
            await self._session.close()

    # --- registry ---------------------------------------------------------------------------------

    async def _load_nodes(self, index: int = 0, newer_only: bool = False) -> int:
        """The agents' documents: only those written since the view was last read (the registry's
        ?since, views.Views.kv_changes), so one agent's publish costs the manager that one document, not
        a listing of every node's (3,000 documents, 2.9 MB at 1,000 nodes, twice a second, was its
        largest cost at idle); parsed and reindexed only where their ModifyIndex moved. A whole answer
        (after a deletion, from a registry restored from older state, or from one that does not know
        ?since) is the view, as read: what it does not list is gone. Changes are taken only where newer
        than the document held, so two reads that overlap cannot put an older one back. `newer_only` (a
        read beside the watch): nothing is done with an answer no newer than the view already held."""
        since = self._applied["nodes"] if index else 0
        entries, whole, new_index = await self.client.list_changes(keys.NODES, since, index=index, wait=60.0)
        if newer_only and new_index <= self._applied["nodes"]:
            return new_index
        if not newer_only:  # the watch's own read: what paces the watch
            self._nodes_read = len(entries)
        self._applied["nodes"] = new_index if whole else max(new_index, self._applied["nodes"])
        if whole:
            facts, info, seen = {}, {}, {}
        else:
            facts, info, seen = dict(self._facts), dict(self._info), dict(self._doc_index)
        changed: set[str] = set()
        info_changed: set[str] = set()
        for e in entries:
            key, modify_index = e["Key"], int(e.get("ModifyIndex", 0))
            node, kind = keys.split_node_key(key)
            if kind not in keys.NODE_DOCS:
                continue
            into, before = (facts, self._facts) if kind == "facts" else (info, self._info)
            held = self._doc_index.get(key, 0)
            if modify_index and (held == modify_index if whole else held >= modify_index):
                if whole:  # unchanged: the document parsed last time, the same object
                    seen[key] = held
                    if node in before:
                        into[node] = before[node]
                continue
            seen[key] = modify_index
            changed.add(node)
            if kind != "facts":
                info_changed.add(node)
            doc = KVPair.from_consul(e).json()
            if isinstance(doc, dict):
                into[node] = doc
            else:
                into.pop(node, None)
        if whole:
            changed |= (self._facts.keys() - facts.keys()) | (self._info.keys() - info.keys())
        self._doc_index = seen
        self._facts, self._info = facts, info
        self._update_nodes(changed, changed - info_changed)
        return new_index

    def _update_nodes(
        self, changed: Iterable[str], facts_only: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """After the nodes' documents changed: engines for new nodes, none for nodes gone, and the index
        for the nodes whose documents changed (rebuilt whole only when a node left, which is rare). A node
        whose new facts are all that changed (every agent's every publish) keeps the rest of its state as
        indexed: its containers are not built again from the engine's list for a new load average."""
        left = False
        for gone in self.engines.keys() - self._facts.keys():  # a node whose records were deleted leaves
            self._unlink_all(self.engines.pop(gone))
            self._objects_version += 1
            left = True
        for node in changed:
            doc = self._info.get(node)
            if doc and node not in self.engines and doc.get("engine"):
                assert self._session is not None
                self.engines[node] = Engine(
                    node, doc["engine"], self._session, self.engine_tls, probe=self.probe
                )
                self._objects_version += 1
        if left or self.index.pos.keys() - self._facts.keys():
            self.reindex()
        else:
            for node in changed:
                if node in facts_only and (state := self._with_new_facts(node)) is not None:
                    self.index.upsert(state)
                else:
                    self.reindex(node)

    def _with_new_facts(self, node: str) -> NodeState | None:
        """The node's indexed state with its facts document as now published, the rest as it was (every
        other input -- the engine's lists, reservations, datasets, health -- reindexes the node itself when
        it changes); None where that does not hold: not indexed yet, or other managers' holds, which
        expire with time (a manager's own holds it does not count: after a fill, every node has some)."""
        old = self.index.get(node)
        if old is None or node not in self._facts or self._others_hold(node):
            return None
        e = self.engines.get(node)
        new = node_state(
            self._facts[node], self._info.get(node, {}), old.health, old.containers,
            e.info if e else None, old.images, old.reserved_cpus, old.reserved_memory, old.volumes,
            old.networks,
        )  # fmt: skip
        return _reuse(old, new)

    def _others_hold(self, node: str) -> bool:
        held = self.held.get(node)
        return bool(self.holder and held and any(h.manager != self.holder for h in held[0].values()))

    async def _load_health(self, index: int = 0, newer_only: bool = False) -> int:
        """The agents' checks: only the nodes whose Status changed are reindexed (a TTL renewal, which
        changes no Status, costs nothing past the list). `newer_only` as for `_load_nodes`."""
        try:
            entries, new_index = await self.client.health_checks(keys.AGENT_SERVICE, index=index, wait=60.0)
        except ShoalError:
            self.health_known = False
            raise
        if newer_only and new_index <= self._applied["health"]:
            return new_index
        self._applied["health"] = new_index
        self.health_known = True
        health = {c["Node"]: c["Status"] for c in entries}
        old, self._health = self._health, health
        for node in {n for n in old.keys() | health.keys() if old.get(n) != health.get(n)}:
            self.reindex(node)
        return new_index

    async def _load_datasets(self, index: int = 0) -> int:
        before = _dataset_names(self.datasets)
        self.datasets, new_index = await self.records.all(index, 60.0)
        after = _dataset_names(self.datasets)
        for node in {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}:
            self.reindex(node)
        return new_index

    async def _load_holds(self, index: int = 0) -> int:
        """The other managers' held placements, per node; a node whose holds changed is reindexed."""
        pairs, new_index = await self.client.list_prefix(keys.HOLDS, index=index, wait=60.0)
        got = {keys.last_part(p.key): (holds.parse(p.json()), p.modify_index) for p in pairs}
        old, self.held = self.held, got
        for node in old.keys() | got.keys():
            if old.get(node, ({}, 0))[1] != got.get(node, ({}, 0))[1] and node in self._facts:
                self.reindex(node)
        return new_index

    def agent_checks(self) -> dict[str, str] | None:
        """Each node's agent check status as the health watch last read it; None while the registry does
        not answer (what it would say is not known)."""
        return dict(self._health) if self.health_known else None

    def _listed_swarm_ids(self, node: str) -> set[str]:
        """The swarm ids the node's engine lists with everything the scheduler needs of them (a created
        container once its bindings are read): a hold on one of them has done its work."""
        e = self.engines.get(node)
        return {
            sid
            for c in (e.containers if e else ())
            if (sid := (c.get("Labels") or {}).get(holds.SWARM_ID))
            and (c.get("State") != "created" or c["Id"] in self.bindings)
        }

    async def hold(self, node: str, hold: holds.Hold) -> bool:
        """Takes `hold` on the node's document (a compare-and-set on the document as last read): False
        when another manager changed it first, after reading it again (so the next placement counts
        what that manager took)."""
        held, _ = self.held.get(node, ({}, 0))
        if await self._write_holds(node, holds.admit(held, hold, self.now(), self._listed_swarm_ids(node))):
            return True
        self.reindex(node)
        return False

    async def unhold(self, node: str, swarm_id: str) -> None:
        """The engine refused: the hold goes (best effort; otherwise it expires by itself)."""
        for _ in range(5):
            held, _ = self.held.get(node, ({}, 0))
            if swarm_id not in held or await self._write_holds(node, holds.without(held, swarm_id)):
                return

    async def _write_holds(self, node: str, doc: dict[str, holds.Hold]) -> bool:
        """The node's holds replaced by `doc` if the document is still the one last read (one Consul txn
        cas); otherwise it is read again, and False."""
        key = keys.hold(node)
        _, index = self.held.get(node, ({}, 0))
        ok, results = await self.client.txn(
            [{"Verb": "cas", "Key": key, "Value": holds.dump(doc), "Index": index}]
        )
        if ok:
            self.held[node] = (doc, results[0].modify_index if results else index)
            return True
        pair = await self.client.get(key)
        self.held[node] = (holds.parse(pair.json()), pair.modify_index) if pair else ({}, 0)
        return False

    def pool_of(self, node: str) -> dict[str, Any]:
        """What the node's agent says of its pool (kind, device, free_bytes), or {}."""
        return dict(self._info.get(node, {}).get("pool") or {})

    def _relist_nodes_every(self) -> float:
        return max(RELIST_EVERY, self._nodes_read / NODE_ENTRIES_PER_S)

    async def _watch(
        self, load: Callable[[int], Awaitable[int]], every: Callable[[], float] = lambda: RELIST_EVERY
    ) -> None:
        index = 0
        while True:
            try:
                t0 = time.monotonic()
                new = await load(index or 1)
                # a registry taking 1,000 writes a second would wake this at once every time: list at most
                # every RELIST_EVERY (`every()`), so a burst of writes costs one list, not one each
                await asyncio.sleep(max(0.0, every() - (time.monotonic() - t0)))
                # an index that goes backwards is a registry that lost or restored its state: start over
                # (Consul's advice to every blocking client), rather than wait for it to catch up
                index = new if new >= index else 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                kv(log, "registry watch failed; retrying", logging.WARNING, error=str(e))
                await asyncio.sleep(1.0)

    # --- engines ----------------------------------------------------------------------------------

    async def _sync_engine(self, e: Engine, kinds: set[str] | tuple[str, ...] = KINDS) -> bool:
        """Those kinds listed again from the engine; False if it did not answer (the cache keeps what it
        said last)."""
        order = [k for k in KINDS if k in kinds]
        try:  # one after the other, on one kept-alive connection: at once, each list opened its own, and
            # 1,000 engines' resyncs spent a tenth of the manager's CPU making TCP connections
            got = [await e.call("GET", _LIST[k], timeout=LIST) for k in order]
        except (Unavailable, EngineError) as err:
            self._no_answer(e, err)
            return False
        if not e.reachable and e.containers:
            kv(log, "engine reachable again", node=e.node, engine=e.url)
        e.reachable, e.failures = True, 0
        if len(order) == len(KINDS):
            e.listed_at = time.monotonic()
        for kind, value in zip(order, got, strict=True):
            if kind == "containers":
                self._set_containers(e, value)
                continue
            value = (value.get("Volumes") or []) if kind == "volumes" else value
            if value != getattr(e, kind):
                setattr(e, kind, self._strings.share(value))
                if kind in LOOKED_UP:  # not for info, which changes with each container (and its clock)
                    self._objects_version += 1
        if "containers" in kinds:
            await self._inspect_changed(e)
        return True

    def _no_answer(self, e: Engine, err: ShoalError) -> None:
        """One call with no answer on a loaded manager is not yet a dead engine: FAILURES in a row are
        (the periodic look asks again at once after a failure, so a dead one is marked within seconds)."""
        e.failures += 1
        if e.reachable and e.failures >= FAILURES:
            kv(log, "engine unreachable", logging.WARNING, node=e.node, engine=e.url, error=str(err),
               failures=e.failures)  # fmt: skip
            e.reachable = False
            self.reindex(e.node)

    async def _ping(self, e: Engine) -> None:
        """An engine whose events arrive and whose lists are recent: only asked whether it answers (an
        event stream over a link that drops packets stays open and silent, so it proves nothing)."""
        try:
            await e.call("GET", "/version", timeout=LIST)
        except (Unavailable, EngineError) as err:
            self._no_answer(e, err)
        else:
            e.failures = 0

    async def _inspect_changed(self, e: Engine) -> None:
        """Inspect only the containers that are new, changed state, or had an event: that keeps each one's
        State (for STATUS) and reservations without inspecting every container on every refresh. One the
        manager made that has not started is not inspected yet: its reservation and ports are the
        manager's own (`commit`), and its STATUS is the list's ("Created"); it is when it starts."""
        listed = {c["Id"]: c["State"] for c in e.containers}
        for cid in e.states.keys() - listed.keys():
            del e.states[cid]
        todo, known = [], []
        for cid, state in listed.items():
            was = e.states.get(cid)
            if state == "created" and cid in self.reservations and was is None:
                known.append(cid)
            elif cid in e.stale or cid not in self.reservations or was is None or was.status != state:
                todo.append(cid)
        e.stale -= {*todo, *known}
        limit = asyncio.Semaphore(16)

        async def one(cid: str) -> None:
            async with limit:
                doc = await e.call("GET", f"/containers/{cid}/json", timeout=LIST)
            e.states[cid] = RunState.of(doc.get("State") or {})
            host = doc.get("HostConfig") or {}
            cpus = (host.get("NanoCpus") or 0) / 1e9 or (host.get("CpuShares") or 0) / 1024
            self.reservations[cid] = (float(cpus), int(host.get("Memory") or 0))
            self.bindings[cid] = _bound_ports(host.get("PortBindings"))

        await asyncio.gather(*(one(cid) for cid in todo), return_exceptions=True)

    async def resync(
        self, node: str | None = None, timeout: float | None = None, nodes: Iterable[str] | None = None
    ) -> None:
        """Everything about one engine (or those of `nodes`, or all), now. With `timeout`, waits no longer
        than that: an engine still answering goes on in the background, and the cache keeps what it said
        last."""
        if nodes is not None:
            engines = [self.engines[n] for n in nodes if n in self.engines]
        else:
            engines = [self.engines[node]] if node in self.engines else list(self.engines.values())
        limit = self._sync_limit if len(engines) > 1 else contextlib.nullcontext()

        async def one(e: Engine) -> None:
            async with limit:  # many engines: SYNC_AT_ONCE at a time, so none waits out its deadline
                await self._sync_engine(e)
            self.reindex(e.node)

        tasks = [asyncio.ensure_future(one(e)) for e in engines]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

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
        """What was marked, listed again. A list the engine did not answer is asked again (REFRESH_AGAIN
        later) until it answers or the engine is taken for unreachable: dropped, the change an event told
        of waited for the periodic resync (50 s at 1,000 engines) to be seen. An unreachable engine is
        listed whole by the periodic look when it answers again."""
        await asyncio.sleep(delay)
        while e.dirty:
            kinds, e.dirty = e.dirty, set()
            if await self._sync_engine(e, kinds):
                self.reindex(e.node)
            elif e.reachable:
                e.dirty |= kinds
                await asyncio.sleep(REFRESH_AGAIN)

    async def changed(self, kinds: set[str], nodes: list[str] | None = None) -> None:
        """After a write through the manager: those kinds listed again on those nodes (every node by
        default), waited for a bounded while, so the reply's reader sees the write."""
        for node in nodes if nodes is not None else list(self.engines):
            self.mark(node, kinds)
        await self.fresh()

    async def fresh(self, timeout: float = FRESH_WAIT) -> None:
        """Wait (a bounded while) for every refresh under way: each change marked before this call is then
        in the cache, unless its engine is too slow to say, which then shows what it said last."""
        pending = [e.refreshing for e in self.engines.values() if e.refreshing and not e.refreshing.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

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
        try:
            await self._follow_stream(e)
        finally:
            # its stream ended: what it would have said is now only in a list, so list it at once
            e.following = False
            e.listed_at = 0.0
            e.next_sync = min(e.next_sync, time.monotonic()) if e.next_sync else 0.0

    async def _follow_stream(self, e: Engine) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with e.session.get(
                e.url_for("/events"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT),
                ssl=e.ssl,
            ) as r:
                e.following = r.status < 300
                async for line in r.content:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if isinstance(stamp := ev.get("timeNano"), int):
                        self.probe.event(e.node, time.time() - stamp / 1e9)
                    kinds = event_kinds(ev)
                    actor = (ev.get("Actor") or {}).get("ID", "")
                    ids = (actor,) if ev.get("Type") == "container" and actor else ()
                    self.mark(e.node, kinds, ids, delay=EVENT_DEBOUNCE)

    async def _resync_loop(self) -> None:
        """Each engine looked at on a timer of its own (jittered, so 1,000 engines spread out), at most
        SYNC_AT_ONCE at a time (a burst of 5,000 lists at once made answering engines miss their deadline
        and look unreachable): listed again, or, while its events arrive and its last list is recent,
        only asked for /version; after a first call with no answer, asked again at the next tick."""
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()

        async def one(e: Engine) -> None:
            try:
                async with self._sync_limit:
                    listed_every = max(RESYNC_FOLLOWED, len(self.engines) / LISTS_PER_S)
                    if e.reachable and e.following and time.monotonic() - e.listed_at < listed_every:
                        await self._ping(e)
                    else:
                        await self._sync_engine(e)
                        self.reindex(e.node)
            finally:
                e.syncing = False
                confirm = 0 < e.failures < FAILURES  # one miss: asked again at once, then at the usual pace
                e.next_sync = time.monotonic() + (RESYNC_TICK if confirm else _jittered(self._look_every()))

        for e in self.engines.values():
            e.next_sync = e.next_sync or time.monotonic() + _jittered(self._look_every())
        while True:
            await asyncio.sleep(RESYNC_TICK)
            now = time.monotonic()
            for e in list(self.engines.values()):
                if not e.next_sync:
                    e.next_sync = now + _jittered(self._look_every())
                elif not e.syncing and e.next_sync <= now:
                    e.syncing = True
                    t = loop.create_task(one(e))
                    running.add(t)
                    t.add_done_callback(running.discard)

    def _look_every(self) -> float:
        """Seconds between two looks at one engine: RESYNC, or longer with so many engines that looking
        at each that often would pass LOOKS_PER_S."""
        return max(RESYNC, len(self.engines) / LOOKS_PER_S)

    # --- the scheduler's view ---------------------------------------------------------------------

    def reindex(self, only: str | None = None) -> None:
        """The scheduler's index from the cache: one node (after its engine changed) or every node."""
        if only is None:
            self.probe.rebuilds += 1
        if only is None and self.index.pos.keys() - self._facts.keys():  # a node left (rare): rebuild
            self.index = ClusterIndex()
        for node in [only] if only is not None else list(self._facts):
            if node in self._facts:
                self.index.upsert(self._node_state(node))

    def _node_state(self, node: str) -> NodeState:
        """The node's state, reusing the previous state's parts (facts, labels, containers...) that did
        not change, so the index (which compares them by identity) re-indexes only what did."""
        return _reuse(self.index.get(node), self._built_state(node))

    def _built_state(self, node: str) -> NodeState:
        e = self.engines.get(node)
        containers, images, cpus, mem = [], set(), 0.0, 0
        if e is not None:
            for c in e.containers:
                ports = tuple(
                    (p["PublicPort"], p.get("Type", "tcp"))
                    for p in c.get("Ports") or []
                    if p.get("PublicPort")
                )
                if c.get("State") == "created":  # about to start: its bindings are as good as taken
                    ports = self.bindings.get(c["Id"], ports)
                running = c.get("State") == "running"
                containers.append(
                    ContainerRef(
                        c["Id"], container_name(c), c.get("Image", ""), c.get("Labels") or {}, ports, running
                    )
                )
                if running:
                    rc, rm = self.reservations.get(c["Id"], (0.0, 0))
                    cpus, mem = cpus + rc, mem + rm
            for res in self._pending.get(node, []):
                containers.append(res.ref)
                cpus, mem = cpus + res.spec.cpus, mem + res.spec.memory
            if self.holder and node in self.held:
                listed = self._listed_swarm_ids(node)
                for h in holds.counted(self.held[node][0], self.now(), self.holder, listed):
                    containers.append(ContainerRef(f"held-{h.swarm_id}", h.name, h.image, h.labels, h.ports))
                    cpus, mem = cpus + h.cpus, mem + h.memory
            for i in e.images:
                images.add(i["Id"])
                images.update(t for t in i.get("RepoTags") or [] if t != "<none>:<none>")
        health = self._health.get(node, "unknown")
        if e is not None and not e.reachable:
            health = "critical"
        return node_state(
            self._facts[node],
            self._info.get(node, {}),
            health,
            containers,
            e.info if e else None,
            frozenset(images),
            cpus,
            mem,
            frozenset(v["Name"] for v in (e.volumes if e else []))
            | {d.name for d in self.datasets if d.node == node and d.kind == "dataset" and not d.conflict},
            frozenset(n["Name"] for n in e.networks) if e else frozenset(),
        )

    def reserve(self, node: str, spec: ContainerSpec, ref: ContainerRef) -> Reservation:
        """Takes a placement's resources (the scheduler's pure `consume`) before the engine is asked, so
        the next decision sees them while this create is still on its way; `commit` or `release` it."""
        res = Reservation(node, spec, ref)
        self._pending.setdefault(node, []).append(res)
        state = self.index.get(node)
        if state is not None:
            self.index.upsert(consume(state, spec, ref))
        return res

    def release(self, res: Reservation) -> None:
        """The engine refused: the resources are free again."""
        with contextlib.suppress(ValueError):
            self._pending.get(res.node, []).remove(res)
        self.reindex(res.node)

    def commit(self, res: Reservation, container_id: str) -> None:
        """The engine made it: listed at once under its id, until the engine's own list says more."""
        with contextlib.suppress(ValueError):
            self._pending.get(res.node, []).remove(res)
        e = self.engine(res.node)
        self.reservations[container_id] = (res.spec.cpus, res.spec.memory)
        self.bindings[container_id] = res.ref.ports
        doc = {
            "Id": container_id,
            "Names": [f"/{res.ref.name or container_id[:12]}"],
            "Image": res.ref.image,
            "State": "created",
            "Labels": dict(res.ref.labels),
            "Ports": [],
            "Created": int(time.time()),
        }
        e.containers.append(doc)
        e.version += 1
        self._link(e, doc)
        self.reindex(res.node)
        self.mark(res.node, {"containers"}, (container_id,))

    def suspect(self, node: str) -> None:
        """An engine that did not answer a call: unreachable (critical to the scheduler) until a list says
        otherwise; the periodic resync looks again."""
        e = self.engines.get(node)
        if e is not None and e.reachable:
            e.reachable = False
            kv(log, "engine unreachable", logging.WARNING, node=node, engine=e.url, error="a call timed out")
            self.reindex(node)

    def pending_name(self, name: str) -> bool:
        return any(r.ref.name == name for rs in self._pending.values() for r in rs)

    def forget(self, node: str, container_id: str) -> None:
        """A container removed through the manager: gone at once from lists, /info and the scheduler."""
        e = self.engines.get(node)
        if e is None:
            return
        self._set_containers(e, [x for x in e.containers if x["Id"] != container_id])
        e.states.pop(container_id, None)
        self.reservations.pop(container_id, None)
        self.bindings.pop(container_id, None)
        self.reindex(node)
        self.mark(node, {"containers"})

    # --- lookups ----------------------------------------------------------------------------------

    def _set_containers(self, e: Engine, docs: list[dict[str, Any]]) -> None:
        """An engine's container list replaced: the id and name lookups follow, for its containers only. An
        entry equal to the one held keeps the held object: a resync of 30 unchanged containers makes no
        new objects (at 1,000 nodes the lists' churn was what the garbage collector's pauses walked), and
        a list with nothing new is no change: `version` stays, so what is cached of the list (the `ps`
        rows, their order, the counts) stays valid across the periodic resync's 20 lists a second.

        An entry whose only change is its STATUS text ("Up 5 minutes" -> "Up 6 minutes") also keeps the
        held object when the container's State is known (`Engine.states`): its STATUS is then computed
        from that State, never read from the entry. Otherwise every relist (each engine's every 50 s at
        1,000 nodes) replaced most of its entries, a churn that grew the manager's idle RSS by ~90 MB."""
        held = {c["Id"]: c for c in e.containers}
        docs = [self._kept(e, held.get(d.get("Id")), d) for d in docs]
        if len(docs) == len(e.containers) and all(a is b for a, b in zip(docs, e.containers, strict=True)):
            return
        self._unlink_all(e)
        e.containers = docs
        e.version += 1
        for c in docs:
            self._link(e, c)

    def _kept(self, e: Engine, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """`old` if `new` says nothing else (see `_set_containers`), else `new` with its strings shared."""
        if old is None:
            return self._strings.share(new)
        if old == new:
            return old
        text = new.get("Status")
        if text != old.get("Status") and new.get("Id") in e.states:
            new["Status"] = old.get("Status")  # freshly decoded: nobody else holds it
            if old == new:
                return old
            new["Status"] = text
        return self._strings.share(new)

    def _link(self, e: Engine, c: dict[str, Any]) -> None:
        self._by_id[c["Id"]] = (e, c)
        self._ids = None
        for n in c.get("Names") or []:
            self._by_name.setdefault(n.lstrip("/"), {}).setdefault(e.node, (e, c))  # the first, as a scan

    def _unlink_all(self, e: Engine) -> None:
        for c in e.containers:
            if (hit := self._by_id.get(c["Id"])) is not None and hit[0] is e:
                del self._by_id[c["Id"]]
                self._ids = None
            for n in c.get("Names") or []:
                named = self._by_name.get(n.lstrip("/"))
                if named is not None and (hit := named.get(e.node)) is not None and hit[1] is c:
                    del named[e.node]
                    if not named:
                        del self._by_name[n.lstrip("/")]

    def all_containers(self) -> Iterator[tuple[Engine, dict[str, Any]]]:
        for e in self.engines.values():
            for c in e.containers:
                yield e, c

    def locate(self, ref: str) -> Located:
        """A container by full id, unique id prefix, name, or node/name, on any node."""
        node_part, _, name_part = ref.partition("/") if "/" in ref.lstrip("/") else ("", "", ref)
        ref = name_part.lstrip("/") if node_part else ref.lstrip("/")
        if not ref:
            raise NotFound("No such container: (empty name)")
        exact, prefix = [], []
        if node_part:  # one node's containers: a few, looked through
            e = self.engines.get(node_part)
            for c in e.containers if e else []:
                names = [n.lstrip("/") for n in c.get("Names") or []]
                if c["Id"] == ref or ref in names:
                    exact.append(Located(e, c))
                elif c["Id"].startswith(ref):
                    prefix.append(Located(e, c))
        elif (hit := self._by_id.get(ref)) is not None:
            exact.append(Located(*hit))
        elif named := self._by_name.get(ref):  # the same name on several nodes: the first node's
            exact.extend(Located(*named[n]) for n in self.engines if n in named)
        else:
            prefix = [Located(*self._by_id[i]) for i in self._ids_with_prefix(ref, 2)]
        if exact:
            return exact[0]
        if len(prefix) == 1:
            return prefix[0]
        if prefix:
            raise Ambiguous(f"multiple containers match {ref!r}: use more of the id")
        raise NotFound(f"No such container: {ref}")

    async def find(self, ref: str) -> Located:
        """`locate`, looking again when the cache misses (it may lag a change made on a node directly)."""
        try:
            return self.locate(ref)
        except NotFound:
            await self.look_again()
            return self.locate(ref)

    async def _catch_up(self) -> None:
        """The nodes' documents and checks read now, beside their watches, which list at most every
        RELIST_EVERY: a create just after the agents' first publish (a new cluster, a node just joined)
        finds them healthy instead of waiting out the watch's pause."""
        with contextlib.suppress(ShoalError, TimeoutError):  # a registry away: the views stay as they are
            async with asyncio.timeout(LOOK_AGAIN):
                await asyncio.gather(self._load_nodes(newer_only=True), self._load_health(newer_only=True))

    async def look_again(self) -> None:
        """After a miss: the refreshes the engines' events started, then one resync of the engines whose
        event stream is down (what was done on one of those behind the manager's back is seen only by a
        list; a followed engine's change is in the cache within its event's milliseconds) or that count as
        unreachable (their node is critical until a list answers: a manager started before its engines
        answered would otherwise refuse every create until the periodic resync came by), shared by all
        the lookups that miss meanwhile and done at most once per LOOK_EVERY, so requests for names that
        exist nowhere, or creates no node can take, cannot make the manager list engines again and again.
        Listing every engine on each miss cost 2 s and 5,000 engine calls a miss at 1,000 nodes. The
        registry's documents and checks are read again too (`_catch_up`)."""
        await self.fresh()
        if self._looking is None or self._looking.done():
            if time.monotonic() - self._looked_at < LOOK_EVERY:
                return
            lagging = [n for n, e in self.engines.items() if not e.following or not e.reachable]
            self._looking = asyncio.ensure_future(
                asyncio.gather(self.resync(timeout=LOOK_AGAIN, nodes=lagging), self._catch_up())
            )
            self._looking.add_done_callback(lambda _: setattr(self, "_looked_at", time.monotonic()))
        await asyncio.shield(self._looking)

    def _ids_with_prefix(self, prefix: str, at_most: int) -> list[str]:
        """Up to `at_most` container ids that start with `prefix` (a sorted list, rebuilt after changes
        only when a prefix is asked for)."""
        if self._ids is None:
            self._ids = sorted(self._by_id)
        ids, out = self._ids, []
        for i in range(bisect.bisect_left(ids, prefix), len(ids)):
            if not ids[i].startswith(prefix) or len(out) >= at_most:
                break
            out.append(ids[i])
        return out

    def name_in_use(self, name: str) -> dict[str, Any] | None:
        named = self._by_name.get(name)
        if named and not name.startswith("/"):
            return next(iter(named.values()))[1]
        return None

    def _object_lookups(self) -> tuple[dict[str, frozenset[str]], frozenset[str]]:
        """(image id or tag -> the nodes holding it, every network name on some node), from the engines'
        lists, made again only when one of those lists or the set of engines changed."""
        version = self._objects_version
        if self._lookups is None or self._lookups[0] != version:
            holders: dict[str, set[str]] = {}
            for e in self.engines.values():
                for i in e.images:
                    for ref in {i["Id"], *(i.get("RepoTags") or ())}:
                        holders.setdefault(ref, set()).add(e.node)
            networks = frozenset(n["Name"] for e in self.engines.values() for n in e.networks)
            self._lookups = (version, {r: frozenset(n) for r, n in holders.items()}, networks)
        return self._lookups[1], self._lookups[2]

    def network_names(self) -> frozenset[str]:
        """Every network name some node's engine lists."""
        return self._object_lookups()[1]

    def nodes_with_image(self, image: str) -> list[str]:
        """The nodes holding `image` (a name, a full id, or an id's prefix as the docker CLI takes it)."""
        ref = image if image.startswith("sha256:") else tagged(image)
        holders, _ = self._object_lookups()
        found = holders.get(ref, frozenset()) | holders.get(image, frozenset())
        short = image.removeprefix("sha256:")
        if _HEX.fullmatch(short):  # may be an id's prefix, as the docker CLI takes them: the slow path
            found |= {
                e.node
                for e in self.engines.values()
                if any(i["Id"].removeprefix("sha256:").startswith(short) for i in e.images)
            }
        return [node for node in self.engines if node in found]

    async def image_holders(self, image: str) -> list[str]:
        """The nodes holding `image`, looking again once if the cache has none (it may lag a load or a
        build done on a node directly)."""
        holders = self.nodes_with_image(image)
        if not holders:
            await self.look_again()
            holders = self.nodes_with_image(image)
        return holders

    def engine(self, node: str) -> Engine:
        try:
            return self.engines[node]
        except KeyError:
            raise NotFound(f"no node named {node!r}") from None

    def now(self) -> float:
        return time.time()


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - RESYNC_JITTER, 1 + RESYNC_JITTER)


def _dataset_names(datasets: list[Dataset]) -> dict[str, frozenset[str]]:
    """node -> the dataset names on it (what its NodeState's volumes take from the records). A record in
    conflict (its name is another dataset's) lends its node no name: it is reached by its id only."""
    out: dict[str, set[str]] = {}
    for d in datasets:
        if d.kind == "dataset" and not d.conflict:
            out.setdefault(d.node, set()).add(d.name)
    return {n: frozenset(v) for n, v in out.items()}


_SHARED = ("facts", "labels", "containers", "images", "volume_drivers", "volumes", "networks")


def _reuse(old: NodeState | None, new: NodeState) -> NodeState:
    """`new`, holding `old`'s objects for the parts equal in both: the index skips parts it finds
    identical (`is`), so a node whose health changed is not re-indexed for its 100 facts."""
    if old is None:
        return new
    same = {f: a for f in _SHARED if (a := getattr(old, f)) is not (b := getattr(new, f)) and a == b}
    return replace(new, **same) if same else new


def _bound_ports(bindings: Any) -> tuple[tuple[int, str], ...]:
    """HostConfig.PortBindings ({"80/tcp": [{"HostPort": "8080"}]}) as (host port, proto) pairs."""
    out: list[tuple[int, str]] = []
    for key, hosts in bindings.items() if isinstance(bindings, dict) else ():
        proto = str(key).partition("/")[2] or "tcp"
        for h in hosts if isinstance(hosts, list) else ():
            port = str(h.get("HostPort") or "") if isinstance(h, dict) else ""
            if port.isdigit() and 0 < int(port) < 65536:
                out.append((int(port), proto))
    return tuple(out)
