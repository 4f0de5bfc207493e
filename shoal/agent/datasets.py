"""The node's data service: converges the pool to the registry's dataset records (discover, plan, apply),
and serves the Docker volume plugin protocol (driver `shoal`, and `flocker` for the seed's files) on the
node's /run/docker/plugins. Decisions come from shoal.data.model; this module is the I/O around them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.data.model import DRIVERS, Dataset, Profile, check_remove, decide, matching, parse_intent
from shoal.data.plan import plan
from shoal.data.pool.base import Pool
from shoal.data.records import Records, new_ids
from shoal.errors import BadRequest, ShoalError

log = logging.getLogger("shoal.agent.datasets")
PLUGIN_TYPE = "application/vnd.docker.plugins.v1.2+json"


def plugin_reply(err: ShoalError) -> web.Response:
    """The volume plugin protocol's error form: a 200 whose `Err` dockerd shows the user as the volume
    error, whatever the kind (Flocker's `_endpoint` answered the same way)."""
    return web.Response(body=json.dumps({"Err": err.message}).encode(), content_type=PLUGIN_TYPE)


class DataService:
    def __init__(
        self,
        node: str,
        pool: Pool,
        records: Records,
        profiles: Mapping[str, Profile],
        default_profile: str,
        mount_prefix: Path,
        plugins_dir: Path,
    ) -> None:
        self.node = node
        self.pool = pool
        self.records = records
        self.profiles = profiles
        self.default_profile = default_profile
        self.prefix = mount_prefix
        self.plugins_dir = plugins_dir
        self.known: list[Dataset] = []
        self.mounts: dict[str, list[str]] = {}
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._bind_prefix()
        self.mounts = await self.records.mounts(self.node)
        await self.converge()
        self._watch = asyncio.get_running_loop().create_task(self._follow())
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        for name in DRIVERS:  # one plugin, answering to each driver name
            sock = self.plugins_dir / f"{name}.sock"
            sock.unlink(missing_ok=True)
            await web.UnixSite(self._runner, str(sock)).start()
        log.info(
            "volume plugin %s on %s; pool %s (%s)",
            "/".join(DRIVERS),
            self.plugins_dir,
            self.pool.root,
            self.pool.kind,
        )

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._runner is not None:
            await self._runner.cleanup()

    def _bind_prefix(self) -> None:
        """Mount paths are <prefix>/<dataset id> (/flocker/<uuid> as the seed shows): the prefix is the pool's
        dataset directory, bind-mounted in this node's mount namespace (the engine's)."""
        if self.prefix.resolve() == self.pool.datasets.resolve():
            return
        self.prefix.mkdir(parents=True, exist_ok=True)
        same = os.stat(self.prefix)
        target = os.stat(self.pool.datasets)
        if (same.st_dev, same.st_ino) != (target.st_dev, target.st_ino):
            subprocess.run(["mount", "--bind", str(self.pool.datasets), str(self.prefix)], check=True)

    def path(self, d: Dataset) -> str:
        return str(self.prefix / d.id)

    # --- convergence ------------------------------------------------------------------------------

    async def converge(self) -> None:
        async with self._lock:
            self.known, _ = await self.records.all()
            disk = await asyncio.to_thread(self.pool.discover)
            for step in plan(self.node, self.known, disk):
                log.info("pool: %s", step)
                await asyncio.to_thread(self.pool.apply, step)

    async def _follow(self) -> None:
        index = 0
        while True:
            try:
                _, new = await self.records.all(index or 1, 30.0)
                if new != index:
                    index = new
                    await self.converge()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the registry away, a step failed: log and come back
                log.warning("dataset convergence: %s; retrying", e)
                await asyncio.sleep(1.0)

    # --- the plugin protocol --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        routes: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "/Plugin.Activate": self.activate,
            "/VolumeDriver.Create": self.create,
            "/VolumeDriver.Remove": self.remove,
            "/VolumeDriver.Mount": self.mount,
            "/VolumeDriver.Unmount": self.unmount,
            "/VolumeDriver.Path": self.path_of,
            "/VolumeDriver.Get": self.get,
            "/VolumeDriver.List": self.list,
            "/VolumeDriver.Capabilities": self.capabilities,
        }
        for path, handler in routes.items():
            app.router.add_post(path, self._wrap(handler))
        return app

    def _wrap(self, handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]):
        async def h(request: web.Request) -> web.Response:
            try:
                body = json.loads(await request.read() or b"{}")
                out = await handler(body if isinstance(body, dict) else {})
            except ShoalError as e:
                return plugin_reply(e)
            except (ValueError, KeyError) as e:
                return plugin_reply(BadRequest(f"bad plugin request: {e}"))
            return web.Response(body=json.dumps(out).encode(), content_type=PLUGIN_TYPE)

        return h

    async def activate(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["VolumeDriver"]}

    async def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Capabilities": {"Scope": "local"}}

    async def _find(self, raw: str) -> Dataset:
        intent = parse_intent(raw, self.profiles)
        self.known, _ = await self.records.all()
        d = matching(self.known, intent)
        if d is None:
            raise ShoalError(f"no such volume: {raw}")
        if d.node != self.node:
            raise ShoalError(
                f"dataset {d.name} ({d.id[:8]}) lives on {d.node}, not {self.node}: run the container "
                "through the shoal manager, which places it there"
            )
        return d

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("Name", "")
        intent = parse_intent(raw, self.profiles, body.get("Opts") or {})
        self.known, _ = await self.records.all()
        decision = decide(intent, self.node, self.known, new_ids(), time.time(), raw, self.default_profile)
        d = decision.dataset
        if d.node != self.node:
            raise ShoalError(
                f"dataset {d.name or d.id[:8]} would live on {d.node} (its source's node), not {self.node}: "
                "run the container through the shoal manager, which places it there"
            )
        if decision.new:
            self.pool.check_room(d.size, d.name)
            await self.records.commit(decision.new)
        await self.converge()
        return {"Err": ""}

    async def get(self, body: dict[str, Any]) -> dict[str, Any]:
        d = await self._find(body.get("Name", ""))
        return {"Volume": self._volume(body["Name"], d), "Err": ""}

    def _volume(self, name: str, d: Dataset) -> dict[str, Any]:
        snaps = [s.id for s in self.known if s.parent == d.id and s.kind == "snapshot"]
        return {
            "Name": name,
            "Mountpoint": self.path(d),
            "Status": {
                "dataset_id": d.id,
                "profile": d.profile,
                "node": d.node,
                "size": d.size,
                "parent": d.parent,
                "snapshots": snaps,
                "pool": self.pool.kind,
                "mounts": len(self.mounts.get(d.id, [])),
            },
        }

    async def list(self, _: dict[str, Any]) -> dict[str, Any]:
        self.known, _ = await self.records.all()
        mine = [d for d in self.known if d.node == self.node and d.kind == "dataset"]
        return {
            "Volumes": [{"Name": d.volume or d.name, "Mountpoint": self.path(d)} for d in mine],
            "Err": "",
        }

    async def mount(self, body: dict[str, Any]) -> dict[str, Any]:
        d = await self._find(body.get("Name", ""))
        if not self.pool.path(d.id).exists():
            await self.converge()
        if not self.pool.path(d.id).exists():
            raise ShoalError(f"dataset {d.name} is not on this node's pool yet; see the agent's log")
        held = self.mounts.setdefault(d.id, [])
        if body.get("ID") and body["ID"] not in held:
            held.append(body["ID"])
            await self.records.set_mounts(self.node, d.id, held)
        return {"Mountpoint": self.path(d), "Err": ""}

    async def unmount(self, body: dict[str, Any]) -> dict[str, Any]:
        d = await self._find(body.get("Name", ""))
        held = self.mounts.get(d.id, [])
        if body.get("ID") in held:
            held.remove(body["ID"])
            await self.records.set_mounts(self.node, d.id, held)
        return {"Err": ""}

    async def path_of(self, body: dict[str, Any]) -> dict[str, Any]:
        d = await self._find(body.get("Name", ""))  # the path holds whenever the dataset is on the pool
        return {"Mountpoint": self.path(d) if self.pool.path(d.id).exists() else "", "Err": ""}

    async def remove(self, body: dict[str, Any]) -> dict[str, Any]:
        d = await self._find(body.get("Name", ""))
        check_remove(d, self.known, len(self.mounts.get(d.id, [])))
        await self.records.remove(d)
        await self.converge()
        return {"Err": ""}
