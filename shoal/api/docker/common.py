"""What every handler of the manager's Docker API shares: the Manager, replies, and forwarding a request
to the engine that holds the object."""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from shoal.cluster.state import Cluster, Engine
from shoal.data.model import DEFAULT_PROFILE, DEFAULT_PROFILES, Profile
from shoal.scheduler.model import ContainerSpec, Placement
from shoal.scheduler.place import place
from shoal.scheduler.strategy import by_name

API_VERSION, MIN_API_VERSION = "1.41", "1.24"
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "keep-alive"}


class Manager:
    def __init__(
        self, cluster: Cluster, strategy: str = "spread", fact_ttl: float = 30.0, name: str = "shoal"
    ) -> None:
        self.cluster = cluster
        self.strategy_name = strategy
        self.strategy = by_name(strategy)
        self.fact_ttl = fact_ttl
        self.name = name
        self.decisions: deque[dict[str, Any]] = deque(maxlen=200)
        self.execs: dict[str, str] = {}  # exec id -> node
        self._create_lock = asyncio.Lock()
        self.profiles: dict[str, Profile] = dict(DEFAULT_PROFILES)
        self.default_profile = DEFAULT_PROFILE

    def place(self, spec: ContainerSpec) -> Placement:
        """The scheduler's decision for `spec` over the cluster as the cache sees it now."""
        c = self.cluster
        return place(
            spec,
            c.index,
            c.now(),
            strategy=self.strategy,
            strategy_name=self.strategy_name,
            fact_ttl=self.fact_ttl,
        )


CLUSTER: web.AppKey[Manager] = web.AppKey("manager", Manager)


def manager_of(request: web.Request) -> Manager:
    return request.app[CLUSTER]


def reply_json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def api_path(request: web.Request) -> str:
    """The path without its /vX.Y prefix."""
    m = _VERSIONED.match(request.path)
    return m.group(2) if m else request.path


async def forward(
    request: web.Request,
    engine: Engine,
    path: str | None = None,
    body: bytes | None = None,
    rewrite: Callable[[Any], Any] | None = None,
) -> web.StreamResponse:
    """Sends the request on to `engine` and streams its answer back (logs -f, stats, wait, events...)."""
    path = path or api_path(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    data = await request.read() if body is None else body
    async with engine.session.request(
        request.method,
        f"{engine.base}/v{API_VERSION}{path}",
        params=request.query,
        data=data or None,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=None),
    ) as up:
        if rewrite is not None and up.status < 300:
            return reply_json(rewrite(json.loads(await up.read())), up.status)
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


async def fan_out(
    engines: list[Engine], call: Callable[[Engine], Any]
) -> list[tuple[Engine, Any | BaseException]]:
    """`call` on every engine at once; each engine's answer or the error it raised, in order."""
    results = await asyncio.gather(*(call(e) for e in engines), return_exceptions=True)
    return list(zip(engines, results, strict=True))
