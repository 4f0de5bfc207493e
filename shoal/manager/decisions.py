"""Decisions as records, kept so `shoal why` and the dashboard still answer after a manager restart.

Placements: what a create asked, what the scheduler decided and why (pure `decision_record`), kept in
memory (the last 200, refusals included) and in the registry under `keys.decision(container)`.

Moves, promotions, replica assignments, reschedules and drains: what was done and its reasons as data
(pure `event_record`), shaped as placements are so the dashboard shows them in the same table, kept in
memory beside the placements and in the registry's decision log, `keys.decision_log(kind, time, id)`:
the newest LOG_KEEP of each kind (older ones are deleted as new ones land), so the log stays small
however long the cluster runs. `shoal why DATASET` shows a dataset's latest move or promotion from it
(its latest replica assignment if it never moved).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from shoal import keys
from shoal.data.model import Dataset, find
from shoal.errors import Ambiguous, NotFound, ShoalError
from shoal.logs import kv
from shoal.scheduler.model import ContainerSpec, Placement

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager")
KEEP = 200
LOG_KEEP = 50  # logged decisions kept per kind in the registry
LOG_KINDS = ("move", "promote", "replica", "reschedule", "drain")
DATASET_KINDS = ("move", "promote")  # what `shoal why DATASET` shows first; else its latest "replica"
LOG_FRESH = 10.0  # seconds the dashboard's copy of the log is used before it is read again


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


def event_record(
    kind: str,
    subject: str,
    target: str | None,
    reasons: Sequence[str],
    now: float,
    datasets: Sequence[str] = (),
    source: str = "",
    dataset_id: str = "",
) -> dict[str, Any]:
    """A move, promotion, replica assignment, reschedule or drain as a decision record (pure): its kind,
    subject (dataset, container or node name), source and target nodes (target None: nothing went
    anywhere, e.g. a move undone), the dataset's id and the reasons, as data. It carries the placement's
    shape too (the reasons as lines under the source node), so the dashboard shows it beside placements."""
    return {
        "id": uuid.uuid4().hex[:12],
        "kind": kind,
        "name": subject,
        "container": None,
        "dataset": dataset_id,
        "source": source,
        "target": target,
        "time": now,
        "reasons": list(reasons),
        "request": {"name": subject, "image": kind, "expressions": [], "datasets": list(datasets)},
        "placement": {
            "node": target,
            "candidates": 0,
            "steps": [],
            "strategy": kind,
            "rejected": [{"node": source or "-", "filter": kind, "reason": r} for r in reasons],
            "rejected_total": len(reasons),
        },
    }


def log_key(record: dict[str, Any]) -> str:
    """Where a logged decision lives: its kind, then its time, so a kind's keys sort oldest first."""
    return keys.decision_log(str(record["kind"]), max(0.0, float(record["time"])), str(record["id"]))


def to_prune(log_keys: Iterable[str], keep: int = LOG_KEEP) -> list[str]:
    """The logged decisions past the newest `keep` of each kind (pure)."""
    by_kind: dict[str, list[str]] = {}
    for k in log_keys:
        kind = k.removeprefix(keys.DECISION_LOG).partition("/")[0]
        by_kind.setdefault(kind, []).append(k)
    out: list[str] = []
    for ks in by_kind.values():
        ks.sort()
        out += ks[: max(0, len(ks) - keep)]
    return sorted(out)


