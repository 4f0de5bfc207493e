"""Placement decisions as records: what a create asked, what the scheduler decided and why (pure
`decision_record`), kept in memory (the last 200, refusals included) and in the registry under
`keys.decision(container)` so `shoal why` still answers after a manager restart."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shoal import keys
from shoal.data.model import Dataset
from shoal.errors import NotFound, ShoalError
from shoal.logs import kv
from shoal.scheduler.model import ContainerSpec, Placement

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager")
KEEP = 200


def decision_record(
    name: str, spec: ContainerSpec, p: Placement, now: float, datasets: Sequence[Dataset] = ()
) -> dict[str, Any]:
    """What was asked and what was decided, as the dashboard and `shoal why` render it."""
    request: dict[str, Any] = {
        "name": name,
        "image": spec.image,
        "expressions": list(p.expressions),
        "memory": spec.memory,
        "cpus": spec.cpus,
        "ports": [f"{a}/{b}" for a, b in spec.ports],
        "volumes": list(spec.volumes),
        "networks": list(spec.networks),
    }
    if datasets:
        request["datasets"] = [f"{d.name}@{d.profile} ({d.id[:8]})" for d in datasets]
    return {
        "id": uuid.uuid4().hex[:12],
        "request": request,
        "placement": p.to_dict(),
        "time": now,
        "container": None,
        "name": name,
    }


class Decisions:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self._recent: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._storing: set[asyncio.Task[None]] = set()

    def refused(self, record: dict[str, Any]) -> None:
        self._recent.append(record)

    def made(self, record: dict[str, Any], container_id: str) -> None:
        """A decision that made a container: kept, and stored in the registry in the background (a slow
        registry must not slow the create; the record is there for `why` as soon as it lands)."""
        done = {**record, "container": container_id}
        self._recent.append(done)
        task = asyncio.get_running_loop().create_task(self._store(container_id, done))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _store(self, container_id: str, record: dict[str, Any]) -> None:
        try:
            await self.manager.cluster.client.put(keys.decision(container_id), record)
        except ShoalError as e:
            kv(log, "decision not stored", logging.WARNING, container=container_id[:12],
               decision=record.get("id"), error=e.message)  # fmt: skip

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first, refusals included."""
        out = list(reversed(self._recent))
        return out[:limit] if limit is not None else out

    async def of(self, ref: str) -> dict[str, Any]:
        """Why a container is where it is: from memory, else from the registry (it outlives a restart)."""
        cid = (await self.manager.cluster.find(ref)).id
        for d in reversed(self._recent):
            if d.get("container") == cid:
                return d
        stored = await self.manager.cluster.client.get_json(keys.decision(cid))
        if isinstance(stored, dict):
            return stored
        raise NotFound(
            f"no placement decision is recorded for {ref}: it was not created through the shoal manager "
            "(it was made on its node directly)"
        )
