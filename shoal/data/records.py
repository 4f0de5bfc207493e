"""Dataset records in the registry (the Consul KV API), shared by the manager, the agents and the CLI.

shoal/datasets/<id>            the Dataset as JSON
shoal/dataset-names/<name>     its id; claimed with cas=0, so two creators of one name cannot both win
shoal/mounts/<node>/<id>       the mount ids (Docker's caller IDs) holding the dataset on that node
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp

from shoal.data.model import Dataset
from shoal.errors import Conflict, ShoalError

DATASETS, NAMES, MOUNTS = "shoal/datasets/", "shoal/dataset-names/", "shoal/mounts/"


def new_ids() -> Iterator[str]:
    """Fresh dataset ids for the pure decisions to take from (the randomness stays out here)."""
    while True:
        yield str(uuid.uuid4())


class Records:
    def __init__(self, registry: str, session: aiohttp.ClientSession) -> None:
        self.base = registry.rstrip("/")
        self.session = session

    async def _req(self, method: str, key: str, data: Any = None, **params: str) -> tuple[int, Any, int]:
        body = None if data is None else (data if isinstance(data, str) else json.dumps(data))
        try:
            async with self.session.request(
                method,
                f"{self.base}/v1/kv/{key}",
                data=body,
                params=params or None,
                timeout=aiohttp.ClientTimeout(total=60),
            ) as r:
                text = await r.text()
                index = int(r.headers.get("X-Consul-Index", "0"))
                if r.status >= 400 and r.status != 404:
                    raise ShoalError(f"registry {method} {key}: {r.status} {text.strip()}")
                return r.status, (json.loads(text) if text.strip() and r.status != 404 else None), index
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ShoalError(f"registry at {self.base} unreachable: {e or type(e).__name__}") from e

    async def all(self, index: int = 0, wait: str = "") -> tuple[list[Dataset], int]:
        params = {"recurse": ""}
        if index:
            params |= {"index": str(index), "wait": wait or "30s"}
        _, entries, new_index = await self._req("GET", DATASETS, **params)
        out = []
        for e in entries or []:
            if e.get("Value"):
                out.append(Dataset.from_dict(json.loads(base64.b64decode(e["Value"]))))
        return out, new_index

    async def commit(self, new: tuple[Dataset, ...]) -> None:
        """Writes a decision's records; a name someone else claimed first is a Conflict, and what this
        call wrote is taken back (nothing half-made)."""
        done: list[Dataset] = []
        try:
            for d in new:
                if d.name:
                    _, ok, _ = await self._req("PUT", NAMES + d.name, d.id, cas="0")
                    if not ok:
                        raise Conflict(f"dataset name {d.name} was taken meanwhile; try again")
                await self._req("PUT", DATASETS + d.id, d.to_dict())
                done.append(d)
        except BaseException:
            for d in reversed(done):
                await self.remove(d)
            raise

    async def remove(self, d: Dataset) -> None:
        await self._req("DELETE", DATASETS + d.id)
        if d.name:
            _, entries, _ = await self._req("GET", NAMES + d.name)
            owner = (
                base64.b64decode(entries[0]["Value"]).decode()
                if entries and entries[0].get("Value")
                else None
            )
            if owner in (d.id, None):
                await self._req("DELETE", NAMES + d.name)

    async def mounts(self, node: str) -> dict[str, list[str]]:
        _, entries, _ = await self._req("GET", f"{MOUNTS}{node}/", recurse="")
        return {
            e["Key"].rsplit("/", 1)[-1]: json.loads(base64.b64decode(e["Value"]))
            for e in entries or []
            if e.get("Value")
        }

    async def all_mounts(self) -> dict[str, int]:
        """dataset id -> how many mounts hold it, over every node."""
        _, entries, _ = await self._req("GET", MOUNTS, recurse="")
        return {
            e["Key"].rsplit("/", 1)[-1]: len(json.loads(base64.b64decode(e["Value"])))
            for e in entries or []
            if e.get("Value")
        }

    async def set_mounts(self, node: str, dataset_id: str, ids: list[str]) -> None:
        if ids:
            await self._req("PUT", f"{MOUNTS}{node}/{dataset_id}", ids)
        else:
            await self._req("DELETE", f"{MOUNTS}{node}/{dataset_id}")
