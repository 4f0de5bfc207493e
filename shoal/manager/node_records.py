"""Dataset record writes asked by a node's agent (issue 13: an agent's registry token touches no dataset
record): the agent sends each write to the manager's join listener with its node certificate, and the
manager checks that the node may make it before writing with its own token.

What a node may write is what its own datasets need, and nothing about another node's:
- commit / publish / remove: records that name the node as theirs, over no record that names another;
- request_deletion: of a dataset whose record names the node (its plugin's `docker volume rm`);
- refuse_deletion / withdraw_deletion / forget: only a deletion request addressed to the node (forget is
  what the node does after deleting on such a request; the request's chain passes on to the next replica);
- replica_status: the node's own status row of a dataset it is assigned a replica of.
A node that asks for more is refused (PermissionDenied, 403) and nothing is written: a forged request from
a node's credentials can never delete or take over another node's data.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shoal.data.model import Dataset, Deletion, Refused, is_dataset_id, parse_deletion, parse_record
from shoal.data.moves import parse_status
from shoal.errors import BadRequest, Conflict, NotFound, PermissionDenied
from shoal.logs import kv

if TYPE_CHECKING:
    from shoal.data.records import Records
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager.node_records")
OPS = (
    "commit", "publish", "remove", "request_deletion", "refuse_deletion", "withdraw_deletion", "forget",
    "replica_status",
)  # fmt: skip
MAX_COMMIT = 16  # records one commit makes (a clone of a snapshot of ...: a handful)


def _dataset(doc: object, what: str = "dataset") -> Dataset:
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be a dataset record (a JSON object)")
    got = parse_record(str(doc.get("id", "")), doc)
    if isinstance(got, Refused):
        raise BadRequest(f"{what} is not a dataset record: {got.reason}")
    return got


def _deletion(doc: object) -> Deletion:
    if not isinstance(doc, dict):
        raise BadRequest("deletion must be a deletion request (a JSON object)")
    got = parse_deletion(str(doc.get("id", "")), doc)
    if isinstance(got, Refused):
        raise BadRequest(f"deletion is not a deletion request: {got.reason}")
    return got


def _text(body: dict[str, Any], name: str, limit: int = 512) -> str:
    value = body.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{name} must be a string of at most {limit} characters")
    return value


class NodeRecords:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    @property
    def _records(self) -> Records:
        return self.m.cluster.records

    async def apply(self, node: str, op: str, body: object) -> dict[str, Any]:
        """Carries out one write `node` asked for, after checking it may; returns what the agent's Records
        method returns, as JSON."""
        if op not in OPS:
            raise NotFound(f"no record operation {op!r}: one of {', '.join(OPS)}")
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        out = await getattr(self, f"_{op}")(node, body)
        kv(log, "node record write", node=node, op=op)
        return out

    async def _own(self, node: str, d: Dataset, index: int | None = None) -> None:
        """`d` names `node`, and the record stored under its id (if any) does too. With `index` (a publish
        compared on the modify index the node read): a record that names another node and changed since is
        a Conflict, as the compare itself would answer; one that has not changed is another node's."""
        if d.node != node:
            raise PermissionDenied(
                f"node {node} may write the records of its own datasets, not of {d.node}'s"
            )
        stored, stored_index = await self._records.record(d.id)
        if stored is not None and stored.node != node:
            if index is not None and index != stored_index:  # moved away since the node read it
                raise Conflict(f"the record of {d.id} changed since it was read; planned again")
            raise PermissionDenied(f"dataset {d.id} is {stored.node}'s; node {node} may not write its record")

    async def _addressed(self, node: str, dataset_id: str) -> Deletion:
        """The deletion request of `dataset_id`, which must be addressed to `node`."""
        request, _ = await self._records.deletion(dataset_id)
        if request is None:
            raise PermissionDenied(f"node {node} was not asked to delete {dataset_id} (no deletion request)")
        if request.node != node:
            raise PermissionDenied(f"the deletion request of {dataset_id} is for {request.node}, not {node}")
        return request

    async def _commit(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        new = body.get("new")
        if not isinstance(new, list) or not 0 < len(new) <= MAX_COMMIT:
            raise BadRequest(f"new must be a list of 1 to {MAX_COMMIT} dataset records")
        datasets = tuple(_dataset(d, "each of new") for d in new)
        for d in datasets:
            await self._own(node, d)
        await self._records.commit(datasets)
        return {}

    async def _publish(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        d = _dataset(body.get("dataset"))
        index = body.get("index")
        if index is not None and not (isinstance(index, int) and not isinstance(index, bool) and index >= 0):
            raise BadRequest("index must be a modify index (a whole number) or null")
        await self._own(node, d, index)
        return {"dataset": (await self._records.publish(d, index)).to_dict()}

    async def _remove(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        d = _dataset(body.get("dataset"))
        await self._own(node, d)
        await self._records.remove(d)
        return {}

    async def _request_deletion(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        request = _deletion(body.get("deletion"))
        stored, _ = await self._records.record(request.id)
        if request.node != node or stored is None or stored.node != node:
            raise PermissionDenied(f"node {node} may ask to delete its own datasets only")
        await self._records.request_deletion(request)
        return {}

    async def _refuse_deletion(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        request = await self._addressed(node, _deletion(body.get("deletion")).id)
        await self._records.refuse_deletion(request, _text(body, "reason"))
        return {}

    async def _withdraw_deletion(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        dataset_id = _text(body, "id", 64)
        await self._addressed(node, dataset_id)
        await self._records.withdraw_deletion(dataset_id)
        return {}

    async def _forget(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        """Only the id and name count (what the node knows of a dataset it deleted may be its pool's
        partial record): the name is released only while it still names this id."""
        dataset_id, name = _text(body, "id", 64), _text(body, "name", 256)
        if not is_dataset_id(dataset_id):
            raise BadRequest(f"id {dataset_id[:64]!r} is not a dataset id")
        await self._addressed(node, dataset_id)
        await self._records.forget(node, Dataset(dataset_id, name, "", node))
        return {}

    async def _replica_status(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        dataset_id, status, receiving = (
            _text(body, "id", 64),
            body.get("status"),
            body.get("receiving", False),
        )
        if parse_status(node, status) is None or not isinstance(receiving, bool):
            raise BadRequest("status must be a replica status (snapshot, taken, synced, bytes, error)")
        assert isinstance(status, dict)
        assigned, _ = await self._records.replicas(dataset_id)
        if assigned is None or node not in assigned.nodes:
            move, _ = await self._records.move(dataset_id)
            if move is None or move.target != node:
                raise PermissionDenied(f"node {node} holds no replica of {dataset_id} and is not moving it")
        await self._records.set_replica_status(dataset_id, node, status, receiving=receiving)
        return {}
