"""Volumes: local-scope on every node (shoal.manager.objects), except dataset volumes (driver shoal or
flocker), which live once, on one node, as the data services decide (shoal.manager.datasets)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import path
from shoal.data.model import DRIVERS
from shoal.errors import BadRequest, EngineError, NotFound
from shoal.manager.datasets import create_dataset_volume
from shoal.manager.objects import failures, fan_out, first_error, on_every_node, split, successes

if TYPE_CHECKING:
    from shoal.manager.service import Manager


class Volumes:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def listed(self, query: Mapping[str, str]) -> dict[str, Any]:
        c = self.m.cluster
        results = await on_every_node(c, "GET", "/volumes", params=dict(query))
        vols, warnings = [], []
        for e, r in results:
            if isinstance(r, BaseException):
                warnings.append(f"{e.node}: {r}")
                continue
            for v in r.get("Volumes") or []:
                vols.append({**v, "Name": f"{e.node}/{v['Name']}"})
            warnings += r.get("Warnings") or []
        return {"Volumes": vols, "Warnings": warnings or None}

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self.m.cluster
        raw = body.get("Name") or ""
        if not isinstance(raw, str):
            raise BadRequest("the volume Name must be a string")
        if body.get("Driver") in DRIVERS:  # the dataset's own name rules apply (shoal.data.model)
            node, sep, rest = raw.partition("/")
            if sep and node in c.engines:
                return await create_dataset_volume(self.m, rest, body["Driver"], node, body)
            only = next(iter(c.engines)) if len(c.engines) == 1 else None
            return await create_dataset_volume(self.m, raw, body["Driver"], only, body)
        engines, name = split(c, raw)
        # an unnamed volume gets its name here, as dockerd names it (64 hex), so it is one name everywhere
        name = name or secrets.token_hex(32)
        results = await fan_out(
            engines, lambda e: e.call("POST", "/volumes/create", json={**body, "Name": name})
        )
        if failed := failures(results):
            made = successes(results)
            await fan_out([e for e, _ in made], lambda e: e.call("DELETE", path("/volumes", name)))
            raise first_error(failed, "volume create")
        await c.changed({"volumes"})
        return results[0][1]

    async def inspect(self, ref: str) -> dict[str, Any]:
        engines, name = split(self.m.cluster, ref)
        for _, r in await fan_out(engines, lambda e: e.call("GET", path("/volumes", name))):
            if not isinstance(r, BaseException):
                return r
        raise NotFound(f"get {name}: no such volume")

    async def remove(self, ref: str, query: Mapping[str, str]) -> None:
        c = self.m.cluster
        engines, name = split(c, ref)
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
        results = await on_every_node(c, "POST", "/volumes/prune", params=dict(query))
        deleted, space = [], 0
        for e, r in successes(results):
            deleted += [f"{e.node}/{v}" for v in r.get("VolumesDeleted") or []]
            space += r.get("SpaceReclaimed") or 0
        await c.changed({"volumes"})
        return {"VolumesDeleted": deleted, "SpaceReclaimed": space}
