"""Routes for prune (containers, images, the build cache), `docker rm -l` and the websocket attach: parse,
call the manager's container operations (shoal.manager.container_ops), render or relay."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker import containers
from shoal.api.docker.common import forward, manager_of, reply_json
from shoal.api.docker.hijack import hijack
from shoal.manager.container_ops import BUILD_CACHE, CONTAINERS, IMAGES, ContainerOps, PruneKind


def _flag(request: web.Request, key: str) -> bool:
    """A boolean query flag as dockerd reads one (httputils.BoolValue): anything but empty, 0, no, false
    or none is true."""
    return request.query.get(key, "").strip().lower() not in ("", "0", "no", "false", "none")


async def _prune(request: web.Request, kind: PruneKind) -> web.Response:
    return reply_json(await ContainerOps(manager_of(request)).prune(kind, request.query.items()))


async def containers_prune(request: web.Request) -> web.Response:
    return await _prune(request, CONTAINERS)


async def images_prune(request: web.Request) -> web.Response:
    return await _prune(request, IMAGES)


async def build_prune(request: web.Request) -> web.Response:
    return await _prune(request, BUILD_CACHE)


async def container_delete(request: web.Request) -> web.StreamResponse:
    """DELETE /containers/A/B[/C]: with `link`, the link B of parent A (`docker rm -l /A/B`; A may be
    node/name); without, the container node A's B (classic Swarm's node/name), as any remove."""
    if _flag(request, "link"):
        await ContainerOps(manager_of(request)).remove_link(request.match_info["id"], request.query)
        return web.Response(status=204)
    return await containers.container_action(request)


async def attach_ws(request: web.Request) -> web.StreamResponse:
    """GET /containers/{id}/attach/ws (docker-py's `attach_socket(ws=True)`): the websocket relayed to the
    container's node; a request without the upgrade gets the engine's own answer to it."""
    route = await ContainerOps(manager_of(request)).attach_ws_route(request.match_info["id"])
    if request.headers.get("Upgrade"):
        return await hijack(request, route)
    return await forward(request, route)
