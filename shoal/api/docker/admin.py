"""What only the operator asks the manager (over the Docker API's mutual TLS, with the admin certificate):
join tokens for new nodes: make, list, revoke."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker.common import manager_of, reply_json
from shoal.errors import BadRequest
from shoal.manager.join import DEFAULT_TTL


def _joins(request: web.Request):
    joins = manager_of(request).joins
    if joins is None:
        raise BadRequest("this manager serves no join listener: start it with --join-listen to join nodes")
    return joins


async def join_token_list(request: web.Request) -> web.Response:
    return reply_json(await _joins(request).list_tokens())


async def join_token_revoke(request: web.Request) -> web.Response:
    await _joins(request).revoke_token(request.match_info["id"])
    return web.Response(status=204)


async def join_token_create(request: web.Request) -> web.Response:
    joins = _joins(request)
    raw = request.query.get("ttl", "")
    try:
        ttl = float(raw) if raw else DEFAULT_TTL
    except ValueError:
        raise BadRequest(f"ttl {raw!r} is not a number of seconds") from None
    return reply_json(await joins.create_token(ttl), 201)
