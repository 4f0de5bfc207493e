"""Images: one image id on several nodes is one image; load and tag go to every node that should have it,
inspect, history and save to any node that has it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import path
from shoal.errors import BadRequest, EngineError, NotFound, ShoalError
from shoal.manager.objects import on_every_node, successes
from shoal.manager.service import Route

if TYPE_CHECKING:
    from shoal.manager.service import Manager

FROM_A_HOLDER = frozenset({"json", "history", "get"})
LOAD_BUFFER = 16  # chunks of an archive waiting for one node
LOAD_TIMEOUT = 3600.0


async def _offer(
    queues: list[asyncio.Queue[bytes | None]], tasks: list[asyncio.Future[Any]], item: bytes | None
):
    """Hands `item` to every node still loading; one that failed is not waited for."""
    for q, t in zip(queues, tasks, strict=True):
        if t.done():
            continue
        put = asyncio.ensure_future(q.put(item))
        await asyncio.wait([put, t], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()


def merged(lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every node's image list as one: an id once, with every tag any node gives it (pure)."""
    out: dict[str, dict[str, Any]] = {}
    for lst in lists:
        for img in lst:
            have = out.setdefault(img["Id"], dict(img))
            have["RepoTags"] = sorted(set(have.get("RepoTags") or []) | set(img.get("RepoTags") or []))
    return list(out.values())


class Images:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def holders(self, name: str) -> list[str]:
        found = await self.m.cluster.image_holders(name)
        if not found:
            raise NotFound(f"No such image: {name}")
        return found

    async def listed(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        c = self.m.cluster
        results = await on_every_node(c, "GET", "/images/json", params=dict(query))
        return merged([r for _, r in successes(results)])

    async def route(self, name: str, what: str) -> Route:
        """inspect (json), history and get (`docker save` of one image): any node that holds it."""
        if what not in FROM_A_HOLDER:
            raise NotFound(f"page not found: /images/{{name}}/{what} is not a Docker API endpoint")
        node = (await self.holders(name))[0]
        return Route(self.m.cluster.engine(node), path("/images", name) + f"/{what}", object_id=name)

    async def save_route(self, names: list[str]) -> Route:
        """`docker save A B ...` (GET /images/get?names=...): from a node that holds every one of them."""
        if not names:
            raise BadRequest("docker save needs at least one image name")
        common = set(await self.holders(names[0]))
        for name in names[1:]:
            common &= set(await self.holders(name))
        if not common:
            raise NotFound(f"no node holds all of {', '.join(names)}; save them one at a time")
        return Route(self.m.cluster.engine(sorted(common)[0]), "/images/get")

    async def load(self, archive: AsyncIterator[bytes]) -> dict[str, Any]:
        """`docker load` through the manager loads onto every node: the archive streams to all of them at
        once, each through a small buffer (never the whole archive in memory), as fast as the slowest."""
        c = self.m.cluster
        engines = list(c.engines.values())
        queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(LOAD_BUFFER) for _ in engines]

        async def chunks(q: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
            while (chunk := await q.get()) is not None:
                yield chunk

        tasks = [
            asyncio.ensure_future(
                e.call("POST", "/images/load", params={"quiet": "1"}, data=chunks(q), timeout=LOAD_TIMEOUT)
            )
            for e, q in zip(engines, queues, strict=True)
        ]
        async for chunk in archive:
            await _offer(queues, tasks, chunk)
        await _offer(queues, tasks, None)
        outcome = await asyncio.gather(*tasks, return_exceptions=True)
        results = list(zip(engines, outcome, strict=True))
        errors = [f"{e.node}: {r}" for e, r in results if isinstance(r, BaseException)]
        await c.changed({"images"})
        if errors:
            raise ShoalError("load failed on " + "; ".join(errors))
        return {"stream": f"Loaded onto {len(results)} nodes\n"}

    async def tag(self, name: str, query: Mapping[str, str]) -> None:
        """A tag is given on every node that holds the image, so it keeps meaning one image everywhere."""
        c = self.m.cluster
        for node in await self.holders(name):
            await c.engine(node).call("POST", path("/images", name) + "/tag", params=dict(query))
        await c.changed({"images"})

    async def remove(self, name: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Removed from every node that holds it; the reply lists what each node untagged and deleted."""
        c = self.m.cluster
        out: list[dict[str, Any]] = []
        errors: list[ShoalError] = []
        for node in await self.holders(name):
            try:
                out += await c.engine(node).call("DELETE", path("/images", name), params=dict(query))
            except EngineError as e:
                errors.append(EngineError(e.status, f"{e.message} (on {node})", node))
        await c.changed({"images"})
        if errors:
            raise errors[0]
        return list({json.dumps(x, sort_keys=True): x for x in out}.values())

    def pull(self, query: Mapping[str, str]) -> None:
        """Pulling needs a registry the nodes can reach; this cluster has none, so say so, Docker's way."""
        image = query.get("fromImage", "") + (f":{query['tag']}" if query.get("tag") else "")
        if query.get("fromSrc"):
            raise BadRequest(
                "docker import through the manager is not supported yet; import on a node, or "
                "`docker load` an image archive through the manager (it loads onto every node)"
            )
        raise NotFound(
            f"pull access denied for {image or 'that image'}: the shoal manager does not pull images "
            "(no image registry is reachable from the nodes); `docker load` an archive through the "
            "manager to put it on every node"
        )
