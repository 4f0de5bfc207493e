"""Routes for moves, replicas and drains (`shoal volume move`, `shoal node drain|undrain`): parse, call the
manager's services (shoal.manager.moves, shoal.manager.reschedule), render."""

from __future__ import annotations

from aiohttp import web

from shoal.api.docker.common import manager_of, read_json, reply_json
from shoal.errors import BadRequest


async def volume_move(request: web.Request) -> web.Response:
    """POST /shoal/v1/volumes/{ref}/move {"node": NODE}: answers once the move is done (or undone)."""
    body = await read_json(request)
    node = body.get("node") or request.query.get("node", "")
    if not isinstance(node, str) or not node:
        raise BadRequest('a move needs the target node: {"node": "node1"}')
    m = manager_of(request)
    return reply_json(await m.moves.move(request.match_info["ref"], node))


async def moves_list(request: web.Request) -> web.Response:
    """GET /shoal/v1/moves: the moves under way and every dataset's replicas (node, lag)."""
    m = manager_of(request)
    return reply_json({"moves": await m.moves.under_way(), "replicas": await m.moves.replicas_view()})


async def node_drain(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).reschedule.drain(request.match_info["node"]))


async def node_undrain(request: web.Request) -> web.Response:
    return reply_json(await manager_of(request).reschedule.undrain(request.match_info["node"]))


async def nodes_state(request: web.Request) -> web.Response:
    """GET /shoal/v1/nodes/state: which nodes are draining, which are down (and since when)."""
    r = manager_of(request).reschedule
    return reply_json({"draining": sorted(r.draining), "down": r.failure.down})
