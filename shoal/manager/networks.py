"""Networks: local-scope drivers only. One made through the manager is made on every node as one
cluster-wide network (its id the manager's, each node's copy mapped to it: shoal.manager.objects);
`node/NAME` makes, and names, one node's own."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import path
from shoal.errors import BadRequest, Conflict, EngineError, NotFound
from shoal.manager.objects import (
    ClusterObject,
    Copy,
    check_name,
    failures,
    fan_out,
    filters_object,
    first_error,
    labelled,
    merge,
    on_every_node,
    partly,
    pruned,
    resolve,
    successes,
)

if TYPE_CHECKING:
    from shoal.manager.service import Manager

LOCAL_DRIVERS = frozenset({"", "bridge", "macvlan", "ipvlan"})
# what a copy made later (on a node that joined after the create) takes from an existing copy
COPIED = ("Driver", "Options", "Internal", "Attachable", "EnableIPv6", "Labels")


def id_filter(query: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The list query without its `id` filter, and that filter's values: the engines know only their own
    ids, so the manager applies an id filter itself, to the cluster's ids. Filters that are not a JSON
    object are refused here (dockerd answers them with a 500)."""
    params = dict(query)
    filters = filters_object(params.get("filters", ""))
    if "id" not in filters:
        return params, []
    ids = filters.pop("id")
    params["filters"] = json.dumps(filters)
    return params, [str(i) for i in (ids if isinstance(ids, list | dict) else [ids])]


