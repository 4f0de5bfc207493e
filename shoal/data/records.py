"""Dataset records in the registry, shared by the manager, the agents and the CLI (keys in shoal.keys):
the record of each dataset (the cluster's view; each node's pool holds the truth and re-publishes what
the registry lost), its name's claim (cas=0, so two creators of one name cannot both win), the mount ids
holding it on a node, the deletion requests, and each node's data report (what it refused, what fails).

Every record read here is checked (shoal.data.model.parse_record): a forged or broken one is returned as
Refused, never as a Dataset, so no caller can act on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from shoal import keys
from shoal.data.model import Dataset, Deletion, Refused, parse_deletion, parse_record
from shoal.data.moves import Move, Replicas, ReplicaStatus, parse_move, parse_replicas, parse_status
from shoal.data.plan import Cluster
from shoal.errors import Conflict
from shoal.registry.client import KVPair, RegistryClient


def new_ids() -> Iterator[str]:
    """Fresh dataset ids for the pure decisions to take from (the randomness stays out here)."""
    while True:
        yield str(uuid.uuid4())


def _ids(p: KVPair) -> list[str]:
    v = p.json()
    return [str(x) for x in v] if isinstance(v, list) else []


def _suffix(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def datasets_of(pairs: list[KVPair]) -> tuple[list[Dataset], list[Refused]]:
    """The records under shoal/datasets/, checked: the usable ones and the refused ones (pure)."""
    good, refused = [], []
    for p in pairs:
        got = parse_record(_suffix(p.key, keys.DATASETS), p.json())
        (refused if isinstance(got, Refused) else good).append(got)
    return good, refused  # type: ignore[return-value]


class Records:
    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry

    # --- reads ------------------------------------------------------------------------------------

    async def all(self, index: int = 0, wait: float = 30.0) -> tuple[list[Dataset], int]:
        """Every usable record (forged ones left out), and the index to block on for the next change."""
        pairs, new_index = await self.registry.list_prefix(keys.DATASETS, index=index, wait=wait)
        return datasets_of(pairs)[0], new_index

    async def cluster(self) -> Cluster:
        """Everything the agent plans from: records, name claims, deletion requests, refusals."""
        pairs, _ = await self.registry.list_prefix(keys.DATASETS)
        good, refused = datasets_of(pairs)
        names = {
            _suffix(p.key, keys.DATASET_NAMES): p.text()
            for p in (await self.registry.list_prefix(keys.DATASET_NAMES))[0]
        }
        deletions = {}
        for p in (await self.registry.list_prefix(keys.DELETIONS))[0]:
            got = parse_deletion(_suffix(p.key, keys.DELETIONS), p.json())
            if isinstance(got, Refused):
                refused.append(Refused(f"{keys.DELETIONS}{got.key}", got.reason))
            else:
                deletions[got.id] = got
        refused = [
            r if r.key.startswith(keys.DELETIONS) else replace(r, key=keys.dataset(r.key)) for r in refused
        ]
        replicas = {i: r.nodes for i, (r, _) in (await self.all_replicas()).items()}
        indexes = {_suffix(p.key, keys.DATASETS): p.modify_index for p in pairs}
        return Cluster({d.id: d for d in good}, names, deletions, tuple(refused), replicas, indexes)

    async def record(self, dataset_id: str) -> tuple[Dataset | None, int]:
        """One dataset's record (None if missing or refused) and its modify index, for a CAS on it."""
        p = await self.registry.get(keys.dataset(dataset_id))
        if p is None:
            return None, 0
        got = parse_record(dataset_id, p.json())
        return (None if isinstance(got, Refused) else got), p.modify_index

    async def move(self, dataset_id: str) -> tuple[Move | None, int]:
        p = await self.registry.get(keys.move(dataset_id))
        if p is None:
            return None, 0
        got = parse_move(dataset_id, p.json())
        return (None if isinstance(got, Refused) else got), p.modify_index

    async def all_moves(self) -> dict[str, tuple[Move, int]]:
        pairs, _ = await self.registry.list_prefix(keys.MOVES)
        out = {}
        for p in pairs:
            got = parse_move(_suffix(p.key, keys.MOVES), p.json())
            if isinstance(got, Move):
                out[got.id] = (got, p.modify_index)
        return out

    async def all_replicas(self) -> dict[str, tuple[Replicas, int]]:
        pairs, _ = await self.registry.list_prefix(keys.REPLICAS)
        out = {}
        for p in pairs:
            got = parse_replicas(_suffix(p.key, keys.REPLICAS), p.json())
            if got is not None:
                out[got.id] = (got, p.modify_index)
        return out

    async def replicas(self, dataset_id: str) -> tuple[Replicas | None, int]:
        """One dataset's replica assignment and its modify index."""
        p = await self.registry.get(keys.replicas(dataset_id))
        if p is None:
            return None, 0
        return parse_replicas(dataset_id, p.json()), p.modify_index

    async def replicas_of(self, node: str) -> list[str]:
        """The datasets `node` is assigned to keep a replica of."""
        return [i for i, (r, _) in (await self.all_replicas()).items() if node in r.nodes]

    async def replica_rows(self, now: float) -> dict[str, list[dict[str, Any]]]:
        """dataset id -> each replica's node, lag (seconds of writes it does not hold), newest copy and
        error: what `shoal volume ls|inspect` and the manager show."""
        statuses = await self.statuses()
        out: dict[str, list[dict[str, Any]]] = {}
        for i, (assigned, _) in (await self.all_replicas()).items():
            rows = []
            for n in assigned.nodes:
                st = statuses.get(i, {}).get(n)
                lag = st.lag(now) if st is not None else None
                rows.append(
                    {
                        "node": n,
                        "lag": None if lag is None else round(lag, 1),
                        "snapshot": st.snapshot if st else "",
                        "error": st.error if st else "",
                    }
                )
            out[i] = rows
        return out

    async def statuses(self) -> dict[str, dict[str, ReplicaStatus]]:
        """dataset id -> node -> what that replica last received (pulls under way under "<node>/receiving"
        are left out here; see `receiving`)."""
        pairs, _ = await self.registry.list_prefix(keys.REPLICA_STATUS)
        out: dict[str, dict[str, ReplicaStatus]] = {}
        for p in pairs:
            i, _, node = _suffix(p.key, keys.REPLICA_STATUS).partition("/")
            if "/" in node:
                continue
            got = parse_status(node, p.json())
            if got is not None:
                out.setdefault(i, {})[node] = got
        return out

    async def receiving(self, dataset_id: str) -> list[dict[str, Any]]:
        """Pulls of `dataset_id` under way (bytes, rate), as their receivers last said."""
        pairs, _ = await self.registry.list_prefix(keys.replica_status(dataset_id))
        return [d for p in pairs if p.key.endswith("/receiving") and isinstance(d := p.json(), dict)]

    async def deletion(
        self, dataset_id: str, index: int = 0, wait: float = 30.0
    ) -> tuple[Deletion | None, int]:
        pairs, new_index = await self.registry.list_prefix(keys.deletion(dataset_id), index=index, wait=wait)
        for p in pairs:
            if p.key == keys.deletion(dataset_id):
                got = parse_deletion(dataset_id, p.json())
                return (got if isinstance(got, Deletion) else None), new_index
        return None, new_index

    async def reports(self) -> dict[str, dict[str, Any]]:
        """node -> its data report (see DataService.report)."""
        pairs, _ = await self.registry.list_prefix(keys.NODES)
        out = {}
        for p in pairs:
            node, kind = keys.split_node_key(p.key)
            if kind == "data" and isinstance(doc := p.json(), dict):
                out[node] = doc
        return out

    # --- writes -------------------------------------------------------------------------------------

    async def commit(self, new: tuple[Dataset, ...]) -> None:
        """Writes a decision's records, each name claimed (cas=0) in the same transaction: a name someone
        else claimed first is a Conflict and nothing is written."""
        ops: list[dict[str, Any]] = []
        for d in new:
            if d.name:
                ops.append({"Verb": "cas", "Key": keys.dataset_name(d.name), "Value": d.id, "Index": 0})
            ops.append({"Verb": "set", "Key": keys.dataset(d.id), "Value": d.to_dict()})
        applied, errors = await self.registry.txn(ops)
        if not applied:
            failed = [ops[e["OpIndex"]]["Key"] for e in errors if isinstance(e, dict) and "OpIndex" in e]
            taken = [_suffix(k, keys.DATASET_NAMES) for k in failed if k.startswith(keys.DATASET_NAMES)]
            what = f"dataset name {', '.join(taken)} was" if taken else "the dataset records were"
            raise Conflict(f"{what} taken meanwhile; try again")

    async def remove(self, d: Dataset) -> None:
        """Takes back the records of a decision that was not carried out. This is not a deletion: a node
        that made the dataset meanwhile keeps it and re-publishes it (use request_deletion to delete)."""
        await self.registry.delete(keys.dataset(d.id))
        await self._release_name(d)

    async def _release_name(self, d: Dataset) -> None:
        if d.name:
            owner = await self.registry.get(keys.dataset_name(d.name))
            if owner is None or owner.text() in (d.id, ""):
                await self.registry.delete(keys.dataset_name(d.name))

    async def publish(self, d: Dataset, index: int | None = None) -> Dataset:
        """The node's record of its own dataset, with its name claimed in the same transaction; a name
        another dataset holds is not taken from it: the record is published with the conflict said (and a
        later round claims the name once it is free). Returns what was written.

        With `index` (the record's modify index when the round read it; 0: it had none) the write compares
        on it: a record changed meanwhile (a fence moving the dataset away) is never overwritten; a
        Conflict says so, and the next round plans again from what is there."""
        record: dict[str, Any] = {"Verb": "set", "Key": keys.dataset(d.id)}
        if index is not None:
            record = {"Verb": "cas", "Key": keys.dataset(d.id), "Index": index}
        if d.kind == "dataset" and d.name:
            key = keys.dataset_name(d.name)
            claim = {"Verb": "cas", "Key": key, "Value": d.id, "Index": 0}
            mine = replace(d, conflict="")
            applied, errors = await self.registry.txn([claim, {**record, "Value": mine.to_dict()}])
            if applied:
                return mine
            if index is not None and any(e.get("OpIndex") == 1 for e in errors if isinstance(e, dict)):
                raise Conflict(f"the record of {d.id} changed since it was read; planned again")
            held = await self.registry.get(key)
            holder = held.text() if held is not None else ""
            d = mine if holder == d.id else replace(d, conflict=f"name {d.name} is held by dataset {holder}")
            if not holder:  # released meanwhile: the next round claims it
                d = replace(d, conflict=f"name {d.name} is being claimed")
        if not await self.registry.put(keys.dataset(d.id), d.to_dict(), cas=index):
            raise Conflict(f"the record of {d.id} changed since it was read; planned again")
        return d

    async def request_deletion(self, request: Deletion) -> None:
        await self.registry.put(keys.deletion(request.id), request.to_dict())

    async def refuse_deletion(self, request: Deletion, reason: str) -> None:
        await self.registry.put(keys.deletion(request.id), replace(request, refused=reason).to_dict())

    async def withdraw_deletion(self, dataset_id: str) -> None:
        await self.registry.delete(keys.deletion(dataset_id))

    async def forget(self, node: str, d: Dataset) -> None:
        """What the registry holds of a dataset its node has deleted: record, name, mounts, the request
        (last, so a forget cut short is done again). A dataset with replicas hands the request on to the
        next replica node in turn (each deletes its copy the same way), the last one ends the chain. The
        assignment is read here, not from the round's earlier read: a node assigned meanwhile holds a copy
        too, and is reached."""
        assigned, _ = await self.replicas(d.id)
        chain = sorted(assigned.nodes) if assigned is not None else []
        after = chain[chain.index(node) + 1 :] if node in chain else chain
        if node not in chain:
            await self.registry.delete(keys.dataset(d.id))
            await self._release_name(d)
        await self.registry.delete(keys.mounts(node, d.id))
        await self.registry.delete(keys.replica_status(d.id, node))
        await self.registry.delete(keys.receiving(d.id, node))
        if after:
            request = Deletion(d.id, after[0], d.name, "a deleted dataset's replica", time.time())
            await self.registry.put(keys.deletion(d.id), request.to_dict())
            return
        await self.registry.delete(keys.replicas(d.id))
        await self.registry.delete(keys.deletion(d.id))

    async def set_replica_status(
        self, dataset_id: str, node: str, status: dict[str, Any], *, receiving: bool = False
    ) -> None:
        """What `node` last received of `dataset_id` (or, `receiving`, how far its pull under way is)."""
        await self.registry.put(
            keys.receiving(dataset_id, node) if receiving else keys.replica_status(dataset_id, node), status
        )

    async def report(self, node: str, doc: dict[str, Any]) -> None:
        await self.registry.put(keys.node_data(node), doc)

    # --- mounts -------------------------------------------------------------------------------------

    async def mounts(self, node: str) -> dict[str, list[str]]:
        pairs, _ = await self.registry.list_prefix(keys.node_mounts(node))
        return {keys.last_part(p.key): _ids(p) for p in pairs if p.value}

    async def all_mounts(self) -> dict[str, int]:
        """dataset id -> how many mounts hold it, over every node."""
        pairs, _ = await self.registry.list_prefix(keys.MOUNTS)
        return {keys.last_part(p.key): len(_ids(p)) for p in pairs if p.value}

    async def set_mounts(self, node: str, dataset_id: str, ids: list[str]) -> None:
        if ids:
            await self.registry.put(keys.mounts(node, dataset_id), ids)
        else:
            await self.registry.delete(keys.mounts(node, dataset_id))
