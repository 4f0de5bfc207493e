"""Image routes: parse, call the manager's images service, render (or relay to a node that holds it)."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker.common import forward, manager_of, reply_json
from shoal.errors import NotFound

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


async def image_pull(request: web.Request) -> web.Response:
    manager_of(request).images.pull(request.query)
    return web.Response(status=200)


async def image_push(request: web.Request) -> web.StreamResponse:
    raise NotFound("docker push through the shoal manager is not served yet; push from a node that holds it")


async def image_tag(request: web.Request) -> web.Response:
    await manager_of(request).images.tag(request.match_info["name"], request.query)
    return web.Response(status=201)


async def image_remove(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).images.remove(request.match_info["name"], request.query))
