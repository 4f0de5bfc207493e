"""Containers: create goes spec → datasets → place → reserve → engine → record; everything about an
existing container is routed to the engine that holds it; lists come from the event-fed cache (as classic
Swarm answered them) with node-prefixed names.

Only deciding and reserving hold the create lock (Nova's consume_from_request, Nomad's plan applier):
the engine's create runs outside it, so a slow or hung node delays only the creates placed on it, and a
refused create gives back what it reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shoal import jsonbody
from shoal.cluster.engine import path
from shoal.cluster.holds import SWARM_ID, Hold
from shoal.cluster.state import Located, container_name, tagged
from shoal.cluster.status import status_until
from shoal.data.model import containers_using
from shoal.data.records import new_ids
from shoal.data.requests import DatasetRequest, dataset_requests, decide_all, with_limits
from shoal.errors import BadRequest, Conflict, EngineError, NoPlacement, NotFound, Unavailable
from shoal.logs import kv
from shoal.manager.datasets import committed
from shoal.manager.decisions import decision_record
from shoal.manager.reschedule import (
    ON_FAILURE,
    has_policy,
    pinned_to,
    reschedule_policies,
    with_swarm_id,
    without_lost_node,
)
from shoal.manager.service import Route
from shoal.manager.spec import (
    check_body,
    check_name,
    container_spec,
    intent_binds_to_mounts,
    named_volumes,
    user_networks,
    volume_uses,
    with_network_names,
    with_refs,
)
from shoal.scheduler.expr import parse
from shoal.scheduler.model import ContainerRef, ContainerSpec

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager")
RUNNING = ("running", "paused", "restarting")
HOST_DOWN = "Host Down"
# what may follow /containers/{id}/ — anything else is not a Docker endpoint and is refused, never relayed
ACTIONS = frozenset(
    {
        "json", "top", "logs", "changes", "export", "stats", "resize", "start", "stop", "restart", "kill",
        "update", "rename", "pause", "unpause", "attach", "wait", "archive", "exec",
    }
)  # fmt: skip
CHANGES_STATE = frozenset({"start", "stop", "kill", "restart", "rename", "pause", "unpause", "update"})


def with_node(doc: Mapping[str, Any], node: str) -> dict[str, Any]:
    """A list entry as classic Swarm showed it: names prefixed with the node."""
    out = dict(doc)
    out["Names"] = [f"/{node}{n}" for n in doc.get("Names") or []]
    return out


def _row_open(doc: Mapping[str, Any], node: str) -> bytes:
    """A list entry as `docker ps` through the manager shows it, without STATUS, its brace left open."""
    out = with_node(doc, node)
    out.pop("Status", None)
    return jsonbody.dumps_open(out)


def image_affinity(spec: ContainerSpec, holders: list[str], nodes: set[str]) -> ContainerSpec:
    """An image only some nodes hold: place among those (an implicit affinity, as classic Swarm added)."""
    if set(holders) == nodes:
        return spec
    return replace(spec, affinities=(*spec.affinities, parse("affinity", f"image=={tagged(spec.image)}")))


def follow_datasets(spec: ContainerSpec, wanted: list[DatasetRequest]) -> ContainerSpec:
    """A dataset that exists (or a snapshot's source) pulls the container to its node (the volume filter
    sees the dataset's name); a new one may land anywhere."""
    if not wanted:
        return spec
    raws = {r.raw for r in wanted}
    follows = tuple(r.follows for r in wanted if r.follows)
    return replace(spec, volumes=(*(v for v in spec.volumes if v not in raws), *follows))


class Containers:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self._lock = asyncio.Lock()  # one decision at a time: each sees the last one's reservation
        self.execs: dict[str, str] = {}  # exec id -> node
        self.created: dict[str, float] = {}  # container id -> when the manager made it (epoch seconds)
        self._made = 0  # bumped with every change to `created`: the order below depends on it
        # container id -> (its State document, STATUS text, the span of time it reads so): see _status
        self._statuses: dict[str, tuple[Mapping[str, Any], str, float, float]] = {}
        # every cached container as a row, newest first, and what it was sorted from: sorted again only
        # when an engine's list (or reachability), the engines, or `created` changed (the sort of 30,000
        # rows was a quarter of `ps -a`'s time)
        self._ordered: tuple[tuple[object, ...], list[Row]] | None = None
        # node -> (its engine, that engine's list version, each entry of the list as `docker ps` shows it
        # but for STATUS, as JSON with its closing brace left off): `ps -a` over 30,000 containers copied
        # and encoded every entry on every call (100-200 ms, and garbage the collector then walked); now
        # an entry is rendered once per change of its engine's list, and each call adds STATUS as of now
        self._rendered: dict[str, tuple[object, int, list[dict[str, Any]], list[bytes]]] = {}

    @property
    def cluster(self):
        return self.m.cluster

    # --- create -----------------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        body: dict[str, Any],
        *,
        target: str | None = None,
        replacing: tuple[str, str] | None = None,
        reasons: tuple[str, ...] = (),
        attempt: int = 0,
    ) -> dict[str, Any]:
        """`target`: the node it must land on (a move's containers); `replacing`: (node, id) of the lost
        container it takes over from (a reschedule: same name); `reasons` go into its decision record.
        Beside other managers, the placement is held on the node's document in the registry before the
        engine is asked; a manager that lost the race to another places again (`attempt`)."""
        c = self.cluster
        asked = body
        check_name(name)
        check_body(body)
        body = intent_binds_to_mounts(body)
        body, policies = reschedule_policies(body)  # an unknown policy is a 400 naming it
        body = with_swarm_id(body)
        body = with_network_names(body, self.m.networks.names(user_networks(body)))  # `--net MANAGER-ID`
        spec, out = container_spec(body, name)
        kept = out  # what is kept for rescheduling: before this node's I/O limits are written in
        notes = list(reasons)
        if target is not None:
            spec = pinned_to(spec, target)
        elif replacing is not None:
            spec, dropped = without_lost_node(spec, replacing[0])
            notes += dropped
        spec = replace(spec, constraints=(*spec.constraints, *self.m.reschedule.exclusions()))
        moving: tuple[list[Any], str] | None = None
        again = False
        async with self._lock:
            self._check_name(name, replacing[1] if replacing else "")
            spec, ids = await self._dependencies(spec)
            out = with_refs(out, ids)
            # nodes holding the image are preferred (a soft affinity); the node chosen pulls it if it
            # lacks it (Images.ensure_image), as classic Swarm pulled at create time
            holders = await c.image_holders(spec.image)
            if spread := self.m.volumes.scattered(named_volumes(body)):
                raise BadRequest(
                    "; ".join(
                        f"volume {v} is held by {', '.join(n)} each as its own" for v, n in spread.items()
                    )
                    + ": name one copy as NODE/NAME, or make one cluster-wide volume with `docker volume "
                    "create` through the manager"
                )
            known = c.network_names()
            for net in spec.networks:
                if net not in known:
                    # 400, not 404: the docker CLI takes any 404 from create as "image missing" and pulls
                    raise BadRequest(
                        f"network {net} not found (`docker network create {net}` makes it on every node)"
                    )
            try:  # bad dataset names fail here, before anything is made
                wanted = dataset_requests(volume_uses(body), c.datasets, self.m.settings.profiles)
            except NotFound as e:  # 400: a 404 from create makes the docker CLI try to pull the image
                raise BadRequest(e.message) from None
            raws = {r.raw for r in wanted}  # the placement the datasets' own node would not pin:
            unpinned = replace(spec, volumes=tuple(v for v in spec.volumes if v not in raws))
            free = image_affinity(unpinned, holders, set(c.engines)) if holders else unpinned
            # a move's containers land on its target ahead of their dataset: no pin to the dataset's node
            pinned = follow_datasets(spec, wanted) if target is None else unpinned
            spec = image_affinity(pinned, holders, set(c.engines)) if holders else pinned
            p = self.m.place(spec)
            if p.node is None:  # the cache may lag what was just done on a node directly: look again, once
                await c.look_again()
                p = self.m.place(spec)
            if p.node is None and target is None and (away := self._movable(wanted, free)) is not None:
                moving = away  # the datasets' node does not fit, another does: they move there first
            elif p.node is None:
                record = decision_record(name, spec, p, c.now())
                self.m.decisions.refused(record)
                kv(log, "no placement", decision=record["id"], name=name or None, image=spec.image,
                   reason=p.error().splitlines()[-1])  # fmt: skip
                raise NoPlacement(p)
            if moving is None:
                assert p.node is not None
                used, new = [], []
                if wanted:
                    pool = c.pool_of(p.node)
                    settings = self.m.settings
                    used, new = decide_all(
                        wanted, p.node, c.datasets, settings.default_profile, pool.get("free_bytes"),
                        new_ids(), c.now(),
                    )  # fmt: skip
                    out = with_limits(out, used, settings.profiles, pool.get("device"))
                record = decision_record(name, spec, p, c.now(), used)
                if notes:  # shown as `shoal why` and the dashboard show a placement's lines
                    record["reasons"] = notes
                    lost = replacing[0] if replacing else "-"
                    rows = [{"node": lost, "filter": "reschedule", "reason": r} for r in notes]
                    record["placement"]["rejected"] = [*record["placement"].get("rejected", []), *rows]
                ref = ContainerRef(
                    f"pending-{uuid.uuid4()}", name, spec.image, out.get("Labels") or {}, spec.ports
                )
                reservation = c.reserve(p.node, spec, ref)
                held = c.holder and await c.hold(p.node, _hold_of(c.holder, p.node, spec, ref, c.now()))
                if c.holder and not held:
                    c.release(reservation)
                    if attempt >= HOLD_ATTEMPTS:
                        raise Conflict(
                            f"other managers kept placing on {p.node} first ({attempt + 1} tries); try again"
                        )
                    again = True
        if again:
            return await self.create(
                name, asked, target=target, replacing=replacing, reasons=reasons, attempt=attempt + 1
            )
        if moving is not None:
            datasets, node = moving
            for d in datasets:
                await self.m.moves.move(
                    d.name, node, by="create", reasons=(f"{name or 'a container'} is placed on {node}",)
                )
            return await self.create(name, body, target=node, reasons=reasons)
        assert p.node is not None
        try:
            if p.node not in holders:  # a failed pull gives the reservation back
                await self.m.images.ensure_image(p.node, spec.image)
            async with committed(c, new):  # the records go again if the engine refuses
                created = await c.engine(p.node).call(
                    "POST", "/containers/create", params={"name": name} if name else None, json=out
                )
        except Unavailable:
            c.release(reservation)
            c.suspect(p.node)  # the next decisions pass it over until it answers a list again
            await self._unhold(p.node, ref)
            raise
        except BaseException:
            c.release(reservation)
            await self._unhold(p.node, ref)
            raise
        cid = created["Id"]
        c.commit(reservation, cid)
        self.made(cid)
        if replacing is not None:
            c.forget(*replacing)  # as classic Swarm did: the lost copy is no longer listed
        if ON_FAILURE in policies or has_policy(out.get("Labels")):
            self.m.reschedule.remember(cid, name, kept, p.node)
        self.m.decisions.made(record, cid)
        kv(log, "placed", decision=record["id"], container=cid[:12], name=name or None, node=p.node,
           candidates=p.candidates, filters=",".join(f"{f}:{n}" for f, n in p.steps))  # fmt: skip
        return created

    async def _unhold(self, node: str, ref: ContainerRef) -> None:
        if self.cluster.holder and (sid := ref.labels.get(SWARM_ID)):
            with contextlib.suppress(Exception):  # otherwise it expires by itself (holds.HOLD_FOR)
                await self.cluster.unhold(node, sid)

    def _movable(self, wanted: list[DatasetRequest], free: ContainerSpec) -> tuple[list[Any], str] | None:
        """A create whose existing datasets pin it to a node that does not fit: the node it would get
        without that pin, if any, and the datasets to move there (their node must answer, and no
        container may use them there: a dataset moves with its containers only by `shoal volume move`)."""
        c = self.cluster
        names = {r.follows for r in wanted if r.follows and r.intent.snapshot_of is None}
        datasets = [d for d in c.datasets if d.kind == "dataset" and d.name in names and not d.conflict]
        if not datasets or len(names) != len(datasets) or any(r.intent.snapshot_of for r in wanted):
            return None
        p = self.m.place(free)
        if p.node is None or any(d.node == p.node for d in datasets):
            return None
        for d in datasets:
            e = c.engines.get(d.node)
            if e is None or not e.reachable:
                return None
            users = containers_using(d, e.containers, f"/flocker/{d.id}")
            if users:
                raise Conflict(
                    f"dataset {d.name} on {d.node} is used by container(s) {', '.join(users)}; a dataset "
                    f"moves with its containers by `shoal volume move {d.name} {p.node}`"
                )
        return datasets, p.node

    def _check_name(self, name: str, replacing: str = "", prefix: str = "") -> None:
        """A name is unique across the cluster (as classic Swarm kept it): in use on any node, or by a
        create on its way, is dockerd's own Conflict (`prefix`: what dockerd puts before it, for rename)."""
        if not name:
            return
        other = self.cluster.name_in_use(name)
        if other is not None and other["Id"] == replacing:  # the lost copy a reschedule takes over from
            other = None
        if other is not None or self.cluster.pending_name(name):
            owner = other["Id"] if other else "(being created)"
            raise Conflict(
                f'{prefix}Conflict. The container name "/{name}" is already in use by container "{owner}". '
                "You have to remove (or rename) that container to be able to reuse that name."
            )

    async def _dependencies(self, spec: ContainerSpec) -> tuple[ContainerSpec, dict[str, str]]:
        """Links, --volumes-from and --net/--pid/--ipc container: name their container by name, short id or
        node/name; the dependency filter matches full ids and names, so each is resolved to the name the
        cache lists it under (its id if it has none) here. One the cache does not know stays as written:
        the filter then says no node has it. Also returned: the `node/name` refs (as `docker ps` shows
        names through the manager), with the id the engine is given in their place."""
        if not spec.depends_on:
            return spec, {}
        resolved, ids = [], {}
        for ref in spec.depends_on:
            try:
                found = await self.cluster.find(ref)
            except NotFound:
                resolved.append(ref)
            else:
                resolved.append(container_name(found.doc) or found.id)
                if "/" in ref:
                    ids[ref] = found.id
        return replace(spec, depends_on=tuple(dict.fromkeys(resolved))), ids

    # --- existing containers ------------------------------------------------------------------------

    async def locate(self, ref: str) -> Located:
        return await self.cluster.find(ref)

    async def route(self, ref: str, action: str = "", query: Mapping[str, str] | None = None) -> Route:
        """Where a request about container `ref` goes; `action` must be one of Docker's. A rename onto a
        name another container holds on any node is refused here, in dockerd's words (each engine knows
        only its own names)."""
        if action and action not in ACTIONS:
            raise NotFound(f"page not found: /containers/{{id}}/{action} is not a Docker API endpoint")
        found = await self.locate(ref)
        if action == "rename" and (new := (query or {}).get("name", "").lstrip("/")):
            async with self._lock:  # against a create taking the same name meanwhile
                self._check_name(new, found.id, "Error when allocating new name: ")
        p = path("/containers", found.id) + (f"/{action}" if action else "")
        rewrite = self._inspect_rewrite(found) if action == "json" else None
        return Route(found.engine, p, rewrite, found.id)

    def _inspect_rewrite(self, found: Located):
        node = self.cluster.index.get(found.node)
        engine = found.engine

        def add_node(doc: dict[str, Any]) -> dict[str, Any]:
            doc["Node"] = {
                "ID": node.id if node else engine.node,
                "Name": engine.node,
                "IP": node.address if node else "",
                "Addr": engine.url.removeprefix("tcp://"),
                "Cpus": int(node.cpus) if node else 0,
                "Memory": node.memory if node else 0,
                "Labels": dict(node.labels) if node else {},
            }
            return doc

        return add_node

    def acted(self, route: Route, action: str, status: int) -> None:
        """After a relayed action: the cache looks at that container again (a read after it sees it)."""
        if status < 300 and action in CHANGES_STATE:
            self.cluster.mark(route.node, {"containers"}, (route.object_id,))

    async def remove(self, ref: str, query: Mapping[str, str]) -> None:
        found = await self.locate(ref)
        await found.engine.call("DELETE", path("/containers", found.id), params=dict(query))
        self.cluster.forget(found.node, found.id)
        self.created.pop(found.id, None)
        self._made += 1

    async def create_exec(self, ref: str, body: bytes) -> dict[str, Any]:
        found = await self.locate(ref)
        created = await found.engine.call(
            "POST",
            path("/containers", found.id) + "/exec",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        self.execs[created["Id"]] = found.node
        return created

    def exec_route(self, exec_id: str, action: str) -> Route:
        node = self.execs.get(exec_id)
        if node is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        if action not in ("start", "resize", "json"):
            raise NotFound(f"page not found: /exec/{{id}}/{action} is not a Docker API endpoint")
        return Route(self.cluster.engine(node), path("/exec", exec_id) + f"/{action}")

    # --- lists --------------------------------------------------------------------------------------

    async def listed(self, q: PsQuery) -> list[dict[str, Any]] | jsonbody.Written:
        """`docker ps` across the nodes, sorted and cut as dockerd does: newest first, `limit` (which shows
        every state, as dockerd's does), `since`/`before` by the cluster's order of creation, `node` (classic
        Swarm's) here; the other filters and sizes are each engine's to answer, a plain list the cache's
        (as classic Swarm answered it). A node that does not answer keeps its last known containers listed,
        their STATUS `Host Down` (Swarm's words), rather than dropping them. The engines' answers come as
        dicts, the cache's as the list's JSON already written (jsonbody.Written, see `_rendered`)."""
        c = self.cluster
        await c.fresh()
        since, before = await self._mark(q, "since"), await self._mark(q, "before")
        engine_filters = q.engine_filters
        asked = bool(engine_filters or q.size)  # else the cache's own entries, STATUS as of now
        if asked:
            rows = await self._asked(engine_filters, q)
        else:  # the cache's rows, in order; filtering keeps it
            rows = [
                r for r in self._all_rows() if q.shows_all or not r.reachable or r.doc.get("State") in RUNNING
            ]
        nodes = q.filters.get("node")
        if nodes:
            rows = [r for r in rows if r.node in nodes]
        ordered = cut(
            rows if not asked else newest_first(rows, self.created), since, before, q.limit, self.created
        )
        if asked:
            return [with_node(r.doc, r.node) for r in ordered]
        # one body, written from each row's JSON and its STATUS: no object a row, and one buffer
        now = c.now()
        tails: dict[str | None, bytes] = {}  # a few texts ("Up 5 minutes") for 30,000 rows
        pieces: list[bytes] = [b"["]
        for r in ordered:  # rows of the engines held now: nothing above waits once they are taken
            e = c.engines[r.node]
            status = self._status(e, r.doc, now)
            if status is None:
                status = r.doc.get("Status")
            if (tail := tails.get(status)) is None:
                tail = b"}," if status is None else b',"Status":' + jsonbody.dumps(status) + b"},"
                tails[status] = tail
            pieces += (self._rows_of(e)[r.rank], tail)
        if len(pieces) > 1:
            pieces[-1] = pieces[-1][:-1]  # no comma after the last row
        pieces.append(b"]")
        return jsonbody.Written(b"".join(pieces))

    def _all_rows(self) -> list[Row]:
        """Every container the cache holds, newest first (`newest_first`), sorted again only when what
        the order is made of changed."""
        engines = self.cluster.engines.values()
        key = (self._made, *((id(e), e.node, e.version, e.reachable) for e in engines))
        if self._ordered is None or self._ordered[0] != key:
            rows = [
                Row(e.node, rank, doc, e.reachable) for e in engines for rank, doc in enumerate(e.containers)
            ]
            self._ordered = (key, newest_first(rows, self.created))
        return self._ordered[1]

    def _rows_of(self, e: Any) -> list[bytes]:
        """The engine's entries as `docker ps` shows them, STATUS left out: rendered when the entry is new
        (an engine's list keeps the very objects of the entries that did not change, _set_containers)."""
        got = self._rendered.get(e.node)
        if got is not None and got[0] is e and got[1] == e.version:
            return got[3]
        held = {id(doc): row for doc, row in zip(got[2], got[3], strict=False)} if got and got[0] is e else {}
        docs = list(e.containers)
        rows = [held.get(id(doc)) or _row_open(doc, e.node) for doc in docs]
        self._rendered[e.node] = (e, e.version, docs, rows)
        if len(self._rendered) > len(self.cluster.engines):  # nodes that left
            for node in self._rendered.keys() - self.cluster.engines.keys():
                del self._rendered[node]
        return rows

    async def _mark(self, q: PsQuery, key: str) -> Row | None:
        """The container a `since`/`before` filter names, as a row to cut the ordered list at."""
        refs = q.filters.get(key)
        if not refs:
            return None
        try:
            found = await self.cluster.find(refs[0])
        except NotFound:
            raise NotFound(f"no such container {refs[0]}") from None
        rank = next((i for i, d in enumerate(found.engine.containers) if d["Id"] == found.id), 0)
        return Row(found.node, rank, found.doc)

    def _status(self, e: Any, doc: Mapping[str, Any], now: float) -> str | None:
        """A cached entry's STATUS as of `now` (`Host Down` on a node that does not answer); None: as
        listed. Each text is kept with its State document until it would read otherwise (status_until):
        30,000 of them cost a quarter of `ps -a` made again on every call."""
        if not e.reachable:
            return HOST_DOWN
        if (state := e.states.get(doc["Id"])) is None:
            return None
        hit = self._statuses.get(doc["Id"])
        if hit is None or hit[0] is not state or not hit[2] <= now < hit[3]:
            if len(self._statuses) > MAX_CREATED:
                self._statuses.clear()
            text, until = status_until(state, now)
            hit = self._statuses[doc["Id"]] = (state, text, now, until)
        return hit[1]

    async def _asked(self, engine_filters: dict[str, list[str]], q: PsQuery) -> list[Row]:
        """Every engine answers for its own containers; one that does not answer lends its last known ones
        (Host Down) where the manager can tell they match: filters on id, name, label and status only."""
        c = self.cluster
        params = {"all": "1" if q.shows_all else "0"}
        if engine_filters:
            params["filters"] = json.dumps(engine_filters)
        if q.size:
            params["size"] = "1"

        async def one(e) -> list[dict[str, Any]]:
            if not e.reachable:
                raise Unavailable(f"{e.node} does not answer")
            return await e.call("GET", "/containers/json", params=params)

        engines = list(c.engines.values())
        lists = await asyncio.gather(*(one(e) for e in engines), return_exceptions=True)
        refused = [r for r in lists if isinstance(r, EngineError) and r.status < 500]
        if refused and not any(not isinstance(r, BaseException) for r in lists):
            raise refused[0]  # the query itself is wrong (no engine answered it): the engine's own words
        rows = []
        for e, got in zip(engines, lists, strict=True):
            if not isinstance(got, BaseException):
                rows += [Row(e.node, rank, doc) for rank, doc in enumerate(got)]
            elif not isinstance(got, EngineError) or got.status >= 500:
                rows += [
                    Row(e.node, rank, {**doc, "Status": HOST_DOWN}, reachable=False)
                    for rank, doc in enumerate(e.containers)
                    if cached_match(doc, engine_filters)
                ]
        return rows

    def made(self, container_id: str) -> None:
        """When the manager made a container (finer than the engines' whole seconds): it orders containers
        made on different nodes within one second."""
        self.created[container_id] = time.time()
        self._made += 1
        if len(self.created) > MAX_CREATED:
            for old in list(self.created)[: MAX_CREATED // 2]:
                del self.created[old]


MAX_CREATED = 100_000
MANAGER_FILTERS = ("node", "since", "before")
CACHED_FILTERS = frozenset({"id", "name", "label", "status"})


@dataclass(frozen=True, slots=True)
class PsQuery:
    """A `docker ps` request, parsed at the API edge: filters as key -> values."""

    all: bool = False
    limit: int | None = None
    size: bool = False
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def shows_all(self) -> bool:
        """dockerd lists every state with -a, with a limit (`-n`, `-l`), or with a status filter."""
        return self.all or bool(self.limit) or "status" in self.filters

    @property
    def engine_filters(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.filters.items() if k not in MANAGER_FILTERS}


@dataclass(frozen=True, slots=True)
class Row:
    """One listed container: its node, its place in its engine's list (newest first), its entry."""

    node: str
    rank: int
    doc: Mapping[str, Any]
    reachable: bool = True


def newest_first(rows: list[Row], made: Mapping[str, float] | None = None) -> list[Row]:
    """dockerd's order across nodes: by creation time, newest first. The engines give whole seconds; the
    manager's own record orders the containers it made within one second, and each engine's own order
    (it knows the nanoseconds) those on one node."""
    made = made or {}
    return sorted(rows, key=lambda r: _when(r, made), reverse=True)


def _when(r: Row, made: Mapping[str, float]) -> tuple[int, float, int, str]:
    created = int(r.doc.get("Created") or 0)
    return created, made.get(str(r.doc.get("Id")), float(created)), -r.rank, r.node


def cut(
    rows: list[Row],
    since: Row | None,
    before: Row | None,
    limit: int | None,
    made: Mapping[str, float] | None = None,
) -> list[Row]:
    """`since`/`before` X: the containers made after/before X, in the order `rows` is in (newest_first's),
    then the first `limit` of them (pure)."""
    made = made or {}
    out = rows
    for mark, newer in ((since, True), (before, False)):
        if mark is None:
            continue
        ids = [r.doc.get("Id") for r in out]
        if mark.doc.get("Id") in ids:
            at = ids.index(mark.doc.get("Id"))
            out = out[:at] if newer else out[at + 1 :]
        else:  # X itself is not listed (stopped, filtered out): compare with where it would be
            key = _when(mark, made)
            out = [r for r in out if (_when(r, made) > key) == newer]
    return out[:limit] if limit else out


def cached_match(doc: Mapping[str, Any], filters: Mapping[str, list[str]]) -> bool:
    """Does a last known entry match the filters (id, name, label, status: what the list entry shows)? A
    filter on anything else cannot be told from it: the entry is left out rather than shown wrongly. As in
    the plain list, it is shown whatever state it was last seen in (a node going down stops its containers
    first, so the last state seen is often `exited`), unless a status filter asks for another."""
    if set(filters) - CACHED_FILTERS:
        return False
    state = str(doc.get("State") or "")
    names = [n.lstrip("/") for n in doc.get("Names") or []]
    labels = doc.get("Labels") or {}
    for key, values in filters.items():
        if key == "label":
            if not all(
                labels.get(k) == v if eq else k in labels for k, eq, v in (x.partition("=") for x in values)
            ):
                return False
        elif key == "id":
            if not any(str(doc.get("Id", "")).startswith(v) for v in values):
                return False
        elif key == "name":
            if not any(_search(v, n) for v in values for n in names):
                return False
        elif key == "status" and state not in values:
            return False
    return True


def _search(pattern: str, name: str) -> bool:
    """dockerd's name filter: a regular expression searched in the name (a bad one: as text)."""
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


HOLD_ATTEMPTS = 5  # placements again after losing a race for a node to another manager


def _hold_of(manager: str, node: str, spec: ContainerSpec, ref: ContainerRef, now: float) -> Hold:
    return Hold(
        ref.labels.get(SWARM_ID, ref.id), manager, now, spec.cpus, spec.memory, ref.ports, ref.name,
        ref.image, dict(ref.labels),
    )  # fmt: skip
