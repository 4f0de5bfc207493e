"""Volumes: local-scope, and one made through the manager is made on every node as one cluster-wide
volume, listed once by its bare name (shoal.manager.objects); `node/NAME` makes, and names, one node's
own. Dataset volumes (driver shoal or flocker) live once, on one node, as the data services decide
(shoal.manager.datasets), and are reached as before: by their name, on whichever engine answers."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import Engine, path
from shoal.data.model import DRIVERS
from shoal.errors import BadRequest, Conflict, EngineError, NotFound
from shoal.manager.datasets import create_dataset_volume
from shoal.manager.objects import (
    ClusterObject,
    check_name,
    failures,
    fan_out,
    first_error,
    labelled,
    merge,
    on_every_node,
    partly,
    pruned,
    resolve,
    scattered,
    successes,
    swarm_id,
)

if TYPE_CHECKING:
    from shoal.manager.service import Manager


def in_use(o: ClusterObject, containers: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """The ids of the containers (node -> that engine's list) mounting one of its copies."""
    return [
        ct.get("Id", "")
        for c in o.copies
        for ct in containers.get(c.node, [])
        if any(m.get("Type") == "volume" and m.get("Name") == c.name for m in ct.get("Mounts") or [])
    ]


def on_nodes(volume: Mapping[str, Any], nodes: tuple[str, ...]) -> dict[str, Any]:
    """A cluster-wide volume says which nodes hold it in its `Status` (`Status.Nodes`): the one field of
    a volume's own where the docker CLI shows what a driver adds (`docker volume inspect` prints no field
    it does not know, while it prints `docker network inspect`'s answer as it comes)."""
    status = volume.get("Status") if isinstance(volume.get("Status"), dict) else {}
    return {**volume, "Status": {**status, "Nodes": list(nodes)}}


class Volumes:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def _objects(self) -> list[ClusterObject]:
        return merge({node: e.volumes for node, e in self.m.cluster.engines.items()}, "Name")

    def _dataset(self, ref: str) -> bool:
        """A dataset volume (or a `name@profile` reference to one) keeps the dataset services' handling."""
        name = ref.rpartition("/")[2]
        return "@" in ref or any(
            v.get("Name") == name and v.get("Driver") in DRIVERS
            for e in self.m.cluster.engines.values()
            for v in e.volumes
        )

    async def _found(self, ref: str) -> ClusterObject | None:
        c = self.m.cluster
        if (found := resolve(self._objects(), ref, c.engines, prefixes=False)) is None:
            await c.look_again()
            found = resolve(self._objects(), ref, c.engines, prefixes=False)
        return found

    def scattered(self, names: list[str]) -> dict[str, tuple[str, ...]]:
        """Of a create's named volumes, those several nodes hold each as their own: name -> nodes (for
        the container create, shoal.manager.containers, to refuse; see objects.scattered)."""
        if not names:  # every create asks: one without named volumes costs nothing here
            return {}
        wanted = set(names)
        local = {  # datasets (the shoal/flocker drivers) are one object each, whatever the engines list
            node: [v for v in e.volumes if v.get("Name") in wanted and v.get("Driver") not in DRIVERS]
            for node, e in self.m.cluster.engines.items()
        }
        spread = scattered(merge(local, "Name"))
        return {n: spread[n] for n in names if n in spread}

    async def listed(self, query: Mapping[str, str]) -> dict[str, Any]:
        c = self.m.cluster
        results = await on_every_node(c, "GET", "/volumes", params=dict(query))
        if not (answered := successes(results)):
            raise first_error(failures(results), "volume list")
        lists = {e.node: r.get("Volumes") or [] for e, r in answered}
        entries = {(node, v["Name"]): v for node, vs in lists.items() for v in vs}
        vols = []
        for o in merge(lists, "Name"):
            first = o.copies[0]
            entry = entries[(first.node, first.name)]
            vols.append({**(on_nodes(entry, o.nodes) if o.cluster_wide else entry), "Name": o.name})
        warnings = [f"{e.node}: {r}" for e, r in failures(results)]
        warnings += [w for _, r in answered for w in r.get("Warnings") or []]
        return {"Volumes": vols, "Warnings": warnings or None}

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self.m.cluster
        raw = body.get("Name") or ""
        if not isinstance(raw, str):
            raise BadRequest("the volume Name must be a string")
        if body.get("Driver") is not None and not isinstance(body["Driver"], str):
            raise BadRequest("the volume Driver must be a string (a driver's name)")
        if body.get("Driver") in DRIVERS:  # the dataset's own name rules apply (shoal.data.model)
            node, sep, rest = raw.partition("/")
            if sep and node in c.engines:
                return await create_dataset_volume(self.m, rest, body["Driver"], node, body)
            only = next(iter(c.engines)) if len(c.engines) == 1 else None
            return await create_dataset_volume(self.m, raw, body["Driver"], only, body)
        node, sep, name = raw.partition("/")
        if sep:
            if node not in c.engines:
                raise NotFound(
                    f"no node named {node!r} (`docker info` lists the nodes); {raw!r} names nothing"
                )
            check_name(name)
            return await self._make([c.engines[node]], {**body, "Name": name}, "")
        if raw:
            check_name(raw)
        # an unnamed volume gets its name here, as dockerd names it (64 hex), so it is one name everywhere
        name = raw or secrets.token_hex(32)
        await c.fresh()
        held = [o for o in self._objects() if name in (o.name, o.copies[0].name)]
        if there := [o for o in held if o.cluster_wide]:  # as dockerd: a create of an existing name is it
            o = there[0]
            missing = [e for n, e in c.engines.items() if o.on(n) is None]
            if missing:  # a node that joined after the create gets its copy
                await self._make(missing, labelled({**body, "Name": name}, o.id), o.id)
            return {**(await self.inspect(name)), "Name": name}
        if held:
            raise Conflict(
                f"volume {name} already exists on {', '.join(o.nodes[0] for o in held)} only (listed as "
                f"{', '.join(o.name for o in held)}): a cluster-wide volume of that name would join its "
                "data to new empty ones; remove it or choose another name"
            )
        mid = secrets.token_hex(32)
        return await self._make(list(c.engines.values()), labelled({**body, "Name": name}, mid), mid)

    async def _make(self, engines: list[Engine], body: dict[str, Any], mid: str) -> dict[str, Any]:
        """The volume on each of `engines`, or on none: one that fails is undone on the others, and so is
        the whole create if an engine already held the name as its own (its data is not joined to ours)."""
        c = self.m.cluster
        name = body["Name"]
        results = await fan_out(engines, lambda e: e.call("POST", "/volumes/create", json=body))
        held = [e.node for e, r in successes(results) if swarm_id(r) != mid]
        if (failed := failures(results)) or (mid and held):
            made = [e for e, r in successes(results) if mid and swarm_id(r) == mid]
            await fan_out(made, lambda e: e.call("DELETE", path("/volumes", name)))
            await c.changed({"volumes"})
            if failed:
                raise first_error(failed, "volume create")
            raise Conflict(f"volume {name} already exists on {', '.join(held)} as that node's own")
        await c.changed({"volumes"})
        return on_nodes(results[0][1], tuple(e.node for e in engines)) if mid else results[0][1]

    async def inspect(self, ref: str) -> dict[str, Any]:
        """One answer for the volume: the first copy's inspect, with the nodes it is on (`on_nodes`)."""
        c = self.m.cluster
        if self._dataset(ref):
            return await self._first_answer(list(c.engines.values()), ref.rpartition("/")[2])
        check_name(ref.rpartition("/")[2])
        o = await self._found(ref)
        if o is None:
            raise NotFound(f"get {ref}: no such volume")
        answer = await self._first_answer([c.engines[n] for n in o.nodes if n in c.engines], o.copies[0].name)
        return on_nodes(answer, o.nodes) if o.cluster_wide else answer

    async def _first_answer(self, engines: list[Engine], name: str) -> dict[str, Any]:
        for _, r in await fan_out(engines, lambda e: e.call("GET", path("/volumes", name))):
            if not isinstance(r, BaseException):
                return dict(r)
        raise NotFound(f"get {name}: no such volume")

    async def remove(self, ref: str, query: Mapping[str, str]) -> None:
        c = self.m.cluster
        name = ref.rpartition("/")[2]
        check_name(name)
        if self._dataset(ref):  # the dataset services decide, through the plugin on whichever engine
            engines = list(c.engines.values())
        else:
            if (o := await self._found(ref)) is None:
                raise NotFound(f"get {ref}: no such volume")
            if users := in_use(o, {n: e.containers for n, e in c.engines.items()}):
                raise Conflict(f"remove {ref}: volume is in use - [{', '.join(users)}]")
            engines, name = [c.engines[n] for n in o.nodes if n in c.engines], o.copies[0].name
        results = await fan_out(
            engines, lambda e: e.call("DELETE", path("/volumes", name), params=dict(query))
        )
        await c.changed({"volumes"})
        failed = [
            (e, r) for e, r in failures(results) if not (isinstance(r, EngineError) and r.status == 404)
        ]
        if failed:
            raise first_error(failed, "volume remove")
        if len(failures(results)) == len(results):
            raise NotFound(f"get {name}: no such volume")

    async def prune(self, query: Mapping[str, str]) -> dict[str, Any]:
        c = self.m.cluster
        await c.fresh()
        before = self._objects()
        results = await on_every_node(c, "POST", "/volumes/prune", params=dict(query))
        await c.changed({"volumes"})
        deleted = {e.node: r.get("VolumesDeleted") or [] for e, r in successes(results)}
        space = sum(r.get("SpaceReclaimed") or 0 for _, r in successes(results))
        names = pruned(before, deleted)
        if failed := failures(results):
            raise partly(failed, "volume prune", names)
        return {"VolumesDeleted": names, "SpaceReclaimed": space}
