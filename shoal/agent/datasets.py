"""The node's data service: its pool (the truth about its data: every dataset and snapshot with its own
record on disk), the convergence loop that keeps the pool and the registry's records together
(shoal.agent.convergence), and the Docker volume plugin it serves (shoal.agent.plugin).

Decisions come from shoal.data (model for volume names, plan for convergence); this module is the I/O
around them. Lookups by the plugin fall back to the pool's own records when the registry does not answer,
so containers keep mounting the node's datasets while the registry is away; only what needs the cluster
(claiming a new name, recording a deletion request) waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from shoal.agent.convergence import RESYNC_EVERY, Convergence
from shoal.agent.plugin import PluginServer
from shoal.agent.transfer import Transfer, Transport
from shoal.data.model import (
    DRIVERS,
    Dataset,
    Deletion,
    Profile,
    check_remove,
    check_unused,
    containers_using,
    decide,
    matching,
    parse_intent,
)
from shoal.data.moves import COPY, serves_writable
from shoal.data.plan import Cluster, PoolState
from shoal.data.pool import ondisk
from shoal.data.pool.base import Pool
from shoal.data.records import Records, new_ids
from shoal.errors import Conflict, RegistryUnreachable, ShoalError, Unavailable
from shoal.logs import kv

log = logging.getLogger("shoal.agent.datasets")
ENGINE_TIMEOUT = 5.0


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
        engine: aiohttp.ClientSession | None = None,
        engine_base: str = "http://engine",
        resync_every: float = RESYNC_EVERY,
        transport: Transport | None = None,
    ) -> None:
        self.node = node
        self.pool = pool
        self.records = records
        self.profiles = profiles
        self.default_profile = default_profile
        self.prefix = mount_prefix
        self.engine = engine
        self.engine_base = engine_base
        self.lock = asyncio.Lock()
        self.mounts: dict[str, list[str]] = {}  # dataset id -> the mount ids dockerd holds it by
        self.cluster: Cluster | None = None  # the registry's view at the last round
        self.local: PoolState | None = None  # the pool at the last round
        self.convergence = Convergence(self, resync_every)
        self.plugin = PluginServer(self, plugins_dir)
        self.transfer = Transfer(self, transport)

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serves the plugin at once and converges in the background: a registry that is away (or empty)
        delays the records, never the node's own datasets."""
        self._bind_prefix()
        try:
            self.mounts = await self.records.mounts(self.node)
        except ShoalError as e:
            kv(log, "mounts not read", logging.WARNING, node=self.node, error=str(e))
        self.local = await asyncio.to_thread(self.pool.discover)
        await self.plugin.start()
        self.convergence.start()
        await self.transfer.start()
        kv(
            log,
            "data service started",
            node=self.node,
            drivers="/".join(DRIVERS),
            plugins=self.plugin.plugins_dir,
            pool=self.pool.root,
            kind=self.pool.kind,
            datasets=len(self.local.datasets),
        )

    async def stop(self) -> None:
        await self.plugin.stop()
        await self.transfer.stop()
        await self.convergence.stop()

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

    def path_of_id(self, dataset_id: str) -> str:
        return str(self.prefix / dataset_id)

    # --- what the loop asks of the node ------------------------------------------------------------

    async def containers(self) -> list[dict[str, Any]] | None:
        """Every container on this node's engine (running or not), or None when it does not answer."""
        if self.engine is None:
            return None
        try:
            async with self.engine.get(
                f"{self.engine_base}/v1.41/containers/json",
                params={"all": "1"},
                timeout=aiohttp.ClientTimeout(total=ENGINE_TIMEOUT),
            ) as r:
                r.raise_for_status()
                got = await r.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            kv(log, "engine not asked", logging.WARNING, node=self.node, error=str(e) or type(e).__name__)
            return None
        return [c for c in got if isinstance(c, dict)] if isinstance(got, list) else None

    async def publish_mounts(self, cluster: Cluster) -> None:
        """The mount ids this agent handed out, written again where the registry lost them."""
        if not any(self.mounts.values()):
            return
        have = await self.records.mounts(self.node)
        for i, ids in self.mounts.items():
            if ids and have.get(i) != ids and i in (self.local.datasets if self.local else {}):
                await self.records.set_mounts(self.node, i, ids)

    async def _round(self) -> None:
        """A convergence round now (the plugin's calls want their dataset made or deleted before they
        answer); a registry that is away leaves the pool as it is."""
        with contextlib.suppress(RegistryUnreachable):
            await self.convergence.round()

    # --- lookups ------------------------------------------------------------------------------------

    def _local_records(self) -> list[Dataset]:
        pool = self.local
        if pool is None:
            return []
        out = [
            replace(d.record, node=self.node)
            for d in pool.datasets.values()
            if d.record is not None and d.id not in pool.replicas
        ]
        return out + [replace(d, node=self.node) for d in pool.pending.values()]

    async def _known(self) -> list[Dataset]:
        """The registry's records, and the pool's own for what the registry does not (yet) know; when the
        registry is away, the last records seen."""
        try:
            records, _ = await self.records.all()
        except RegistryUnreachable as e:
            kv(log, "registry away; answering from the pool", logging.WARNING, node=self.node, error=str(e))
            records = list(self.cluster.records.values()) if self.cluster is not None else []
        merged = {d.id: d for d in records}
        for d in self._local_records():
            merged.setdefault(d.id, d)
        return list(merged.values())

    async def _find(self, raw: str) -> tuple[Dataset, list[Dataset]]:
        intent = parse_intent(raw, self.profiles)
        known = await self._known()
        d = matching(known, intent)
        if d is None:
            raise ShoalError(f"no such volume: {raw}")
        if d.node != self.node and not await self._arriving(d):
            raise ShoalError(
                f"dataset {d.name} ({d.id[:8]}) lives on {d.node}, not {self.node}: run the container "
                "through the shoal manager, which places it there"
            )
        return d, known

    async def _arriving(self, d: Dataset) -> bool:
        """A move of `d` to this node is under way: its containers may be created here ahead of it (they
        are started, and so mount it, only once the fence made this node's copy the writable one)."""
        try:
            move, _ = await self.records.move(d.id)
        except RegistryUnreachable:
            return False
        return move is not None and move.target == self.node

    def _not_made(self, d: Dataset) -> ShoalError:
        f = self.convergence.failures.get(d.id)
        if f is not None:
            return ShoalError(
                f"dataset {d.name or d.id} is not on {self.node}'s pool: {f.step} failed ({f.error}); "
                f"the agent tries again (attempt {f.attempts} so far, see its log)"
            )
        return ShoalError(f"dataset {d.name or d.id} is not on this node's pool yet; see the agent's log")

    # --- the plugin's calls -------------------------------------------------------------------------

    async def create(self, raw: str, opts: Mapping[str, str]) -> None:
        intent = parse_intent(raw, self.profiles, opts)
        known = await self._known()
        decision = decide(intent, self.node, known, new_ids(), time.time(), raw, self.default_profile)
        d = decision.dataset
        if d.node != self.node and not decision.new and await self._arriving(d):
            return  # a move brings it here before the container that is being created starts
        if d.node != self.node:
            raise ShoalError(
                f"dataset {d.name or d.id[:8]} would live on {d.node} (its source's node), not {self.node}: "
                "run the container through the shoal manager, which places it there"
            )
        if decision.new:
            self.pool.check_room(d.size, d.name)
            try:
                await self.records.commit(decision.new)
            except RegistryUnreachable as e:
                raise Unavailable(
                    f"{e.message}: a new dataset's name is claimed there first; try again once it answers"
                ) from None
        if not self.pool.path(d.id).is_dir():
            await self._round()
        if not self.pool.path(d.id).is_dir():
            raise self._not_made(d)

    async def _check_fence(self, d: Dataset) -> None:
        """The fence (shoal.data.moves.serves_writable): this node serves `d` writable only while the
        registry's record names it at the epoch its pool holds, and no move of it is past its copy phase.
        A registry that is away leaves the last record seen in force (the node's own, when it has none)."""
        mine = await asyncio.to_thread(ondisk.read, self.pool.records, d.id)
        if mine is None:
            return
        role, epoch = mine.role, mine.dataset.epoch
        if not serves_writable(d, self.node, role, epoch):
            raise Conflict(
                f"dataset {d.name} is not writable on {self.node}: the registry places it on {d.node} at "
                f"epoch {d.epoch}, this node holds a {role} copy at epoch {epoch}; run the container "
                "through the shoal manager"
            )
        try:
            move, _ = await self.records.move(d.id)
        except RegistryUnreachable:
            return
        if move is not None and move.phase != COPY and move.source == self.node:
            raise Conflict(
                f"dataset {d.name} is moving from {self.node} to {move.target} (phase {move.phase}); it is "
                "mounted there once the move is done"
            )

    async def mount(self, raw: str, mount_id: str) -> str:
        d, _ = await self._find(raw)
        if not self.pool.path(d.id).is_dir():
            await self._round()
            d, _ = await self._find(raw)
        await self._check_fence(d)
        async with self.lock:  # a deletion renames the dataset away under this lock: none slips through
            if not self.pool.path(d.id).is_dir():
                raise self._not_made(d)
            held = self.mounts.setdefault(d.id, [])
            changed = bool(mount_id) and mount_id not in held
            if changed:
                held.append(mount_id)
        if changed:
            await self._save_mounts(d.id)
        return self.path_of_id(d.id)

    async def unmount(self, raw: str, mount_id: str) -> None:
        d, _ = await self._find(raw)
        held = self.mounts.get(d.id, [])
        if mount_id in held:
            held.remove(mount_id)
            await self._save_mounts(d.id)

    async def _save_mounts(self, dataset_id: str) -> None:
        try:
            await self.records.set_mounts(self.node, dataset_id, list(self.mounts.get(dataset_id, [])))
        except RegistryUnreachable as e:  # the loop writes them again once the registry answers
            kv(log, "mounts not saved", logging.WARNING, node=self.node, dataset=dataset_id, error=str(e))

    async def mountpoint(self, raw: str) -> str:
        d, _ = await self._find(raw)  # the path holds whenever the dataset is on the pool
        return self.path_of_id(d.id) if self.pool.path(d.id).is_dir() else ""

    async def volume(self, raw: str) -> dict[str, Any]:
        d, known = await self._find(raw)
        snaps = [s.id for s in known if s.parent == d.id and s.kind == "snapshot"]
        return {
            "Name": raw,
            "Mountpoint": self.path_of_id(d.id),
            "Status": {
                "dataset_id": d.id,
                "profile": d.profile,
                "node": d.node,
                "size": d.size,
                "parent": d.parent,
                "snapshots": snaps,
                "pool": self.pool.kind,
                "mounts": len(self.mounts.get(d.id, [])),
                "recovered": d.recovered,
                "conflict": d.conflict,
            },
        }

    async def volumes(self) -> list[dict[str, Any]]:
        mine = [
            d for d in await self._known() if d.node == self.node and d.kind == "dataset" and not d.conflict
        ]
        return [{"Name": d.volume or d.name, "Mountpoint": self.path_of_id(d.id)} for d in mine]

    async def remove(self, raw: str) -> None:
        """`docker volume rm`: checked here (nothing made from it, no container on this engine using it),
        then written as a durable deletion request, which the loop carries out at once."""
        d, known = await self._find(raw)
        async with self.lock:
            check_remove(d, known, len(self.mounts.get(d.id, [])))
            containers = await self.containers()
            if containers is None:
                raise Unavailable(f"{self.node}'s engine did not say which containers use {raw}; try again")
            check_unused(d, containers_using(d, containers, self.path_of_id(d.id)), self.node)
            request = Deletion(d.id, self.node, d.name, "docker volume rm", time.time())
            try:
                await self.records.request_deletion(request)
            except RegistryUnreachable as e:
                raise Unavailable(f"{e.message}: a deletion is recorded there first; try again") from None
        await self._round()
        if self.pool.path(d.id).exists() or ((self.local is not None) and d.id in self.local.deleting):
            got, _ = await self.records.deletion(d.id)
            if got is not None and got.refused:
                await self.records.withdraw_deletion(d.id)
                raise Conflict(got.refused)
            f = self.convergence.failures.get(d.id)
            raise ShoalError(
                f"deletion of {d.name or d.id} is requested but not done: "
                f"{f.error if f else 'see the agent log'}; the agent tries again"
            )