def in_use(obj: ClusterObject, containers: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """`node: container` for each container (node -> that engine's list) joined to one of its copies."""
    out = []
    for c in obj.copies:
        for ct in containers.get(c.node, []):
            nets = ((ct.get("NetworkSettings") or {}).get("Networks") or {}).values()
            if any(isinstance(n, dict) and n.get("NetworkID") == c.id for n in nets):
                out.append(f"{c.node}: {(ct.get('Names') or ['/' + ct.get('Id', '')[:12]])[0].lstrip('/')}")
    return out


def by_name(objects: list[ClusterObject], refs: list[str]) -> dict[str, str]:
    """ref -> name for each of a container create's network references (`--net`, its endpoints) that
    is a cluster-wide network's id or id prefix: its name is the same on every node, so the create body
    names it so, before the scheduler (which matches networks by name) and the chosen engine see it."""
    out = {}
    for ref in refs:
        try:
            o = resolve(objects, ref, ())
        except (NotFound, BadRequest):
            continue
        if o is not None and o.cluster_wide and ref != o.name:
            out[ref] = o.name
    return out


class Networks:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def _objects(self) -> list[ClusterObject]:
        return merge({node: e.networks for node, e in self.m.cluster.engines.items()})

    async def _found(self, ref: str, node: str = "") -> ClusterObject:
        c = self.m.cluster
        if (found := resolve(self._objects(), ref, c.engines, node)) is None:
            await c.look_again()
            found = resolve(self._objects(), ref, c.engines, node)
        if found is None:
            raise NotFound(f"network {ref} not found")
        return found

    def names(self, refs: list[str]) -> dict[str, str]:
        """`by_name` over the cache: for the container create (shoal.manager.containers) to call; a create
        that joins no user network costs nothing here (every create asks)."""
        return by_name(self._objects(), refs) if refs else {}

    async def listed(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        c = self.m.cluster
        params, ids = id_filter(query)
        results = await on_every_node(c, "GET", "/networks", params=params)
        if not (answered := successes(results)):
            raise first_error(failures(results), "network list")
        lists = {e.node: r for e, r in answered}
        entries = {(node, n["Id"]): n for node, r in lists.items() for n in r}
        out = []
        for o in merge(lists):
            if ids and not any(i.startswith(x) for x in ids for i in (o.id, *(cp.id for cp in o.copies))):
                continue
            first = o.copies[0]
            extra = {"Nodes": list(o.nodes)} if o.cluster_wide else {}
            out.append({**entries[(first.node, first.id)], "Id": o.id, "Name": o.name, **extra})
        return out

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self.m.cluster
        if not body.get("Name") or not isinstance(body["Name"], str):
            raise BadRequest("a network needs a name: docker network create NAME")
        node, sep, name = body["Name"].partition("/")
        if sep and node not in c.engines:
            raise NotFound(f"no node named {node!r} (`docker info` lists the nodes)")
        name = name if sep else body["Name"]
        check_name(name)
        driver = body.get("Driver") or "bridge"
        if not isinstance(driver, str) or driver not in LOCAL_DRIVERS:
            raise BadRequest(
                f"network driver {driver!r} is not supported by the shoal manager: local-scope drivers "
                f"({', '.join(sorted(d for d in LOCAL_DRIVERS if d))}) are made on each node"
            )
        engines = [c.engines[node]] if sep else list(c.engines.values())
        mid = "" if sep else secrets.token_hex(32)  # one node's network keeps its engine's id
        made = {**body, "Name": name} if sep else labelled({**body, "Name": name}, mid)
        await c.changed({"networks"})
        if have := [e.node for e in engines for n in e.networks if n["Name"] == name]:
            raise Conflict(f"network with name {name} already exists (on {', '.join(have)})")
        results = await fan_out(engines, lambda e: e.call("POST", "/networks/create", json=made))
        if failed := failures(results):
            for e, r in successes(results):
                await e.call("DELETE", path("/networks", r["Id"]))
            raise first_error(failed, "network create")
        await c.changed({"networks"})
        warnings = [r.get("Warning") for _, r in results if r.get("Warning")]
        return {"Id": mid or results[0][1]["Id"], "Warning": "; ".join(warnings)}

    async def inspect(self, ref: str, query: Mapping[str, str]) -> dict[str, Any]:
        """One answer for the object: the first copy's inspect with the cluster's id, the containers of
        every copy, and the nodes it is on (`Nodes`; `NodeIds`: each node's own id for its copy)."""
        c = self.m.cluster
        o = await self._found(ref)
        copies = [cp for cp in o.copies if cp.node in c.engines]
        ids = {cp.node: cp.id for cp in copies}
        results = await fan_out(
            [c.engines[cp.node] for cp in copies],
            lambda e: e.call("GET", path("/networks", ids[e.node]), params=dict(query)),
        )
        if not (answered := successes(results)):
            raise first_error(failures(results), "network inspect")
        answer = dict(answered[0][1])
        containers: dict[str, Any] = {}
        for _, r in answered:
            containers.update(r.get("Containers") or {})
        return {**answer, "Id": o.id, "Containers": containers, "Nodes": list(ids), "NodeIds": ids}

    async def remove(self, ref: str) -> None:
        c = self.m.cluster
        o = await self._found(ref)
        if users := in_use(o, {node: e.containers for node, e in c.engines.items()}):
            raise Conflict(
                f"error while removing network: network {ref} id {o.id} has active endpoints "
                f"({', '.join(users)}): disconnect or remove them first"
            )
        copies = [cp for cp in o.copies if cp.node in c.engines]
        ids = {cp.node: cp.id for cp in copies}
        results = await fan_out(
            [c.engines[cp.node] for cp in copies], lambda e: e.call("DELETE", path("/networks", ids[e.node]))
        )
        await c.changed({"networks"})
        if failed := [(e, r) for e, r in failures(results) if not _gone(r)]:
            raise first_error(failed, "network remove")

    async def connect(self, ref: str, action: str, body: dict[str, Any]) -> None:
        """connect/disconnect act on the container's node, with that node's copy of the network. A
        cluster-wide network missing there (the node joined after the create) is made there on connect."""
        c = self.m.cluster
        found_ct = await c.find(str(body.get("Container") or ""))
        o = await self._found(ref, found_ct.node)
        mine = o.on(found_ct.node)
        if mine is None and o.cluster_wide and action == "connect":
            mine = await self._copy_to(o, found_ct.node)
        if mine is None:
            raise NotFound(
                f"network {ref} is not on {found_ct.node}, where the container is (it is on "
                f"{', '.join(o.nodes)}): run the container there, or use a network made on every node"
            )
        await found_ct.engine.call(
            "POST", path("/networks", mine.id) + f"/{action}", json={**body, "Container": found_ct.id}
        )
        await c.changed({"networks", "containers"}, [found_ct.node])

    async def _copy_to(self, o: ClusterObject, node: str) -> Copy | None:
        """Make the cluster-wide network `o` on `node` as it is on its other nodes (same options, labels
        and so the same manager id; the address pool too when every copy has the same one)."""
        c = self.m.cluster
        ids = {cp.node: cp.id for cp in o.copies if cp.node in c.engines}
        answers = successes(
            await fan_out(
                [c.engines[n] for n in ids], lambda e: e.call("GET", path("/networks", ids[e.node]))
            )
        )
        if not answers:
            return None
        first = answers[0][1]
        body = {k: first[k] for k in COPIED if k in first} | {"Name": o.name, "CheckDuplicate": True}
        ipams = [json.dumps(r.get("IPAM") or {}, sort_keys=True) for _, r in answers]
        if len(set(ipams)) == 1 and (first.get("IPAM") or {}).get("Config"):
            body["IPAM"] = first["IPAM"]
        await c.engine(node).call("POST", "/networks/create", json=body)
        await c.changed({"networks"}, [node])
        return (await self._found(o.id, node)).on(node)

    async def prune(self, query: Mapping[str, str]) -> dict[str, Any]:
        c = self.m.cluster
        await c.fresh()
        before = self._objects()
        results = await on_every_node(c, "POST", "/networks/prune", params=dict(query))
        await c.changed({"networks"})
        deleted = {e.node: r.get("NetworksDeleted") or [] for e, r in successes(results)}
        names = pruned(before, deleted)
        if failed := failures(results):
            raise partly(failed, "network prune", names)
        return {"NetworksDeleted": names}


def _gone(err: BaseException) -> bool:
    """A copy already gone (deleted on its node meanwhile) is what a remove wants: not an error."""
    return isinstance(err, EngineError) and err.status == 404
