"""Dataset records in the registry, shared by the manager, the agents and the CLI (keys in shoal.keys):
the record of each dataset, its name's claim (cas=0, so two creators of one name cannot both win), and
the mount ids holding it on a node."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from shoal import keys
from shoal.data.model import Dataset
from shoal.errors import Conflict
from shoal.registry.client import RegistryClient


def new_ids() -> Iterator[str]:
    """Fresh dataset ids for the pure decisions to take from (the randomness stays out here)."""
    while True:
        yield str(uuid.uuid4())


class Records:
    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry

    async def all(self, index: int = 0, wait: float = 30.0) -> tuple[list[Dataset], int]:
        pairs, new_index = await self.registry.list_prefix(keys.DATASETS, index=index, wait=wait)
        out = []
        for p in pairs:
            doc = p.json()
            if isinstance(doc, dict):
                out.append(Dataset.from_dict(doc))
        return out, new_index

    async def commit(self, new: tuple[Dataset, ...]) -> None:
        """Writes a decision's records; a name someone else claimed first is a Conflict, and what this
        call wrote is taken back (nothing half-made)."""
        done: list[Dataset] = []
        try:
            for d in new:
                if d.name and not await self.registry.put(keys.dataset_name(d.name), d.id, cas=0):
                    raise Conflict(f"dataset name {d.name} was taken meanwhile; try again")
                await self.registry.put(keys.dataset(d.id), d.to_dict())
                done.append(d)
        except BaseException:
            for d in reversed(done):
                await self.remove(d)
            raise

    async def remove(self, d: Dataset) -> None:
        await self.registry.delete(keys.dataset(d.id))
        if d.name:
            owner = await self.registry.get(keys.dataset_name(d.name))
            if owner is None or owner.text() in (d.id, ""):
                await self.registry.delete(keys.dataset_name(d.name))

    async def mounts(self, node: str) -> dict[str, list[str]]:
        pairs, _ = await self.registry.list_prefix(keys.node_mounts(node))
        return {keys.last_part(p.key): list(p.json() or []) for p in pairs if p.value}

    async def all_mounts(self) -> dict[str, int]:
        """dataset id -> how many mounts hold it, over every node."""
        pairs, _ = await self.registry.list_prefix(keys.MOUNTS)
        return {keys.last_part(p.key): len(p.json() or []) for p in pairs if p.value}

    async def set_mounts(self, node: str, dataset_id: str, ids: list[str]) -> None:
        if ids:
            await self.registry.put(keys.mounts(node, dataset_id), ids)
        else:
            await self.registry.delete(keys.mounts(node, dataset_id))
