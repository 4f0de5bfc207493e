"""Networks: local-scope drivers only, made on every node (or `node/NAME` on one), each engine's own
network of a name standing for the cluster's (shoal.manager.objects)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import Engine, path
from shoal.cluster.state import Cluster
from shoal.errors import Ambiguous, BadRequest, Conflict, NotFound
from shoal.manager.objects import failures, fan_out, first_error, on_every_node, split, successes
from shoal.manager.service import Route

if TYPE_CHECKING:
    from shoal.manager.service import Manager

LOCAL_DRIVERS = frozenset({"", "bridge", "macvlan", "ipvlan"})
Found = list[tuple[Engine, dict[str, Any]]]


def named(c: Cluster, ref: str) -> Found:
    """Every network `ref` names: node/name, a name, an id, or a unique id prefix, on any node."""
    engines, ref = split(c, ref)
    exact = [(e, n) for e in engines for n in e.networks if ref in (n["Name"], n["Id"])]
    if exact:
        return exact
    prefix = [(e, n) for e in engines for n in e.networks if ref and n["Id"].startswith(ref)]
    if len({n["Id"] for _, n in prefix}) > 1:
        raise Ambiguous(f"network {ref} is ambiguous ({len(prefix)} matches): use more of the id")
    return prefix


class Networks:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def _found(self, ref: str) -> Found:
        c = self.m.cluster
        found = named(c, ref)
        if not found:
            await c.look_again()
            found = named(c, ref)
        if not found:
            raise NotFound(f"network {ref} not found")
        return found

    async def listed(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        c = self.m.cluster
        results = await on_every_node(c, "GET", "/networks", params=dict(query))
        return [{**n, "Name": f"{e.node}/{n['Name']}"} for e, r in successes(results) for n in r]

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self.m.cluster
        if not body.get("Name") or not isinstance(body["Name"], str):
            raise BadRequest("a network needs a name: docker network create NAME")
        engines, name = split(c, body["Name"])
        driver = body.get("Driver") or "bridge"
        if driver not in LOCAL_DRIVERS:
            raise BadRequest(
                f"network driver {driver!r} is not supported by the shoal manager: local-scope drivers "
                f"({', '.join(sorted(d for d in LOCAL_DRIVERS if d))}) are made on each node"
            )
        await c.changed({"networks"})
        if have := [e.node for e in engines for n in e.networks if n["Name"] == name]:
            raise Conflict(f"network with name {name} already exists (on {', '.join(have)})")
        results = await fan_out(
            engines, lambda e: e.call("POST", "/networks/create", json={**body, "Name": name})
        )
        if failed := failures(results):
            for e, r in successes(results):
                await e.call("DELETE", path("/networks", r["Id"]))
            raise first_error(failed, "network create")
        await c.changed({"networks"})
        warnings = [r.get("Warning") for _, r in results if r.get("Warning")]
        return {"Id": results[0][1]["Id"], "Warning": "; ".join(warnings)}

    async def route(self, ref: str) -> Route:
        """inspect: the first node holding it answers."""
        e, n = (await self._found(ref))[0]
        return Route(e, path("/networks", n["Id"]), object_id=n["Id"])

    async def remove(self, ref: str) -> None:
        c = self.m.cluster
        found = await self._found(ref)
        ids = {e.node: n["Id"] for e, n in found}
        results = await fan_out(
            [e for e, _ in found], lambda e: e.call("DELETE", path("/networks", ids[e.node]))
        )
        await c.changed({"networks"})
        if failed := failures(results):
            raise first_error(failed, "network remove")

    async def connect(self, ref: str, action: str, body: dict[str, Any]) -> None:
        """connect/disconnect act on the container's node, with that node's network of that name."""
        c = self.m.cluster
        found_ct = await c.find(str(body.get("Container") or ""))
        mine = [n for e, n in await self._found(ref) if e is found_ct.engine]
        if not mine:
            raise NotFound(f"network {ref} not found on {found_ct.node}, where the container is")
        await found_ct.engine.call(
            "POST", path("/networks", mine[0]["Id"]) + f"/{action}", json={**body, "Container": found_ct.id}
        )
        await c.changed({"networks", "containers"}, [found_ct.node])

    async def prune(self, query: Mapping[str, str]) -> dict[str, Any]:
        c = self.m.cluster
        results = await on_every_node(c, "POST", "/networks/prune", params=dict(query))
        deleted = [f"{e.node}/{n}" for e, r in successes(results) for n in r.get("NetworksDeleted") or []]
        await c.changed({"networks"})
        return {"NetworksDeleted": deleted}
