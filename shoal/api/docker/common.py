"""What every handler of the manager's Docker API shares: the Manager, request bodies read with a cap,
replies, and relaying a request along a Route to the engine that holds its object.

A relayed call has the deadlines of every other call to an engine (shoal.cluster.engine): CONNECT to
connect, CALL to start its answer and, unless that answer is a stream, CALL of silence before it is given
up as unanswered (`deadlines`). A hung engine is then an error naming its node, not a client left waiting
on it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aiohttp
from aiohttp import web

from shoal import jsonbody
from shoal.cluster.engine import CALL, CONNECT, Engine, path, unanswered
from shoal.errors import BadRequest, TooLarge, Unavailable
from shoal.logs import kv
from shoal.manager.service import Manager, Route

log = logging.getLogger("shoal.manager")
API_VERSION, MIN_API_VERSION = "1.41", "1.24"
MAX_JSON = 1 << 20  # a JSON request body (create, volume, network...): Docker's own are a few KB
# Relayed answers that last as long as they need to: a log followed, stats, a wait, an attach, a tar
# (export, cp, save, import), a push's progress, an exec's output, a build's. The engine has CALL to
# start one (it sends its headers at once), but no read deadline after that: it would cut a quiet
# `logs -f` or `wait`. Keyed by the engine path's first and last segments.
STREAMED = frozenset(
    {
        ("containers", "logs"), ("containers", "stats"), ("containers", "attach"), ("containers", "ws"),
        ("containers", "wait"), ("containers", "export"), ("containers", "archive"), ("exec", "start"),
        ("images", "get"), ("images", "push"), ("images", "create"), ("build", "build"),
    }
)  # fmt: skip
# streams whose first byte may wait on work of unknown length: `docker save` writes every layer out
# before its tar starts, an import or a remote build fetches its source first, a push asks the registry
# first. Like a stream whose request body is an upload, only their connect has a deadline.
SLOW_TO_START = frozenset({("images", "get"), ("images", "create"), ("build", "build"), ("images", "push")})
# request bodies that are streams (a `docker cp` archive, an image import, a build context): relayed as
# they arrive, never read whole and never capped; every other body relayed is JSON, capped at MAX_JSON
UPLOADS = frozenset({("containers", "archive"), ("images", "create"), ("build", "build")})
# answers the engine works out before it says anything (a container's diff, its sizes): the minute
# `docker system df` has for the same sums
SIZED = 60.0
STOP_DEFAULT = 10  # dockerd's stop timeout for a container created without --stop-timeout
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "keep-alive"}
MANAGER: web.AppKey[Manager] = web.AppKey("manager", Manager)


def manager_of(request: web.Request) -> Manager:
    return request.app[MANAGER]


def reply_json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=jsonbody.dumps(data), content_type="application/json")


def api_path(request: web.Request) -> str:
    """The path without its /vX.Y prefix."""
    m = _VERSIONED.match(request.path)
    return m.group(2) if m else request.path


def _limit(limit: int) -> str:
    return (
        f"{limit} bytes ({limit >> 20} MiB)"
        if limit >= 1 << 20 and limit % (1 << 20) == 0
        else f"{limit} bytes"
    )


async def read_capped(request: web.Request, limit: int = MAX_JSON) -> bytes:
    """The whole body, refused (a 413) as soon as it is known to be over `limit`: by its Content-Length
    before any of it is read, or, chunked, once that much has arrived."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body is {request.content_length} bytes; at most {_limit(limit)} here")
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"request body is over {limit} bytes; at most {_limit(limit)} here")
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


def no_answer(engine: Engine, what: str, seconds: float, connecting: bool = False) -> Unavailable:
    """A hung engine, in the words a user reads: which node, which call, how long it was given."""
    kv(log, "engine unanswered", logging.WARNING, node=engine.node, call=what, seconds=seconds,
       connecting=connecting or None)  # fmt: skip
    how = " (it took no connection)" if connecting else ""
    return Unavailable(
        f"the engine on {engine.node} ({engine.url}) did not answer {what} within {seconds:g} s{how}"
    )


