"""Containers: create goes through the scheduler, everything else to the engine that holds the container;
lists are gathered from every engine with node-prefixed names, as classic Swarm did."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from shoal import keys
from shoal.api.docker.common import Manager, forward, manager_of, reply_json
from shoal.api.docker.datasets import committed
from shoal.api.docker.hijack import hijack
from shoal.cluster.state import Engine, tagged
from shoal.cluster.status import status_text
from shoal.data.records import new_ids
from shoal.data.requests import dataset_requests, decide_all, with_limits
from shoal.errors import BadRequest, Conflict, NotFound, ShoalError
from shoal.manager.spec import container_spec, intent_binds_to_mounts, volume_uses
from shoal.scheduler.expr import parse
from shoal.scheduler.model import ContainerRef

log = logging.getLogger("shoal.manager")


def _with_node(c: dict[str, Any], node: str) -> dict[str, Any]:
    c = dict(c)
    c["Names"] = [f"/{node}{n}" for n in c.get("Names") or []]
    return c


_RUNNING = ("running", "paused", "restarting")


def _live_only(query: Any) -> bool:
    """Filters, sizes and before/since are the engines' to answer; a plain list is the cache's."""
    filters = query.get("filters", "")
    return (
        (filters not in ("", "{}"))
        or query.get("size", "0") in ("1", "true", "True")
        or bool(query.get("before") or query.get("since"))
    )


async def containers_list(request: web.Request) -> web.Response:
    """`docker ps`: from the event-fed cache (as classic Swarm did), with STATUS computed now; anything
    with filters is asked of every engine."""
    c = manager_of(request).cluster
    q = request.query
    if _live_only(q):

        async def one(e: Engine) -> list[dict[str, Any]]:
            try:
                return [_with_node(x, e.node) for x in await e.json("GET", "/containers/json", params=q)]
            except (aiohttp.ClientError, OSError, TimeoutError):
                return []

        lists = await asyncio.gather(*(one(e) for e in c.engines.values()))
        found = [x for lst in lists for x in lst]
    else:
        await c.fresh()
        now = c.now()
        every = q.get("all", "0") in ("1", "true", "True")
        found = []
        for e in c.engines.values():
            if not e.reachable:
                continue
            for ct in e.containers:
                if every or ct.get("State") in _RUNNING:
                    doc = _with_node(ct, e.node)
                    if (state := e.states.get(ct["Id"])) is not None:
                        doc["Status"] = status_text(state, now)
                    found.append(doc)
    out = sorted(found, key=lambda x: x.get("Created", 0), reverse=True)
    limit = q.get("limit")
    if limit and limit.lstrip("-").isdigit() and int(limit) > 0:
        out = out[: int(limit)]
    return reply_json(out)


async def containers_create(request: web.Request) -> web.Response:
    m = manager_of(request)
    c = m.cluster
    name = request.query.get("name", "")
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as e:
        raise BadRequest(f"the container config is not valid JSON: {e}") from None
    body = intent_binds_to_mounts(body)
    spec, out = container_spec(body, name)
    async with m._create_lock:  # one decision at a time: each sees the last one's placement
        if name and (other := c.name_in_use(name)) is not None:
            raise Conflict(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{other["Id"]}". You have to remove (or rename) that container to be able to reuse '
                "that name."
            )
        holders = await c.image_holders(spec.image)
        if not holders:
            raise NotFound(
                f"No such image: {spec.image} (no node has it; load it with `docker load` "
                "through the manager, or build it on a node)"
            )
        for net in spec.networks:
            if not any(net == n["Name"] for e in c.engines.values() for n in e.networks):
                # 400, not 404: the docker CLI takes any 404 from create as "image missing" and pulls
                raise BadRequest(
                    f"network {net} not found (`docker network create {net}` makes it on every node)"
                )
        try:  # bad dataset names fail here, before anything is made
            wanted = dataset_requests(volume_uses(body), c.datasets, m.profiles)
        except NotFound as e:  # 400: a 404 from create makes the docker CLI try to pull the image
            raise BadRequest(e.message) from None
        if wanted:  # a dataset that exists (or a snapshot's source) pulls the container to its node
            raws = {r.raw for r in wanted}
            follows = tuple(r.follows for r in wanted if r.follows)
            spec = replace(spec, volumes=(*(v for v in spec.volumes if v not in raws), *follows))
        if set(holders) != set(c.engines):  # the image is only on some nodes: place among those
            image = tagged(spec.image)
            spec = replace(spec, affinities=(*spec.affinities, parse("affinity", f"image=={image}")))
        p = m.place(spec)
        if p.node is None:  # the cache may lag what was just done on a node directly: look again, once
            await c.resync()
            p = m.place(spec)
        record = {
            "request": {
                "name": name,
                "image": spec.image,
                "expressions": list(p.expressions),
                "memory": spec.memory,
                "cpus": spec.cpus,
                "ports": [f"{a}/{b}" for a, b in spec.ports],
                "volumes": list(spec.volumes),
                "networks": list(spec.networks),
            },
            "placement": p.to_dict(),
            "time": c.now(),
        }
        if p.node is None:
            m.decisions.append({**record, "container": None})
            log.info("no placement for %s: %s", name or spec.image, p.error().splitlines()[-1])
            raise ShoalError(p.error())
        engine = c.engine(p.node)
        params = {"name": name} if name else {}
        used, new = [], []
        if wanted:
            pool = c.pool_of(p.node)
            used, new = decide_all(
                wanted, p.node, c.datasets, m.default_profile, pool.get("free_bytes"), new_ids(), c.now()
            )
            out = with_limits(out, used, m.profiles, pool.get("device"))
            record["request"]["datasets"] = [f"{d.name}@{d.profile} ({d.id[:8]})" for d in used]
        async with committed(c, new):  # the records go again if the engine refuses
            created = await engine.json("POST", "/containers/create", params=params, json=out)
        cid = created["Id"]
        c.reservations[cid] = (spec.cpus, spec.memory)
        node = c.index.nodes[c.index.pos[p.node]]
        c.index.upsert(
            replace(
                node,
                containers=(
                    *node.containers,
                    ContainerRef(cid, name, spec.image, out.get("Labels") or {}, spec.ports),
                ),
                reserved_cpus=node.reserved_cpus + spec.cpus,
                reserved_memory=node.reserved_memory + spec.memory,
            )
        )
        engine.containers.append(
            {
                "Id": cid,
                "Names": [f"/{name}"] if name else [f"/{cid[:12]}"],
                "Image": spec.image,
                "State": "created",
                "Labels": out.get("Labels") or {},
                "Ports": [],
            }
        )
        m.decisions.append({**record, "container": cid, "name": name})
        log.info("placed %s on %s (%s)", name or cid[:12], p.node, ", ".join(f"{f}:{n}" for f, n in p.steps))
        asyncio.get_running_loop().create_task(
            _store_decision(m, cid, {**record, "container": cid, "name": name})
        )
        c.mark(p.node, {"containers"}, (cid,))
    return reply_json(created, 201)


async def _store_decision(m: Manager, cid: str, record: dict[str, Any]) -> None:
    with contextlib.suppress(ShoalError):
        await m.cluster.client.put(keys.decision(cid), record)


async def container_action(request: web.Request) -> web.StreamResponse:
    c = manager_of(request).cluster
    engine, ct = await c.find(request.match_info["id"])
    action = request.match_info.get("action", "")
    path = f"/containers/{ct['Id']}" + (f"/{action}" if action else "")
    if action in ("attach",) and request.headers.get("Upgrade"):
        return await hijack(request, engine, path)
    if action == "json" and request.method == "GET":
        node = c.index.get(engine.node)

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

        return await forward(request, engine, path, rewrite=add_node)
    if action == "exec" and request.method == "POST":
        body = await request.read()
        created = await engine.json(
            "POST", f"{path}", data=body, headers={"Content-Type": "application/json"}
        )
        manager_of(request).execs[created["Id"]] = engine.node
        return reply_json(created, 201)
    resp = await forward(request, engine, path)
    if request.method == "DELETE" and resp.status < 300:  # gone at once from info and the scheduler
        engine.containers = [x for x in engine.containers if x["Id"] != ct["Id"]]
        c.reindex()
    if request.method == "DELETE" or action in (
        "start",
        "stop",
        "kill",
        "restart",
        "rename",
        "pause",
        "unpause",
    ):
        c.mark(engine.node, {"containers"}, (ct["Id"],))
    return resp


async def exec_action(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    eid = request.match_info["id"]
    node = m.execs.get(eid)
    if node is None:
        raise NotFound(f"No such exec instance: {eid}")
    engine = m.cluster.engine(node)
    path = f"/exec/{eid}/{request.match_info['action']}"
    if request.match_info["action"] == "start" and request.headers.get("Upgrade"):
        return await hijack(request, engine, path)
    return await forward(request, engine, path)


# --- decisions (`shoal why`, the dashboard) ------------------------------------------------------


async def decisions_list(request: web.Request) -> web.Response:
    """The recent placement decisions, newest first, refusals included."""
    m = manager_of(request)
    limit = request.query.get("limit", "")
    out = list(reversed(m.decisions))
    return reply_json(out[: int(limit)] if limit.isdigit() else out)


async def decision(request: web.Request) -> web.Response:
    """Why a container is where it is: from memory, else from the registry (it outlives a restart)."""
    m = manager_of(request)
    c = m.cluster
    _, ct = await c.find(request.match_info["ref"])
    cid = ct["Id"]
    for d in reversed(m.decisions):
        if d.get("container") == cid:
            return reply_json(d)
    stored = await c.client.get_json(keys.decision(cid))
    if stored is not None:
        return reply_json(stored)
    raise NotFound(
        f"no placement decision is recorded for {request.match_info['ref']}: it was not created through "
        "the shoal manager (it was made on its node directly)"
    )
