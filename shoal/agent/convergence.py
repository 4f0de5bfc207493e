"""The node's dataset convergence, a loop in Flocker's sense: discover (the registry's view, the pool, which
containers the engine has) → plan (shoal.data.plan, pure) → apply, again and again.

It runs again at once when the registry's dataset records, name claims or deletion requests change (a
blocking query on each), and otherwise on a timer with jitter (so a registry restarted empty, whose index
does not move, is still noticed). A step that fails is held back with its own backoff (1 s, 2 s, 4 s, ...
up to a minute) and retried, never forgotten until the next change, and never holds up the other
datasets; a registry that does not answer backs the whole loop off. When nothing is left to do the loop
sleeps (Flocker's `NoOp(sleep=...)`). Log lines are `key=value` (shoal.logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal import keys
from shoal.data.model import Dataset, containers_using
from shoal.data.plan import POOL_OPS, Cluster, Plan, PoolState, Step, plan
from shoal.errors import RegistryUnreachable
from shoal.logs import kv

if TYPE_CHECKING:
    from shoal.agent.datasets import DataService

log = logging.getLogger("shoal.agent.convergence")
RESYNC_EVERY = 10.0  # seconds between rounds when nothing changes (±20% jitter)
STEP_BACKOFF = (1.0, 60.0)  # a failed step's first delay and the most it grows to
REGISTRY_BACKOFF = (0.5, 10.0)
BUSY_ROUNDS = 5  # rounds in a row that still find steps to do before the loop slows down
WATCHED = (keys.DATASETS, keys.DATASET_NAMES, keys.DELETIONS, keys.REPLICAS)


def jittered(seconds: float, rand: Callable[[], float] = random.random) -> float:
    return seconds * (0.8 + 0.4 * rand())


def _log(level: int, event: str, **fields: object) -> None:
    kv(log, event, level, **fields)


@dataclass(frozen=True, slots=True)
class Failure:
    """A step that failed: what, why, how often, and when it is tried again."""

    step: Step
    error: str
    attempts: int
    retry_at: float


def failed(prev: Failure | None, step: Step, error: str, now: float, rand: float) -> Failure:
    """The next Failure of a step: its backoff doubles per attempt, up to the cap, with jitter (pure)."""
    attempts = (prev.attempts if prev is not None else 0) + 1
    first, cap = STEP_BACKOFF
    delay = min(cap, first * 2 ** (attempts - 1)) * (0.8 + 0.4 * rand)
    return Failure(step, error, attempts, now + delay)


def users_of(
    pool: PoolState,
    containers: list[Mapping[str, Any]] | None,
    mounts: Mapping[str, list[str]],
    path: Callable[[str], str],
) -> dict[str, tuple[str, ...]] | None:
    """Which containers on the engine use each dataset on the pool, and which mounts the plugin handed
    out (pure); None when the engine did not answer (nothing is deleted without asking it)."""
    if containers is None:
        return None
    out: dict[str, tuple[str, ...]] = {}
    for i in set(pool.datasets) | set(pool.pending) | set(pool.deleting):
        rec = pool.datasets[i].record if i in pool.datasets else pool.pending.get(i) or pool.deleting.get(i)
        target = rec if rec is not None else Dataset(i, "", "", "")
        names = containers_using(target, containers, path(i))
        names += [f"mount {m[:12]}" for m in mounts.get(i, [])]
        if names:
            out[i] = tuple(names)
    return out


class Convergence:
    def __init__(self, service: DataService, resync_every: float = RESYNC_EVERY) -> None:
        self.service = service
        self.resync_every = resync_every
        self.failures: dict[str, Failure] = {}
        self.reports: tuple[str, ...] = ()
        self.last_plan: Plan | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._report_doc: dict[str, Any] | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run())]
        self._tasks += [loop.create_task(self._watch(prefix)) for prefix in WATCHED]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    def wake(self) -> None:
        self._wake.set()

    # --- one round ----------------------------------------------------------------------------------

    async def round(self) -> Plan:
        """discover → plan → apply, under the service's lock (the plugin's Mount and Remove take it too,
        so no mount slips in between a deletion's check and its step)."""
        s = self.service
        async with s.lock:
            cluster = await s.records.cluster()
            pool = await asyncio.to_thread(s.pool.discover)
            containers = await s.containers()
            now = time.time()
            users = users_of(pool, containers, s.mounts, s.path_of_id)
            held = {i for i, f in self.failures.items() if f.retry_at > now}
            p = plan(s.node, cluster, pool, users, held, now, s.default_profile)
            s.cluster, s.local = cluster, pool
            await self._apply(p, cluster)
            self.last_plan = p
            s.local = await asyncio.to_thread(s.pool.discover) if p.steps else pool
            await s.publish_mounts(cluster)
            await self._report(p)
            return p

    async def _apply(self, p: Plan, cluster: Cluster) -> None:
        s = self.service
        failed_now: set[str] = set()
        for step in p.steps:
            if step.id in failed_now or step.source in failed_now:
                continue  # a dataset's later steps, and its children's, wait for the step that failed
            try:
                if step.op in POOL_OPS:
                    await asyncio.to_thread(s.pool.apply, step)
                else:
                    await self._registry_step(step, cluster)
            except asyncio.CancelledError:
                raise
            except RegistryUnreachable:
                raise  # the whole round waits for the registry
            except Exception as e:  # one dataset's failure is held with its backoff; the others go on
                failed_now.add(step.id)
                error = str(e) or type(e).__name__
                f = failed(self.failures.get(step.id), step, error, time.time(), random.random())
                self.failures[step.id] = f
                _log(
                    logging.WARNING,
                    "step failed",
                    **step.fields(),
                    node=s.node,
                    attempt=f.attempts,
                    retry_in=f"{f.retry_at - time.time():.1f}s",
                    error=f.error,
                )
                continue
            if self.failures.pop(step.id, None) is not None:
                _log(logging.INFO, "step recovered", **step.fields(), node=s.node)
            _log(logging.INFO, "step applied", **step.fields(), node=s.node)

    async def _registry_step(self, step: Step, cluster: Cluster) -> None:
        s = self.service
        assert step.record is not None
        if step.op == "publish":
            wrote = await s.records.publish(step.record, cluster.indexes.get(step.id, 0))
            if step.reason == "recovered":
                _log(
                    logging.WARNING,
                    "dataset re-published",
                    dataset=step.id,
                    name=wrote.name,
                    kind=wrote.kind,
                    node=s.node,
                    reason="the registry had no record of it; the node's pool has",
                )
            if wrote.conflict:
                _log(logging.WARNING, "name conflict", dataset=step.id, node=s.node, conflict=wrote.conflict)
        elif step.op == "forget":
            await s.records.forget(s.node, step.record)
        elif step.op == "refuse":
            await s.records.refuse_deletion(cluster.deletions[step.id], step.reason)
            _log(logging.WARNING, "deletion refused", dataset=step.id, node=s.node, reason=step.reason)
        else:
            raise ValueError(f"{step} is not a step this loop knows")

    async def _report(self, p: Plan) -> None:
        """Logs what is newly wrong (or right again), and keeps the node's data report in the registry."""
        before, now = set(self.reports), set(p.reports)
        for r in sorted(now - before):
            _log(logging.WARNING, "dataset report", node=self.service.node, report=r)
        for r in sorted(before - now):
            _log(logging.INFO, "dataset report cleared", node=self.service.node, report=r)
        self.reports = p.reports
        t = time.time()
        doc = {
            "node": self.service.node,
            "pool": self.service.pool.kind,
            "reports": list(p.reports),
            "failing": [
                {
                    "dataset": i,
                    "step": str(f.step),
                    "error": f.error,
                    "attempts": f.attempts,
                    "retry_in": round(max(0.0, f.retry_at - t), 1),
                }
                for i, f in sorted(self.failures.items())
            ],
        }
        comparable = {**doc, "failing": [{**f, "retry_in": 0} for f in doc["failing"]]}
        if comparable != self._report_doc:
            await self.service.records.report(self.service.node, {**doc, "updated": t})
            self._report_doc = comparable

    # --- the loop -----------------------------------------------------------------------------------

    def _next_sleep(self, p: Plan, busy: int) -> float:
        """NoOp(sleep): the resync interval with jitter, or sooner when a held step is due; a loop that
        keeps finding work (steps that succeed but change nothing) slows down instead of spinning."""
        now = time.time()
        sleep = jittered(self.resync_every)
        if self.failures:
            sleep = min(sleep, max(0.05, min(f.retry_at for f in self.failures.values()) - now))
        if p.steps:
            sleep = 0.0 if busy < BUSY_ROUNDS else min(sleep, 0.5 * 2 ** min(busy - BUSY_ROUNDS, 5))
        return sleep

    async def _run(self) -> None:
        backoff = 0.0
        busy = 0
        while True:
            self._wake.clear()
            try:
                p = await self.round()
                if backoff:
                    _log(logging.INFO, "registry back", node=self.service.node)
                backoff = 0.0
                busy = busy + 1 if p.steps else 0
                sleep = self._next_sleep(p, busy)
            except asyncio.CancelledError:
                raise
            except RegistryUnreachable as e:
                backoff = min(REGISTRY_BACKOFF[1], backoff * 2 if backoff else REGISTRY_BACKOFF[0])
                sleep = jittered(backoff)
                _log(
                    logging.WARNING,
                    "convergence waits",
                    node=self.service.node,
                    error=e,
                    retry_in=f"{sleep:.1f}s",
                )
            except Exception as e:  # a bug or a surprise: say so and come back, never stop converging
                kv(
                    log,
                    "convergence round failed",
                    logging.ERROR,
                    exc_info=True,
                    node=self.service.node,
                    error=str(e),
                )
                backoff = min(REGISTRY_BACKOFF[1], backoff * 2 if backoff else REGISTRY_BACKOFF[0])
                sleep = jittered(backoff)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):  # not wait_for: it can drop a cancel (3.11)
                    await self._wake.wait()

    async def _watch(self, prefix: str) -> None:
        """A blocking query on `prefix`: wakes the loop when anything there changes. An index that goes
        back (a registry restarted empty) starts over from 0, as Consul's clients do."""
        index, lost = 0, False
        reg = self.service.records.registry
        while True:
            try:
                _, new = await reg.list_prefix(prefix, index=index, wait=30.0)
                if (index and new != index) or lost:
                    self.wake()
                index, lost = (0 if new < index else new), False
            except asyncio.CancelledError:
                raise
            except Exception:  # the registry away: the loop backs off on its own; look again soon
                index, lost = 0, True
                await asyncio.sleep(jittered(2.0))
