"""Image-making routes: `docker build` (POST /build) on a node the scheduler chooses, and `docker commit`
(POST /commit) on the container's node. Parse, call the manager's build service, stream the engine's
answer: the context streams to the engine (its first bytes looked at for the Dockerfile on the way) and
the build's output back as it happens."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import StreamReader, web
from multidict import MultiDict

from shoal.api.docker.common import forward, manager_of, read_capped, reply_json
from shoal.errors import BadRequest
from shoal.manager.build import PEEK, Build, dockerfile_in

UPLOAD_CHUNK = 1 << 18  # the context goes on in writes of this size, not one per TLS record that came in


async def _head(content: StreamReader, dockerfile: str) -> bytes:
    """The context's first chunks, up to the end of its Dockerfile or about PEEK bytes, whichever first."""
    head = bytearray()
    while len(head) < PEEK and (chunk := await content.readany()):
        head += chunk
        if dockerfile_in(bytes(head), dockerfile) is not None:
            break
    return bytes(head)


async def _then(head: bytes, content: StreamReader) -> AsyncIterator[bytes]:
    """What was looked at, then the rest of the context as it arrives (never the whole of it in memory)."""
    if head:
        yield head
    async for chunk in content.iter_chunked(UPLOAD_CHUNK):
        yield chunk


async def build(request: web.Request) -> web.StreamResponse:
    svc = Build(manager_of(request))
    q = request.query
    has_body = request.can_read_body  # asked before any of it is read: afterwards it may be at its end
    peek = has_body and not q.get("remote")  # a remote context is the engine's to fetch
    head = await _head(request.content, q.get("dockerfile") or "Dockerfile") if peek else b""
    route, plan = await svc.place(q.items(), head)
    if not q.get("remote") and not head:  # dockerd's answer would be a 500 "Cannot locate ... Dockerfile"
        raise BadRequest(
            "docker build needs a build context and got none (an empty request body): send the context as "
            "a tar stream (`docker build DIR`, or `docker build - < context.tar`), or name one with remote="
        )
    # the same request (its body streaming on) with the query the engine should get
    onward = request.clone(rel_url=request.rel_url.with_query(MultiDict(plan.query)))
    body = _then(head, request.content) if has_body else None
    try:
        resp = await forward(onward, route, body=body)  # an async iterator: aiohttp streams it on
    finally:
        svc.building(route.node)  # also when the client went away mid-build
    await svc.built(route.node)
    return resp


async def commit(request: web.Request) -> web.Response:
    created = await Build(manager_of(request)).commit(request.query.items(), await read_capped(request))
    return reply_json(created, 201)
