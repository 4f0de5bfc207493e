"""Container operations that are not one relayed request: prune on every node (containers, images, the
build cache), removing a link on the parent's node, and where the websocket attach of a container goes.

A prune runs on every node at once and answers as one engine would: the deleted lists concatenated (an
image deleted on several nodes listed once) and `SpaceReclaimed` summed. A prune every node refuses the
same way (a bad filter) is that refusal, in the engine's own words. A prune that some nodes did and others
could not is an error that says what was done where and which node to prune again: a prune is safe to
repeat, and a silent partial one would leave a node's stopped containers behind unnoticed. The cache
forgets what was pruned at once, so `docker ps -a` right after no longer lists it.

The other operations of issue 14 line 3 need no code here: export, update, wait (with `condition`) and
rename are relayed to the container's node by the containers service's `route()`, which also has the cache
look at the container again after a rename or an update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import path
from shoal.errors import EngineError, NotFound, ShoalError, Unavailable
from shoal.manager.objects import filters_object, on_every_node
from shoal.manager.service import Route

if TYPE_CHECKING:
    from shoal.manager.service import Manager

PRUNE_TIMEOUT = 600.0  # a prune of many containers or images takes a while on each node; never a stream


@dataclass(frozen=True, slots=True)
class PruneKind:
    """One prune endpoint: where it is on an engine, the list its reply carries, the cache's kind."""

    what: str  # the words a user reads: "container prune"
    api_path: str
    deleted: str  # the reply's list of what went: ContainersDeleted, ImagesDeleted, CachesDeleted
    cached: str | None  # the cluster cache's kind that changes (None: the cache holds none of it)


CONTAINERS = PruneKind("container prune", "/containers/prune", "ContainersDeleted", "containers")
IMAGES = PruneKind("image prune", "/images/prune", "ImagesDeleted", "images")
BUILD_CACHE = PruneKind("build cache prune", "/build/prune", "CachesDeleted", None)


def human_size(n: float) -> str:
    """Bytes as the docker CLI prints them (go-units' HumanSize: decimal units, 4 significant digits)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.4g}{units[i]}"


def _unique(items: Iterable[Any]) -> list[Any]:
    """In order, each once (an image deleted on three nodes is one image deleted, as `docker images`
    shows it once); linear, for a prune of thousands."""
    seen: set[Any] = set()
    out: list[Any] = []
    for x in items:
        key = tuple(sorted(x.items())) if isinstance(x, dict) else x
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def merged_prune(kind: PruneKind, answers: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The cluster's prune reply from each node's (node, reply or error): pure, so it is tested alone.

    Every node refused: the first refusal, in the engine's own words when all said the same (a bad filter
    is a 400 "Invalid filter ..." as from one engine), else naming its node. Some refused: an error naming
    what was pruned where and the nodes to prune again. None refused: one engine's reply shape, the lists
    concatenated (`null` when empty, as dockerd answers) and SpaceReclaimed summed."""
    done = [(n, r) for n, r in answers if not isinstance(r, BaseException)]
    failed = [(n, r) for n, r in answers if isinstance(r, BaseException)]
    deleted = _unique(x for _, r in done for x in (r or {}).get(kind.deleted) or [])
    space = sum(int((r or {}).get("SpaceReclaimed") or 0) for _, r in done)
    if failed and not done:
        node, err = failed[0]
        if len({_message(r) for _, r in failed}) == 1 and isinstance(err, EngineError):
            raise EngineError(err.status, err.message, node)
        raise _on_node(node, err, kind.what)
    if failed:
        node, err = failed[0]
        where, others = ", ".join(sorted(n for n, _ in done)), ", ".join(sorted(n for n, _ in failed))
        note = (
            f"{kind.what} done on {where} ({len(deleted)} deleted, {human_size(space)} reclaimed) but not on "
            f"{others}: {_message(err)}; run it again once {others} answers"
        )
        raise EngineError(err.status, note, node) if isinstance(err, EngineError) else Unavailable(note)
    return {kind.deleted: deleted or None, "SpaceReclaimed": space}


def _message(err: BaseException) -> str:
    return err.message if isinstance(err, ShoalError) else str(err) or type(err).__name__


def _on_node(node: str, err: BaseException, what: str) -> ShoalError:
    if isinstance(err, EngineError):
        return EngineError(err.status, f"{err.message} (on {node})", node)
    if isinstance(err, ShoalError):
        return err
    return ShoalError(f"{what} failed on {node}: {_message(err)}")


def link_parts(ref: str) -> tuple[str, str]:
    """`parent/alias` (or `node/parent/alias`; the docker CLI strips the leading '/') -> (parent, alias).
    A link is named by its parent's name and the alias; anything else names no link."""
    parent, sep, alias = ref.strip("/").rpartition("/")
    if not sep or not parent.strip("/") or not alias:
        raise NotFound(f"No such container: {ref.strip('/')}")
    return parent, alias


def own_name(doc: Mapping[str, Any]) -> str:
    """A container's own name on its engine: the one of its names that is not a link (`/web/db`)."""
    names = [n.lstrip("/") for n in doc.get("Names") or []]
    return next((n for n in names if "/" not in n), names[0] if names else str(doc.get("Id", "")))


class ContainerOps:
    """Constructed per request by the handlers (`ContainerOps(manager_of(request))`); holds no state of its
    own, and uses the containers service only to find containers."""

    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def prune(self, kind: PruneKind, query: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """`kind`'s prune on every node at once, merged; the cache forgets what went before the reply."""
        c = self.m.cluster
        params = list(query)
        for k, v in params:
            if k == "filters":
                filters_object(v)  # not a JSON object: refused before any node prunes anything
        results = await on_every_node(c, "POST", kind.api_path, params=params, timeout=PRUNE_TIMEOUT)
        if kind is CONTAINERS:
            for e, r in results:
                if not isinstance(r, BaseException):
                    for cid in (r or {}).get("ContainersDeleted") or []:
                        c.forget(e.node, cid)
        if kind.cached is not None:
            done = [e.node for e, r in results if not isinstance(r, BaseException)]
            await c.changed({kind.cached}, done)
        return merged_prune(kind, [(e.node, r) for e, r in results])

    async def remove_link(self, ref: str, query: Mapping[str, str]) -> None:
        """`docker rm -l /parent/alias`: the link goes on the parent's node, which then lists its
        containers again (the linked container loses the name `parent/alias`)."""
        parent, alias = link_parts(ref)
        try:
            found = await self.m.containers.locate(parent)
        except NotFound:
            raise NotFound(f"No such container: {ref.strip('/')}") from None
        await found.engine.call(
            "DELETE", path("/containers", own_name(found.doc), alias), params={**query, "link": "1"}
        )
        await self.m.cluster.changed({"containers"}, [found.node])

    async def attach_ws_route(self, ref: str) -> Route:
        """GET /containers/{id}/attach/ws goes to the container's node, as its attach does."""
        route = await self.m.containers.route(ref, "attach")
        return replace(route, path=route.path + "/ws")
