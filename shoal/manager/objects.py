"""What volumes and networks share: local-scope objects that live on one engine each.

As classic Swarm did, lists name them `node/name`, and a `node/` prefix on create, inspect or remove picks
that node. Without a prefix, create makes the object on every node (so a container can land on any node and
still find its network or volume; compose's `<project>_default` network relies on it), inspect answers from
the first node that has it, and remove takes it off every node that has it. A create that fails on one node
is undone on the others: nothing is left half-made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shoal.cluster.engine import Engine
from shoal.cluster.state import Cluster
from shoal.errors import BadRequest, EngineError, NotFound, ShoalError

Results = list[tuple[Engine, Any]]


def split(c: Cluster, ref: str) -> tuple[list[Engine], str]:
    """`node1/name` -> ([node1's engine], name); `name` -> (every engine, name). A name is one path
    segment on an engine: anything else ('/', '..', NUL) names no object and is refused here."""
    node, sep, name = ref.partition("/")
    if sep and node in c.engines:
        check_name(name)
        return [c.engines[node]], name
    if sep:
        raise NotFound(f"no node named {node!r} (`docker info` lists the nodes); {ref!r} names nothing")
    check_name(ref)
    return list(c.engines.values()), ref


def check_name(name: str) -> None:
    if name in (".", "..") or "/" in name or "\0" in name:
        raise BadRequest(f"invalid name {name!r}: a name is one path segment, without '/' or NUL")


async def fan_out(engines: list[Engine], call: Callable[[Engine], Awaitable[Any]]) -> Results:
    """`call` on every engine at once; each engine's answer or the error it raised, in order."""
    results = await asyncio.gather(*(call(e) for e in engines), return_exceptions=True)
    return list(zip(engines, results, strict=True))


async def on_every_node(c: Cluster, method: str, api_path: str, **kw: Any) -> Results:
    """One call on every node's engine at once (a list, a prune): each engine's answer or its error."""
    return await fan_out(list(c.engines.values()), lambda e: e.call(method, api_path, **kw))


def failures(results: Results) -> list[tuple[Engine, BaseException]]:
    return [(e, r) for e, r in results if isinstance(r, BaseException)]


def successes(results: Results) -> Results:
    return [(e, r) for e, r in results if not isinstance(r, BaseException)]


def first_error(failed: list[tuple[Engine, BaseException]], what: str) -> ShoalError:
    """The first node's error, saying which node it came from."""
    e, err = failed[0]
    if isinstance(err, EngineError):
        return EngineError(err.status, f"{err.message} (on {e.node})", err.node)
    if isinstance(err, ShoalError):
        return err
    return ShoalError(f"{what} failed on {e.node}: {err}")
