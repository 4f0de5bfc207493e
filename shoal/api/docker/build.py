"""Image-making routes: `docker build` (POST /build) on a node the scheduler chooses, and `docker commit`
(POST /commit) on the container's node. Parse, call the manager's service, stream the engine's answer."""

from __future__ import annotations

from aiohttp import web

from shoal.errors import NotFound


async def build(request: web.Request) -> web.StreamResponse:
    raise NotFound("POST /build is not served by the shoal manager yet; build on a node (-H tcp://NODE)")


async def commit(request: web.Request) -> web.StreamResponse:
    raise NotFound("POST /commit is not served by the shoal manager yet; commit on the container's node")
