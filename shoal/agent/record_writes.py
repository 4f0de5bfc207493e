"""The dataset records a joined agent writes, sent to the manager's join listener with the node
certificate (shoal.manager.node_records checks each one and writes it) instead of to the registry: a
node's registry token can then touch no dataset record at all, and a node's credentials can ask only for
what its own datasets need. Reads still go to the registry. An agent that did not join (a plain
cluster, no ACLs) writes its records itself (shoal.data.records.Records).

A manager that does not answer is RegistryUnreachable to the callers, as the registry itself would be:
they back off and try again, and the plugin's calls answer "try again". With several managers (`manager`
a comma-separated list), a write whose connection could not be made goes at once to the next, and the
writes stay on the one that answered; one that failed after it was sent is not sent again (it may have
been applied): it raises, and the next write goes to the next manager."""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from shoal.agent.join import managers
from shoal.data.model import Dataset, Deletion
from shoal.data.records import Records
from shoal.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PermissionDenied,
    RegistryUnreachable,
    ShoalError,
)
from shoal.registry.client import CONNECT, RegistryClient, Rotation, first_answer

TIMEOUT = aiohttp.ClientTimeout(total=30.0, sock_connect=CONNECT)
_BY_STATUS: dict[int, type[ShoalError]] = {
    400: BadRequest,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
}


class ManagerRecords(Records):
    def __init__(
        self, registry: RegistryClient, session: aiohttp.ClientSession, manager: str, tls: ssl.SSLContext
    ) -> None:
        super().__init__(registry)
        self._session = session
        self._managers = Rotation(managers(manager))
        self._tls = tls  # the node certificate's client context (reloaded in place on renewal)

    async def _write(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        async def attempt(base: str) -> tuple[int, bytes]:
            url = f"{base}/shoal/v1/records/{op}"
            async with self._session.post(url, json=body, ssl=self._tls, timeout=TIMEOUT) as r:
                return r.status, await r.read()

        base, (status, raw) = await first_answer(self._managers, attempt, read=False, what="manager")
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise RegistryUnreachable(
                f"the manager at {base} answered {status} to {op} with no JSON"
            ) from None
        if status < 300:
            return data if isinstance(data, dict) else {}
        message = data.get("message", "") if isinstance(data, dict) else ""
        message = message or f"the manager answered {status} to {op}"
        if status >= 500:
            raise RegistryUnreachable(f"the manager could not write the record: {message}")
        raise _BY_STATUS.get(status, ShoalError)(message)

    async def commit(self, new: tuple[Dataset, ...]) -> None:
        await self._write("commit", {"new": [d.to_dict() for d in new]})

    async def remove(self, d: Dataset) -> None:
        await self._write("remove", {"dataset": d.to_dict()})

    async def publish(self, d: Dataset, index: int | None = None) -> Dataset:
        got = await self._write("publish", {"dataset": d.to_dict(), "index": index})
        return Dataset.from_dict(got["dataset"]) if isinstance(got.get("dataset"), dict) else d

    async def request_deletion(self, request: Deletion) -> None:
        await self._write("request_deletion", {"deletion": request.to_dict()})

    async def refuse_deletion(self, request: Deletion, reason: str) -> None:
        await self._write("refuse_deletion", {"deletion": request.to_dict(), "reason": reason[:512]})

    async def withdraw_deletion(self, dataset_id: str) -> None:
        await self._write("withdraw_deletion", {"id": dataset_id})

    async def forget(self, node: str, d: Dataset) -> None:
        await self._write("forget", {"id": d.id, "name": d.name})

    async def set_replica_status(
        self, dataset_id: str, node: str, status: dict[str, Any], *, receiving: bool = False
    ) -> None:
        await self._write("replica_status", {"id": dataset_id, "status": status, "receiving": receiving})
