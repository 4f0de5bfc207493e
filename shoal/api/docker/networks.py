"""Network routes: parse, call the manager's networks service, render."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker.common import manager_of, read_json, reply_json


async def networks_list(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).networks.listed(request.query))


async def network_create(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).networks.create(await read_json(request)), 201)


async def network_inspect(request: web.Request) -> web.Response:
    networks = manager_of(request).networks
    return reply_json(await networks.inspect(request.match_info["id"], request.query))


async def network_remove(request: web.Request) -> web.Response:
    await manager_of(request).networks.remove(request.match_info["id"])
    return web.Response(status=204)


async def network_connect(request: web.Request) -> web.Response:
    body = await read_json(request)
    await manager_of(request).networks.connect(request.match_info["id"], request.match_info["action"], body)
    return web.Response(status=200)


async def networks_prune(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).networks.prune(request.query))
