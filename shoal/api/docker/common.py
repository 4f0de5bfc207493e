"""What every handler of the manager's Docker API shares: the Manager, request bodies read with a cap,
replies, and relaying a request along a Route to the engine that holds its object."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from aiohttp import web

from shoal.errors import BadRequest, TooLarge
from shoal.manager.service import Manager, Route

API_VERSION, MIN_API_VERSION = "1.41", "1.24"
MAX_JSON = 1 << 20  # a JSON request body (create, volume, network...): Docker's own are a few KB
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "keep-alive"}
MANAGER: web.AppKey[Manager] = web.AppKey("manager", Manager)


def manager_of(request: web.Request) -> Manager:
    return request.app[MANAGER]


def reply_json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def api_path(request: web.Request) -> str:
    """The path without its /vX.Y prefix."""
    m = _VERSIONED.match(request.path)
    return m.group(2) if m else request.path


async def read_capped(request: web.Request, limit: int = MAX_JSON) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body is {request.content_length} bytes; at most {limit} bytes here")
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"request body is over {limit} bytes; at most {limit} bytes here")
    return bytes(data)


def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON value")


async def read_json(request: web.Request, what: str = "the request body") -> dict[str, Any]:
    """A JSON object body (empty means {}); anything else is a 400 that says what was wrong."""
    raw = await read_capped(request)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except ValueError as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


async def forward(request: web.Request, route: Route, body: bytes | None = None) -> web.StreamResponse:
    """Sends the request on to the route's engine and streams its answer back (logs -f, stats, wait, cp...).
    The body streams through as well; writing waits for the client, so a reader that stops reading slows
    the engine's stream instead of growing the manager's memory."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    data: Any = body if body is not None else (request.content if request.can_read_body else None)
    async with route.engine.session.request(
        request.method,
        route.engine.url_for(route.path),
        params=request.query,
        data=data,
        headers=headers,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        ssl=route.engine.ssl,
    ) as up:
        if route.rewrite is not None and up.status < 300:
            return reply_json(route.rewrite(json.loads(await up.read())), up.status)
        resp = web.StreamResponse(status=up.status)
        for k, v in up.headers.items():
            # the client session has already decompressed the body
            if k.lower() not in _HOP and k.lower() not in ("date", "server", "content-encoding"):
                resp.headers[k] = v
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp
