"""Image routes: parse, call the manager's images service, render (or relay to a node that holds it)."""

from __future__ import annotations

import json

from aiohttp import web

from shoal.api.docker.common import forward, manager_of, reply_json

MAX_LOAD = 1 << 34  # an image archive for `docker load` (16 GiB)


async def images_list(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).images.listed(request.query))


async def image_from_a_holder(request: web.Request) -> web.StreamResponse:
    """inspect, history and get (`docker save`): any node that holds the image answers."""
    route = await manager_of(request).images.route(request.match_info["name"], request.match_info["what"])
    return await forward(request, route)


async def images_save(request: web.Request) -> web.StreamResponse:
    route = await manager_of(request).images.save_route(request.query.getall("names", []))
    return await forward(request, route)


async def image_load(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).images.load(request.content.iter_chunked(1 << 16)))


async def image_pull(request: web.Request) -> web.StreamResponse:
    """POST /images/create: a pull (fromImage) onto every healthy node, its progress streamed line by line
    as the engines write it; an import (fromSrc) streamed to the one node the scheduler picks."""
    images = manager_of(request).images
    if not request.query.get("fromImage"):
        route = images.import_route(request.query)
        resp = await forward(request, route)
        await images.imported(route.node)
        return resp
    lines = await images.pull(request.query, request.headers.get("X-Registry-Auth", ""))
    try:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        async for msg in lines:
            await resp.write(json.dumps(msg).encode() + b"\r\n")
        await resp.write_eof()
        return resp
    finally:
        await lines.aclose()


async def image_push(request: web.Request) -> web.StreamResponse:
    """POST /images/{name}/push: from one node that holds the image, its output streamed back."""
    route = await manager_of(request).images.push_route(
        request.match_info["name"], request.query.get("tag", "")
    )
    return await forward(request, route)


async def image_tag(request: web.Request) -> web.Response:
    await manager_of(request).images.tag(request.match_info["name"], request.query)
    return web.Response(status=201)


async def image_remove(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).images.remove(request.match_info["name"], request.query))
