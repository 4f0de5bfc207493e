"""Volume routes: parse, call the manager's volumes service, render."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker.common import manager_of, read_json, reply_json


async def volumes_list(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).volumes.listed(request.query))


async def volume_create(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).volumes.create(await read_json(request)), 201)


async def volume_inspect(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).volumes.inspect(request.match_info["name"]))


async def volume_remove(request: web.Request) -> web.Response:
    await manager_of(request).volumes.remove(request.match_info["name"], request.query)
    return web.Response(status=204)


async def volumes_prune(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).volumes.prune(request.query))
