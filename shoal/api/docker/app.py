"""The Docker Engine API for the whole cluster (`shoal manager`): the routes, version negotiation and
the one place errors become Docker's reply. Handlers parse and render; the manager's service layer
(shoal.manager) owns each operation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from shoal.api.docker import (
    admin,
    build,
    container_ops,
    containers,
    dashboard,
    images,
    moves,
    networks,
    system,
    volumes,
)
from shoal.api.docker.common import API_VERSION, MANAGER, MIN_API_VERSION, api_path, reply_json
from shoal.api.docker.errors import docker_reply
from shoal.errors import ShoalError, Unavailable
from shoal.manager.service import Manager


def _v(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split("."))


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except ShoalError as e:
        return docker_reply(e)
    except aiohttp.ClientError as e:
        return docker_reply(Unavailable(f"engine unreachable: {e}"))
    except web.HTTPException as e:  # the router's own 404/405/413: in Docker's form too
        if e.status < 400:
            raise
        what = f"{request.method} {api_path(request)!r}"
        return reply_json({"message": f"{e.reason}: {what} is not served by the shoal manager"}, e.status)


def make_app(manager: Manager) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=images.MAX_LOAD)
    app[MANAGER] = manager
    r = app.router

    def add(method: str, path: str, handler) -> None:
        r.add_route(method, path, handler)
        r.add_route(method, r"/v{version:[0-9]+\.[0-9]+}" + path, _versioned(handler))

    add("GET", "/_ping", system.ping)
    add("HEAD", "/_ping", system.ping)
    add("GET", "/version", system.version)
    add("GET", "/info", system.info)
    add("GET", "/events", system.events)
    add("GET", "/system/df", system.system_df)
    add("GET", "/containers/json", containers.containers_list)
    add("POST", "/containers/create", containers.containers_create)
    add("POST", "/containers/prune", container_ops.containers_prune)
    # a container named node/name (classic Swarm's form, as `docker ps` shows it) takes two path segments
    # (the docker CLI sends the '/' as is): those routes first, each its own pattern; the websocket attach
    # before them, or `x/attach` would be read as node x's container `attach`
    add("GET", "/containers/{id}/attach/ws", container_ops.attach_ws)
    add("GET", "/containers/{id:[^/]+/[^/]+}/attach/ws", container_ops.attach_ws)
    for method in ("GET", "POST", "PUT", "HEAD"):
        add(method, "/containers/{id}/{action}", containers.container_action)
        add(method, "/containers/{id:[^/]+/[^/]+}/{action}", containers.container_action)
    add("DELETE", "/containers/{id}", containers.container_action)
    # `docker rm -l /parent/alias` sends DELETE /containers/parent/alias?link=1 (node/parent/alias too;
    # docker-py keeps the leading '/': /containers//parent/alias, which dockerd's router cleans)
    add("DELETE", "/containers/{id:/*[^/]+/[^/]+}", container_ops.container_delete)
    add("DELETE", "/containers/{id:/*[^/]+/[^/]+/[^/]+}", container_ops.container_delete)
    add("GET", "/exec/{id}/{action}", containers.exec_action)
    add("POST", "/exec/{id}/{action}", containers.exec_action)
    add("GET", "/images/json", images.images_list)
    add("POST", "/images/prune", container_ops.images_prune)
    add("POST", "/images/load", images.image_load)
    add("POST", "/images/create", images.image_pull)
    add("GET", "/images/get", images.images_save)
    add("GET", "/images/{name:.+}/{what:json|history|get}", images.image_from_a_holder)
    add("POST", "/images/{name:.+}/tag", images.image_tag)
    add("POST", "/images/{name:.+}/push", images.image_push)
    add("POST", "/build", build.build)
    add("POST", "/build/prune", container_ops.build_prune)
    add("POST", "/commit", build.commit)
    add("DELETE", "/images/{name:.+}", images.image_remove)
    add("GET", "/volumes", volumes.volumes_list)
    add("POST", "/volumes/create", volumes.volume_create)
    add("POST", "/volumes/prune", volumes.volumes_prune)
    add("GET", "/volumes/{name:.+}", volumes.volume_inspect)
    add("DELETE", "/volumes/{name:.+}", volumes.volume_remove)
    add("GET", "/networks", networks.networks_list)
    add("POST", "/networks/create", networks.network_create)
    add("POST", "/networks/prune", networks.networks_prune)
    add("POST", "/networks/{id:.+}/{action:connect|disconnect}", networks.network_connect)
    add("GET", "/networks/{id:.+}", networks.network_inspect)
    add("DELETE", "/networks/{id:.+}", networks.network_remove)
    for p in system.SWARM_PATHS:
        add("*", p, system.swarm_only)
        add("*", p + "/{tail:.*}", system.swarm_only)
    r.add_route("GET", "/metrics", system.metrics)
    r.add_route("GET", "/dashboard", dashboard.page)
    r.add_route("GET", "/shoal/v1/overview", dashboard.overview_handler)
    r.add_route("POST", "/shoal/v1/join-tokens", admin.join_token_create)
    r.add_route("GET", "/shoal/v1/join-tokens", admin.join_token_list)
    r.add_route("DELETE", "/shoal/v1/join-tokens/{id}", admin.join_token_revoke)
    r.add_route("GET", "/shoal/v1/decisions", containers.decisions_list)
    r.add_route("GET", "/shoal/v1/decisions/{ref:.+}", containers.decision)
    r.add_route("POST", "/shoal/v1/volumes/{ref}/move", moves.volume_move)
    r.add_route("GET", "/shoal/v1/moves", moves.moves_list)
    r.add_route("POST", "/shoal/v1/nodes/{node}/drain", moves.node_drain)
    r.add_route("POST", "/shoal/v1/nodes/{node}/undrain", moves.node_undrain)
    r.add_route("GET", "/shoal/v1/nodes/state", moves.nodes_state)
    r.add_route("*", "/{tail:.*}", system.not_found)
    return app


def _versioned(handler):
    async def h(request: web.Request):
        v = request.match_info["version"]
        if _v(v) > _v(API_VERSION):
            return reply_json(
                {
                    "message": f"client version {v} is too new. Maximum supported API version is "
                    f"{API_VERSION}"
                },
                400,
            )
        if _v(v) < _v(MIN_API_VERSION):
            return reply_json(
                {
                    "message": f"client version {v} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version"
                },
                400,
            )
        return await handler(request)

    return h
