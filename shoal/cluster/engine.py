"""One node's engine as the manager reaches it: where it is, what it last listed, and every call to it with
a deadline, so one hung dockerd can never stall what the manager does with the others.

Paths are built from percent-encoded segments (`path("/volumes", name)`) and sent as they are, so a name
such as `../containers/x` stays one path segment and never reaches another endpoint of the engine.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from shoal.cluster.status import RunState
from shoal.errors import EngineError, Unavailable

API = "/v1.41"
CONNECT = 2.0  # seconds to open a connection to an engine
CALL = 15.0  # a call that answers at once (inspect, create, start ...); streams have none
LIST = 5.0  # a list the cache refreshes: a hung engine is marked unreachable after this


def path(*parts: str) -> str:
    """`path("/volumes", "a/b")` -> "/volumes/a%2Fb": the first part is ours, the rest user input."""
    head, *rest = parts
    return head + "".join("/" + quote(p, safe="") for p in rest)


def unanswered(e: BaseException) -> str:
    """Why a call got no answer, in words (aiohttp's own text for a refused connection names its SSL
    context object, which tells a user nothing)."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect: {e.os_error.strerror or e.os_error}"
    return str(e) or type(e).__name__


@dataclass
class Engine:
    node: str
    url: str  # tcp://host:port
    session: aiohttp.ClientSession
    tls: ssl.SSLContext | None = None  # mutual TLS to the engine (the manager's client certificate)
    info: dict[str, Any] = field(default_factory=dict)
    containers: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    networks: list[dict[str, Any]] = field(default_factory=list)
    reachable: bool = False
    states: dict[str, RunState] = field(default_factory=dict)  # container id -> its State, as STATUS reads it
    dirty: set[str] = field(default_factory=set)  # kinds of object waiting to be listed again
    stale: set[str] = field(default_factory=set)  # container ids waiting to be inspected again
    refreshing: asyncio.Task[None] | None = None
    version: int = 0  # bumped whenever `containers` changes: what caches of its containers key on
    failures: int = 0  # periodic lists in a row that got no answer (one is not yet "unreachable")
    following: bool = False  # its event stream is up: changes arrive as events, resyncs can be rarer
    next_sync: float = 0.0  # monotonic time of its next periodic look (jittered per engine)
    listed_at: float = 0.0  # monotonic time of its last full list (every kind) that answered
    syncing: bool = False  # a periodic resync of it is under way
    # told each call's node and seconds (`probe.call`: the manager's /metrics); set by the cluster cache
    probe: Any = None
    _counts: tuple[int, int, int, int] = (-1, 0, 0, 0)  # version, containers, running, paused

    def counts(self) -> tuple[int, int, int]:
        """Its containers, running and paused ones: counted once per change of its list, not per /info."""
        if self._counts[0] != self.version:
            states = [c.get("State") for c in self.containers]
            self._counts = (self.version, len(states), states.count("running"), states.count("paused"))
        return self._counts[1:]

    @property
    def base(self) -> str:
        return self.url.replace("tcp://", "https://" if self.tls else "http://", 1)

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """What aiohttp's `ssl=` takes for this engine: the client context, or the default."""
        return self.tls if self.tls is not None else True

    @property
    def hostport(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("tcp://").rpartition(":")
        return host, int(port)

    def url_for(self, api_path: str) -> URL:
        """The engine's URL for an already-encoded API path (sent as is: no re-normalising of `..`)."""
        return URL(f"{self.base}{API}{api_path}", encoded=True)

    async def call(self, method: str, api_path: str, *, timeout: float = CALL, **kw: Any) -> Any:
        """One call that answers at once; the engine's error is an EngineError, no answer an Unavailable."""
        t0 = time.monotonic()
        try:
            async with self.session.request(
                method,
                self.url_for(api_path),
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT),
                allow_redirects=False,
                ssl=self.ssl,
                **kw,
            ) as r:
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise Unavailable(
                f"the engine on {self.node} ({self.url}) did not answer {method} {api_path.split('?')[0]}: "
                f"{unanswered(e)}"
            ) from e
        finally:
            if self.probe is not None:
                self.probe.call(self.node, time.monotonic() - t0)
        if r.status >= 300:  # a redirect is no answer to an API call: never followed, never taken as done
            raise EngineError.from_reply(r.status if r.status >= 400 else 502, body, self.node)
        return json.loads(body) if body else None