def newest_first(*groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records from memory and from the registry's log (each oldest first) as one list, each once (by
    id), newest first (pure; of records of equal time, the one that came in later is first)."""
    seen: dict[str, dict[str, Any]] = {}
    for group in groups:
        for r in group:
            seen.setdefault(str(r.get("id")), r)
    ordered = list(seen.values())
    ordered.reverse()
    ordered.sort(key=lambda r: -float(r.get("time") or 0.0))
    return ordered


def latest_of_dataset(records: Iterable[dict[str, Any]], dataset_id: str) -> dict[str, Any] | None:
    """The decision `shoal why DATASET` shows (pure): the dataset's newest move (done or undone) or
    promotion; if it never had one, its newest replica assignment; else None."""
    mine = [r for r in records if r.get("dataset") == dataset_id and r.get("kind") in LOG_KINDS]
    for kinds in (DATASET_KINDS, ("replica",)):
        hits = [r for r in mine if r.get("kind") in kinds]
        if hits:
            return max(hits, key=lambda r: float(r.get("time") or 0.0))
    return None


def _dataset_or_none(datasets: Iterable[Dataset], ref: str) -> Dataset | None:
    """The dataset `ref` names, if it names one (an ambiguous id prefix names none: it may be a
    container's)."""
    with contextlib.suppress(ShoalError):
        d = find(datasets, ref)
        return d if d.kind == "dataset" else None
    return None


class Decisions:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self._recent: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._storing: set[asyncio.Task[None]] = set()
        self._log: list[dict[str, Any]] = []  # the registry's decision log, as last read (oldest first)
        self._log_read = -math.inf  # when (monotonic)
        self._reading: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # no event loop (plain tests): read on first use
            self._reading = asyncio.get_running_loop().create_task(self._first_read())

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

    async def event(self, record: dict[str, Any]) -> None:
        """A move, promotion, replica assignment, reschedule or drain (an `event_record`): kept, and
        logged in the registry before this returns (a move's answer means its record outlives this
        manager), the kind's oldest beyond LOG_KEEP deleted. A registry away loses only the durable copy:
        logged as a warning, never failing the move or reschedule it describes."""
        self._recent.append(record)
        c = self.manager.cluster
        try:
            await c.client.put(log_key(record), record)
            pairs, _ = await c.client.list_prefix(keys.decision_log(str(record["kind"])))
            for k in to_prune(p.key for p in pairs):
                await c.client.delete(k)
        except ShoalError as e:
            kv(log, "decision not logged", logging.WARNING, kind=record.get("kind"), name=record.get("name"),
               decision=record.get("id"), error=e.message)  # fmt: skip

    async def _read_log(self) -> list[dict[str, Any]]:
        """Every logged decision (oldest first), read now; kept for `recent`."""
        pairs, _ = await self.manager.cluster.client.list_prefix(keys.DECISION_LOG)
        got = [r for p in sorted(pairs, key=lambda p: p.key.rpartition("/")[2]) if _is_event(r := p.json())]
        self._log, self._log_read = got, time.monotonic()
        return got

    async def _first_read(self) -> None:
        """A manager that starts shows the decisions its predecessors logged (the registry may not answer
        yet: tried again, a few seconds apart)."""
        for _ in range(30):
            try:
                await self._read_log()
                return
            except (ShoalError, OSError):
                await asyncio.sleep(2.0)

    def _read_soon(self) -> None:
        """The dashboard's copy of the log read again once it is LOG_FRESH old (another manager may have
        logged since), in the background: `recent` answers at once with what it has."""
        if time.monotonic() - self._log_read < LOG_FRESH or (self._reading and not self._reading.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        async def read() -> None:
            with contextlib.suppress(ShoalError, OSError):
                await self._read_log()

        self._log_read = time.monotonic()  # one read per LOG_FRESH, even if it fails
        self._reading = loop.create_task(read())

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first: refusals, placements and the logged moves, promotions, reschedules and drains
        (those of earlier managers too)."""
        self._read_soon()
        out = newest_first(self._log, self._recent)
        return out[:limit] if limit is not None else out

    async def of(self, ref: str) -> dict[str, Any]:
        """Why a container is where it is, or what last moved a dataset. `ref` may name both (a redis
        container and its dataset `redis`): the container's placement, with the dataset's latest decision
        under "dataset_decision"."""
        c = self.manager.cluster
        ds = _dataset_or_none(c.datasets, ref)
        cid = None
        if ds is None:
            try:
                cid = (await c.find(ref)).id
            except NotFound as e:
                raise NotFound(f"{e.message} (and no dataset is named so or has an id starting so)") from None
        else:  # a dataset's name: a container of that name only if the cache knows it (no resync)
            with contextlib.suppress(NotFound, Ambiguous):
                cid = c.locate(ref).id
        placement = await self._placement(cid) if cid else None
        data = await self.of_dataset(ds) if ds is not None else None
        if placement is not None:
            return {**placement, "dataset_decision": data} if data else placement
        if data is not None:
            return data
        if cid is None and ds is not None:
            raise NotFound(
                f"no move, promotion or replica assignment of dataset {ds.name} ({ds.id[:8]}) is recorded: "
                f"it is where it was created, on {ds.node} (or its last one is older than the newest "
                f"{LOG_KEEP} of its kind)"
            )
        raise NotFound(
            f"no placement decision is recorded for {ref}: it was not created through the shoal manager "
            "(it was made on its node directly)"
        )

    async def _placement(self, cid: str) -> dict[str, Any] | None:
        """A container's placement: from memory, else from the registry (it outlives a restart)."""
        for d in reversed(self._recent):
            if d.get("container") == cid:
                return d
        stored = await self.manager.cluster.client.get_json(keys.decision(cid))
        return stored if isinstance(stored, dict) else None

    async def of_dataset(self, d: Dataset) -> dict[str, Any] | None:
        """The dataset's latest move or promotion (else replica assignment), from memory and the log as
        the registry holds it now (what this manager's predecessors and peers decided too)."""
        logged = self._log
        with contextlib.suppress(ShoalError, OSError):
            logged = await self._read_log()
        return latest_of_dataset(newest_first(logged, self._recent), d.id)


def _is_event(r: Any) -> bool:
    return isinstance(r, dict) and r.get("kind") in LOG_KINDS and isinstance(r.get("id"), str)
