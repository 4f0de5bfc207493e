"""Volumes and networks: local-scope objects that live on one engine each.

As classic Swarm did, lists name them `node/name`, and a `node/` prefix on create, inspect or remove
picks that node. Without a prefix, create makes the object on every node (so a container can land on
any node and still find its network or volume; compose's `<project>_default` network relies on it),
inspect answers from the first node that has it, and remove takes it off every node that has it.
A create that fails on one node is undone on the others: nothing is left half-made.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shoal.api.docker.common import fan_out, forward, manager_of, reply_json
from shoal.api.docker.datasets import committed
from shoal.cluster.state import Cluster, Engine
from shoal.data.model import DRIVERS
from shoal.data.records import new_ids
from shoal.data.requests import dataset_request, decide_all
from shoal.errors import BadRequest, Conflict, EngineError, NotFound, ShoalError
from shoal.scheduler.model import ContainerSpec

LOCAL_NETWORK_DRIVERS = frozenset({"", "bridge", "macvlan", "ipvlan"})


def _split(c: Cluster, ref: str) -> tuple[list[Engine], str]:
    """`node1/name` -> ([node1's engine], name); `name` -> (every engine, name)."""
    node, sep, name = ref.partition("/")
    if sep and node in c.engines:
        return [c.engines[node]], name
    return list(c.engines.values()), ref


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _failures(results: list[tuple[Engine, Any]]) -> list[tuple[Engine, BaseException]]:
    return [(e, r) for e, r in results if isinstance(r, BaseException)]


def _first_error(failed: list[tuple[Engine, BaseException]], what: str) -> ShoalError:
    e, err = failed[0]
    if isinstance(err, EngineError):
        err.message = f"{err.message} (on {e.node})"
        return err
    return ShoalError(f"{what} failed on {e.node}: {err}")


# --- volumes ---------------------------------------------------------------------------------------


async def volumes_list(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    results = await fan_out(
        list(c.engines.values()), lambda e: e.json("GET", "/volumes", params=request.query)
    )
    vols, warnings = [], []
    for e, r in results:
        if isinstance(r, BaseException):
            warnings.append(f"{e.node}: {r}")
            continue
        for v in r.get("Volumes") or []:
            vols.append({**v, "Name": f"{e.node}/{v['Name']}"})
        warnings += r.get("Warnings") or []
    return reply_json({"Volumes": vols, "Warnings": warnings or None})


async def volume_create(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    body = await _body(request)
    if body.get("Driver") in DRIVERS:
        return await _dataset_create(request, body)
    engines, name = _split(c, body.get("Name") or "")
    results = await fan_out(engines, lambda e: e.json("POST", "/volumes/create", json={**body, "Name": name}))
    if failed := _failures(results):
        made = [e for e, r in results if not isinstance(r, BaseException)]
        created = name or next((r["Name"] for _, r in results if not isinstance(r, BaseException)), "")
        if created:
            await fan_out(made, lambda e: e.json("DELETE", f"/volumes/{created}"))
        raise _first_error(failed, "volume create")
    await c.resync()
    return reply_json(results[0][1], 201)


async def _dataset_create(request: web.Request, body: dict[str, Any]) -> web.Response:
    """A dataset volume is made once, on one node: the one named (node2/NAME), its source's node for a
    snapshot, where an existing one lives, or else where the scheduler puts a container using the driver."""
    m = manager_of(request)
    c = m.cluster
    engines, raw = _split(c, body.get("Name") or "")
    try:
        wanted = dataset_request(raw, c.datasets, m.profiles, body.get("DriverOpts") or {})
    except NotFound as e:
        raise BadRequest(e.message) from None
    if wanted.follows:
        node = next(d.node for d in c.datasets if d.name == wanted.follows)
    elif len(engines) == 1:
        node = engines[0].node
    else:
        p = m.place(ContainerSpec(volume_driver=body["Driver"]))
        if p.node is None:
            raise ShoalError(p.error())
        node = p.node
    free = c.pool_of(node).get("free_bytes")
    _, new = decide_all([wanted], node, c.datasets, m.default_profile, free, new_ids(), c.now())
    async with committed(c, new):  # the records go again if the engine refuses
        made = await c.engine(node).json(
            "POST", "/volumes/create", json={**body, "Name": raw, "DriverOpts": {}}
        )
    c.mark(node, {"volumes"})
    return reply_json(made, 201)


async def volume_inspect(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    engines, name = _split(c, request.match_info["name"])
    for _, r in await fan_out(engines, lambda e: e.json("GET", f"/volumes/{name}")):
        if not isinstance(r, BaseException):
            return reply_json(r)
    raise NotFound(f"get {name}: no such volume")


async def volume_remove(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    engines, name = _split(c, request.match_info["name"])
    results = await fan_out(engines, lambda e: e.json("DELETE", f"/volumes/{name}", params=request.query))
    await c.resync()
    failed = [(e, r) for e, r in _failures(results) if not (isinstance(r, EngineError) and r.status == 404)]
    if failed:
        raise _first_error(failed, "volume remove")
    if len(_failures(results)) == len(results):
        raise NotFound(f"get {name}: no such volume")
    return web.Response(status=204)


async def volumes_prune(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    results = await fan_out(list(c.engines.values()), lambda e: e.json("POST", "/volumes/prune"))
    deleted, space = [], 0
    for e, r in results:
        if not isinstance(r, BaseException):
            deleted += [f"{e.node}/{v}" for v in r.get("VolumesDeleted") or []]
            space += r.get("SpaceReclaimed") or 0
    await c.resync()
    return reply_json({"VolumesDeleted": deleted, "SpaceReclaimed": space})


# --- networks --------------------------------------------------------------------------------------


def _networks_named(c: Cluster, ref: str) -> list[tuple[Engine, dict[str, Any]]]:
    """Every network `ref` names: node/name, a name, an id, or a unique id prefix, on any node."""
    engines, ref = _split(c, ref)
    exact = [(e, n) for e in engines for n in e.networks if ref in (n["Name"], n["Id"])]
    if exact:
        return exact
    prefix = [(e, n) for e in engines for n in e.networks if n["Id"].startswith(ref)]
    if len({n["Id"] for _, n in prefix}) > 1:
        raise BadRequest(f"network {ref} is ambiguous ({len(prefix)} matches): use more of the id")
    return prefix


async def _networks_or_404(c: Cluster, ref: str) -> list[tuple[Engine, dict[str, Any]]]:
    found = _networks_named(c, ref)
    if not found:
        await c.resync()
        found = _networks_named(c, ref)
    if not found:
        raise NotFound(f"network {ref} not found")
    return found


async def networks_list(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    results = await fan_out(
        list(c.engines.values()), lambda e: e.json("GET", "/networks", params=request.query)
    )
    out = []
    for e, r in results:
        if not isinstance(r, BaseException):
            out += [{**n, "Name": f"{e.node}/{n['Name']}"} for n in r]
    return reply_json(out)


async def network_create(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    body = await _body(request)
    if not body.get("Name"):
        raise BadRequest("a network needs a name: docker network create NAME")
    engines, name = _split(c, body["Name"])
    driver = body.get("Driver") or "bridge"
    if driver not in LOCAL_NETWORK_DRIVERS:
        raise BadRequest(
            f"network driver {driver!r} is not supported by the shoal manager: local-scope drivers "
            f"({', '.join(sorted(d for d in LOCAL_NETWORK_DRIVERS if d))}) are made on each node"
        )
    await c.resync()
    if have := [e.node for e in engines for n in e.networks if n["Name"] == name]:
        raise Conflict(f"network with name {name} already exists (on {', '.join(have)})")
    results = await fan_out(
        engines, lambda e: e.json("POST", "/networks/create", json={**body, "Name": name})
    )
    if failed := _failures(results):
        made = [(e, r) for e, r in results if not isinstance(r, BaseException)]
        for e, r in made:
            await e.json("DELETE", f"/networks/{r['Id']}")
        raise _first_error(failed, "network create")
    await c.resync()
    warnings = [r.get("Warning") for _, r in results if r.get("Warning")]
    return reply_json({"Id": results[0][1]["Id"], "Warning": "; ".join(warnings)}, 201)


async def network_inspect(request: web.Request) -> web.StreamResponse:
    c = manager_of(request).cluster
    e, n = (await _networks_or_404(c, request.match_info["id"]))[0]
    return await forward(request, e, f"/networks/{n['Id']}")


async def network_remove(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    found = await _networks_or_404(c, request.match_info["id"])
    results = await fan_out(
        [e for e, _ in found],
        lambda e: e.json("DELETE", f"/networks/{next(n for x, n in found if x is e)['Id']}"),
    )
    await c.resync()
    if failed := _failures(results):
        raise _first_error(failed, "network remove")
    return web.Response(status=204)


async def network_connect(request: web.Request) -> web.StreamResponse:
    """connect/disconnect act on the container's node, with that node's network of that name."""
    c = manager_of(request).cluster
    body = await _body(request)
    engine, ct = await c.find(str(body.get("Container") or ""))
    found = [n for e, n in await _networks_or_404(c, request.match_info["id"]) if e is engine]
    if not found:
        raise NotFound(
            f"network {request.match_info['id']} not found on {engine.node}, where the container is"
        )
    body["Container"] = ct["Id"]
    action = request.match_info["action"]
    resp = await forward(
        request, engine, f"/networks/{found[0]['Id']}/{action}", body=json.dumps(body).encode()
    )
    await c.resync(engine.node)
    return resp


async def networks_prune(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    results = await fan_out(list(c.engines.values()), lambda e: e.json("POST", "/networks/prune"))
    deleted = [
        f"{e.node}/{n}"
        for e, r in results
        if not isinstance(r, BaseException)
        for n in r.get("NetworksDeleted") or []
    ]
    await c.resync()
    return reply_json({"NetworksDeleted": deleted})
