"""The dashboard (the seed's DockerUI): one page served by the manager at /dashboard, fed by
/shoal/v1/overview (shoal.manager.overview). The page polls, so it is live."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from shoal.api.docker.common import manager_of, reply_json


async def overview_handler(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).system.overview())


async def page(request: web.Request) -> web.Response:
    html = resources.files("shoal.api.dashboard").joinpath("index.html").read_text()
    return web.Response(text=html, content_type="text/html")
