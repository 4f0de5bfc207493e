"""The dashboard (the seed's DockerUI): one page served by the manager at /dashboard, fed by
/shoal/v1/overview (shoal.manager.overview): a summary of every node and one page of node cards
(`?page=&per_page=&q=`). The page polls its current page, so it is live."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from shoal.api.docker.common import manager_of, reply_json
from shoal.manager.overview import page_query


async def overview_handler(request: web.Request) -> web.Response:
    """`?page=2&per_page=50&q=web`: a bad value is a 400 naming the parameter (before any work)."""
    return reply_json(await manager_of(request).system.overview(page_query(request.query)))


async def page(request: web.Request) -> web.Response:
    html = resources.files("shoal.api.dashboard").joinpath("index.html").read_text()
    return web.Response(text=html, content_type="text/html")
