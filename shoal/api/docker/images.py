"""Images: one image id on several nodes is one image; load and tag go to every node that should have
it, inspect to any that has it."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shoal.api.docker.common import fan_out, forward, manager_of, reply_json
from shoal.errors import BadRequest, NotFound, ShoalError


async def images_list(request: web.Request) -> web.Response:
    c = manager_of(request).cluster
    lists = await fan_out(
        list(c.engines.values()), lambda e: e.json("GET", "/images/json", params=request.query)
    )
    merged: dict[str, dict[str, Any]] = {}
    for _, lst in lists:
        if isinstance(lst, BaseException):
            continue
        for img in lst:
            have = merged.setdefault(img["Id"], dict(img))
            have["RepoTags"] = sorted(set(have.get("RepoTags") or []) | set(img.get("RepoTags") or []))
    return reply_json(list(merged.values()))


async def image_inspect(request: web.Request) -> web.StreamResponse:
    c = manager_of(request).cluster
    name = request.match_info["name"]
    holders = await _holders_or_404(request, name)
    return await forward(request, c.engine(holders[0]), f"/images/{name}/json")


async def image_load(request: web.Request) -> web.Response:
    """`docker load` through the manager loads onto every node."""
    c = manager_of(request).cluster
    data = await request.read()
    results = await fan_out(
        list(c.engines.values()), lambda e: e.json("POST", "/images/load", params={"quiet": "1"}, data=data)
    )
    errors = [f"{e.node}: {r}" for e, r in results if isinstance(r, BaseException)]
    await c.resync()
    if errors:
        raise ShoalError("load failed on " + "; ".join(errors))
    return reply_json({"stream": f"Loaded onto {len(results)} nodes\n"})


async def image_pull(request: web.Request) -> web.Response:
    """Pulling needs a registry the nodes can reach; this cluster has none, so say so, Docker's way."""
    image = request.query.get("fromImage", "") + (
        f":{request.query['tag']}" if request.query.get("tag") else ""
    )
    if request.query.get("fromSrc"):
        raise BadRequest(
            "docker import through the manager is not supported yet; import on a node, or "
            "`docker load` an image archive through the manager (it loads onto every node)"
        )
    raise NotFound(
        f"pull access denied for {image or 'that image'}: the shoal manager does not pull images "
        "(no image registry is reachable from the nodes); `docker load` an archive through the "
        "manager to put it on every node"
    )


async def _holders_or_404(request: web.Request, name: str) -> list[str]:
    holders = await manager_of(request).cluster.image_holders(name)
    if not holders:
        raise NotFound(f"No such image: {name}")
    return holders


async def image_tag(request: web.Request) -> web.Response:
    """A tag is given on every node that holds the image, so it keeps meaning one image everywhere."""
    c = manager_of(request).cluster
    name = request.match_info["name"]
    holders = await _holders_or_404(request, name)
    for node in holders:
        await c.engine(node).json("POST", f"/images/{name}/tag", params=request.query)
    await c.resync()
    return web.Response(status=201)


async def image_remove(request: web.Request) -> web.Response:
    """Removed from every node that holds it; the reply lists what each node untagged and deleted."""
    c = manager_of(request).cluster
    name = request.match_info["name"]
    holders = await _holders_or_404(request, name)
    out: list[dict[str, Any]] = []
    errors: list[ShoalError] = []
    for node in holders:
        try:
            out += await c.engine(node).json("DELETE", f"/images/{name}", params=request.query)
        except ShoalError as e:
            e.message = f"{e.message} (on {node})"
            errors.append(e)
    await c.resync()
    if errors:
        raise errors[0]
    return reply_json(list({json.dumps(x, sort_keys=True): x for x in out}.values()))


async def image_from_a_holder(request: web.Request) -> web.StreamResponse:
    """history and get (`docker save`): any node that holds the image answers."""
    c = manager_of(request).cluster
    name = request.match_info["name"]
    holders = await _holders_or_404(request, name)
    return await forward(request, c.engine(holders[0]), f"/images/{name}/{request.match_info['what']}")


async def images_save(request: web.Request) -> web.StreamResponse:
    """`docker save A B ...` (GET /images/get?names=...): from a node that holds every one of them."""
    c = manager_of(request).cluster
    names = request.query.getall("names", [])
    if not names:
        raise BadRequest("docker save needs at least one image name")
    holders = set(await _holders_or_404(request, names[0]))
    for name in names[1:]:
        holders &= set(await _holders_or_404(request, name))
    if not holders:
        raise NotFound(f"no node holds all of {', '.join(names)}; save them one at a time")
    return await forward(request, c.engine(sorted(holders)[0]), "/images/get")
