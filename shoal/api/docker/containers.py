"""Container routes: parse the request, call the manager's containers service, render its answer (or relay
the request along the route it names)."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker.common import forward, manager_of, read_capped, read_json, reply_json
from shoal.api.docker.hijack import hijack
from shoal.errors import BadRequest
from shoal.manager.containers import PsQuery
from shoal.manager.objects import filters_object

_TRUE = ("1", "true", "True")


def _limit(query) -> int | None:
    raw = query.get("limit", "")
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise BadRequest(f"invalid limit {raw!r}: a number of containers") from None
    return n if n > 0 else None


def _filters(query) -> dict[str, tuple[str, ...]]:
    """`filters` as Docker's clients send it: {"key": {"value": true}} (or the old {"key": ["value"]}),
    plus the old `before`/`since` parameters."""
    parsed = filters_object(query.get("filters", ""))
    out: dict[str, tuple[str, ...]] = {}
    for key, values in parsed.items():
        if isinstance(values, dict):
            out[key] = tuple(str(v) for v, on in values.items() if on)
        elif isinstance(values, list):
            out[key] = tuple(str(v) for v in values)
        else:
            raise BadRequest(f"invalid filter {key!r}: its values must be a JSON object or list")
    for legacy in ("before", "since"):
        if query.get(legacy):
            out[legacy] = (*out.get(legacy, ()), query[legacy])
    return out


async def containers_list(request: web.Request) -> web.Response:
    """`docker ps`: sorted and cut across the nodes by the containers service."""
    q = request.query
    ps = PsQuery(all=q.get("all", "0") in _TRUE, limit=_limit(q), size=q.get("size", "0") in _TRUE,
                 filters=_filters(q))  # fmt: skip
    return reply_json(await manager_of(request).containers.listed(ps))


async def containers_create(request: web.Request) -> web.Response:
    body = await read_json(request, "the container config")
    created = await manager_of(request).containers.create(request.query.get("name", ""), body)
    return reply_json(created, 201)


async def container_action(request: web.Request) -> web.StreamResponse:
    svc = manager_of(request).containers
    ref, action = request.match_info["id"], request.match_info.get("action", "")
    if request.method == "DELETE" and not action:
        await svc.remove(ref, request.query)
        return web.Response(status=204)
    if action == "exec" and request.method == "POST":
        return reply_json(await svc.create_exec(ref, await read_capped(request)), 201)
    route = await svc.route(ref, action, request.query)
    if action == "attach" and request.headers.get("Upgrade"):
        return await hijack(request, route)
    resp = await forward(request, route)
    svc.acted(route, action, resp.status)
    return resp


async def exec_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    route = manager_of(request).containers.exec_route(request.match_info["id"], action)
    if action == "start" and request.headers.get("Upgrade"):
        return await hijack(request, route)
    return await forward(request, route)


async def decisions_list(request: web.Request) -> web.Response:
    """The recent placement decisions, newest first, refusals included."""
    raw = request.query.get("limit", "")
    return reply_json(manager_of(request).decisions.recent(int(raw) if raw.isdigit() else None))


async def decision(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).decisions.of(request.match_info["ref"]))