def _unanswered(engine: Engine, what: str, e: BaseException, seconds: float | None) -> Unavailable:
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return no_answer(engine, what, CONNECT, connecting=True)
    if isinstance(e, TimeoutError) and seconds is not None:
        return no_answer(engine, what, seconds)
    return Unavailable(f"the engine on {engine.node} ({engine.url}) did not answer {what}: {unanswered(e)}")


def _segments(route: Route) -> tuple[str, str]:
    """("containers", "logs") for /containers/ID/logs: what kind of call a relayed path is."""
    parts = route.path.split("?", 1)[0].strip("/").split("/")
    return parts[0], parts[-1]


def _flag(request: web.Request, key: str) -> bool:
    """A boolean query flag as dockerd reads one (httputils.BoolValue)."""
    return request.query.get(key, "").strip().lower() not in ("", "0", "no", "false", "none")


async def _stop_wait(request: web.Request, route: Route) -> int | None:
    """How long the engine may wait for the container to stop before it answers a stop or restart: `t`,
    else the container's own --stop-timeout (dockerd's rule); None for t < 0, which waits as long as it
    takes."""
    raw = request.query.get("t", "")
    if raw:
        try:
            wait = int(raw)
        except ValueError:
            return 0  # the engine refuses it at once
    else:
        doc = await route.engine.call("GET", path("/containers", route.object_id) + "/json")
        wait = ((doc or {}).get("Config") or {}).get("StopTimeout")
        wait = STOP_DEFAULT if wait is None else int(wait)
    return None if wait < 0 else wait


async def deadlines(request: web.Request, route: Route, uploading: bool) -> tuple[float | None, float | None]:
    """(answer, silence) for a relayed call: the seconds the engine has to start its answer, and the seconds
    of silence after which the call is unanswered; None for none. A stream has only the first, and one that
    starts after an upload or work of unknown length (SLOW_TO_START) neither: its connect alone has one."""
    kind = _segments(route)
    if request.method == "HEAD":  # a stat (cp's HEAD archive): headers only
        return CALL, CALL
    if kind in STREAMED:
        return (None, None) if uploading or kind in SLOW_TO_START else (CALL, None)
    silence: float | None = CALL
    if kind == ("containers", "changes") or (kind == ("containers", "json") and _flag(request, "size")):
        silence = SIZED
    elif kind in (("containers", "stop"), ("containers", "restart")):
        wait = await _stop_wait(request, route)
        silence = None if wait is None else CALL + wait
    return silence, silence


async def forward(request: web.Request, route: Route, body: Any = None) -> web.StreamResponse:
    """Sends the request on to the route's engine and relays its answer back. A stream (logs -f, stats,
    wait, cp...) flows as it comes, and writing waits for the client, so a reader that stops reading slows
    the engine's stream instead of growing the manager's memory; any other answer is read whole within its
    deadline (`deadlines`), so a hung engine is a Docker error naming the node. The request's body streams
    on only for the routes whose bodies are streams (UPLOADS); any other is JSON, capped at MAX_JSON."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    data: Any = body
    if body is None and request.can_read_body:
        data = request.content if _segments(route) in UPLOADS else await read_capped(request)
    answer, silence = await deadlines(
        request, route, uploading=data is not None and not isinstance(data, bytes)
    )
    engine, what = route.engine, f"{request.method} {route.path.split('?', 1)[0]}"
    try:
        async with asyncio.timeout(answer):  # its headers; a stream's body then takes as long as it takes
            up = await engine.session.request(
                request.method,
                engine.url_for(route.path),
                params=request.query,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT, sock_read=silence),
                ssl=engine.ssl,
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise _unanswered(engine, what, e, answer) from e
    async with up:
        kept = {
            k: v
            for k, v in up.headers.items()
            # the client session has already decompressed the body
            if k.lower() not in _HOP and k.lower() not in ("date", "server", "content-encoding")
        }
        if silence is not None:  # an answer given at once: whole, or an error naming the node
            try:
                whole = await up.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise _unanswered(engine, what, e, silence) from e
            if route.rewrite is not None and up.status < 300:
                return reply_json(route.rewrite(json.loads(whole)), up.status)
            return web.Response(status=up.status, body=whole, headers=kept)
        resp = web.StreamResponse(status=up.status, headers=kept)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp
