"""Dataset moves, replica promotions and replica assignment: the manager's side of shoal.data.moves.

A move (`shoal volume move`, a create placed away from its dataset, a drain) runs Flocker's two phases
between the two agents, the manager only saying what to do next and writing the records:

    begin   one transaction: the move record created (cas=0, so one move per dataset) if the dataset
            record is still the one the decision read
    copy    the target pulls a full send while the containers keep running (again while a pull is slow,
            so the last increment is small)
    final   the move record says final (the source refuses new mounts from here on), the containers that
            use the dataset on the source are stopped, the target pulls the last increment
    fence   one transaction comparing on both records: record.node = target, epoch + 1, phase fenced
    done    the target promotes its copy (a convergence round asked for at once), the source demotes its
            own (read-only, kept as a replica), each container is created again on the target through the
            ordinary create path with its name and config, started if it ran, and the move record goes

Anything that fails before the fence undoes the move (the source's copy never stopped being the writable
one; its containers are started again); after it, the move goes forward. A manager that restarts finds the
move records and does the same (`shoal.data.moves.resume`). Every move, undo and promotion is a decision
record with its reasons (`shoal why`, the dashboard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from shoal import keys, pki
from shoal.agent.transfer import Transport
from shoal.data.faults import crash_point
from shoal.data.model import Dataset, Profile, containers_using, find
from shoal.data.moves import (
    COPY,
    FENCED,
    FINAL,
    Move,
    Replicas,
    begin_ops,
    check_move,
    fence_ops,
    promotion_ops,
    replica_plan,
    replicas_wanted,
    resume,
)
from shoal.errors import BadRequest, Conflict, EngineError, NotFound, ShoalError, Unavailable
from shoal.logs import kv
from shoal.manager.decisions import event_record
from shoal.scheduler.expr import parse
from shoal.scheduler.model import ContainerSpec, Placement

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager.moves")
SLOW_PULL = 0.5  # a copy-phase pull slower than this is followed by another, so the final one is short
MAX_COPY_PULLS = 3
PULL_TIMEOUT = 3600.0
REPLICA_EVERY = 3.0  # seconds between looks at which datasets need replicas
START_RETRY_EVERY = 3.0  # seconds between tries to start a container a move left stopped
STOP_TIMEOUT = 10  # seconds a container is given to stop before a move's final phase (docker stop -t)
POLICY_LABEL = "com.docker.swarm.reschedule-policies"
SWARM_ID = "com.docker.swarm.id"


def start_soon(coro_fn) -> asyncio.Task[None] | None:
    """Starts a service's background work if an event loop runs (the manager's); none in plain tests."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.create_task(coro_fn())


def body_from_inspect(doc: dict[str, Any], device: str | None) -> dict[str, Any]:
    """A container's create request again, from its inspect: its Config, its HostConfig (the old pool
    device's I/O limits left out: the create on the target writes the target's) and its user networks."""
    cfg = dict(doc.get("Config") or {})
    if cfg.get("Hostname") == str(doc.get("Id", ""))[:12]:
        cfg.pop("Hostname")
    host = dict(doc.get("HostConfig") or {})
    for key in ("BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"):
        if device and host.get(key):
            host[key] = [e for e in host[key] if e.get("Path") != device]
    nets = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    endpoints = {n: {} for n in nets if n not in ("bridge", "host", "none")}
    body = {**cfg, "HostConfig": host}
    if endpoints:
        body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    return body


def no_copy(body: dict[str, Any], volume: str) -> dict[str, Any]:
    """The create request with dockerd's copy of the image's files into dataset `volume` turned off
    (`nocopy`): a moved container's dataset holds its data already, and the copy would mount the
    dataset on the target before the fence makes it the writable copy there (pure)."""
    host = dict(body.get("HostConfig") or {})
    binds = []
    for b in host.get("Binds") or []:
        src, _, rest = b.partition(":")
        if src.partition("@")[0] == volume and rest:
            target, _, mode = rest.partition(":")
            modes = [m for m in mode.split(",") if m] if mode else []
            b = f"{src}:{target}:{','.join([*modes, 'nocopy'] if 'nocopy' not in modes else modes)}"
        binds.append(b)
    mounts = []
    for m in host.get("Mounts") or []:
        if m.get("Type") == "volume" and str(m.get("Source", "")).partition("@")[0] == volume:
            m = {**m, "VolumeOptions": {**(m.get("VolumeOptions") or {}), "NoCopy": True}}
        mounts.append(m)
    if "Binds" in host:
        host["Binds"] = binds
    if "Mounts" in host:
        host["Mounts"] = mounts
    return {**body, "HostConfig": host}


def manager_transport(node_ca: pki.Pair | None) -> Transport:
    """The manager's side of agent streams on a secure cluster: a client certificate it signs itself with
    the node CA (kept in a private temporary directory for ssl's file API), checking each agent's node
    certificate against that CA. Without the node CA (a manager that signs no joins), none."""
    if node_ca is None:
        return Transport()
    pair = pki.issue(node_ca, "shoal-manager", client=True)
    d = pair.write(Path(tempfile.mkdtemp(prefix="shoal-manager-transfer-")), node_ca.cert)
    return Transport(client=pki.client_context(d / "ca.pem", d / "cert.pem", d / "key.pem"))


class Moves:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self._transports: dict[bool, Transport] = {}
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._since = float("inf")  # when it last took the lead: a move begun since is no dead manager's
        self._unstarted: dict[str, list[str]] = {}  # dataset id -> containers its forward could not start
        self._unplaced: dict[str, list[str]] = {}  # dataset id -> why no replica node fits, as recorded
        self._task = start_soon(self._start)

    @property
    def cluster(self):
        return self.m.cluster

    def transport(self, tls: bool) -> Transport:
        """Plain for an agent of an --insecure cluster, mutual TLS for one that serves it."""
        if tls not in self._transports:
            joins = self.m.joins
            t = manager_transport(joins.node_ca if joins is not None else None) if tls else Transport()
            if tls and not t.secure:
                raise Unavailable(
                    "the agents serve dataset streams over mutual TLS and this manager holds no node CA to "
                    "sign its client certificate (start it with --node-ca-key, as `shoal dev up` does)"
                )
            self._transports[tls] = t
        return self._transports[tls]

    def session(self, tls: bool) -> aiohttp.ClientSession:
        if tls not in self._sessions:
            self._sessions[tls] = self.transport(tls).session()
        return self._sessions[tls]

    async def _start(self) -> None:
        """Recovering interrupted moves and assigning replicas are cluster-wide: beside other managers
        the leader does them, from each takeover on."""
        if self.m.leadership.shared:
            self.m.leadership.add_task(self._lead)
            return
        await self._lead()

    async def _lead(self) -> None:
        self._since = time.time()  # as moves are stamped (Move.started)
        await asyncio.sleep(1.0)  # the cache's first look at the engines
        with contextlib.suppress(Exception):
            await self.resume_all()
        # apart: one start can wait ~15 s on a node whose plugin is away, and must not hold up replicas
        restarts = _every(START_RETRY_EVERY, self.retry_starts, "restarting stopped containers")
        starts = asyncio.get_running_loop().create_task(restarts)
        try:
            await _every(REPLICA_EVERY, self.assign_replicas, "replica assignment")
        finally:
            starts.cancel()

    # --- talking to agents ----------------------------------------------------------------------------

    async def agent(
        self, node: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        doc = await self.cluster.client.get_json(keys.node_transfer(node))
        if not isinstance(doc, dict) or not isinstance(doc.get("address"), str):
            raise Unavailable(f"{node}'s agent serves no dataset transfers (is it up? `shoal nodes`)")
        tls = doc.get("tls") is True
        url = self.transport(tls).url(doc["address"], path)
        try:
            async with self.session(tls).post(
                url, json=body or {}, timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=3.0)
            ) as r:
                got = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise Unavailable(f"{node}'s agent did not answer {path}: {e or type(e).__name__}") from e
        if status >= 300:
            msg = got.get("message", "") if isinstance(got, dict) else str(got)
            raise (Conflict if status == 409 else Unavailable if status == 503 else ShoalError)(msg)
        return got if isinstance(got, dict) else {}

    async def converge(self, node: str) -> None:
        """Asks `node`'s agent for a convergence round now (promote, demote); its own loop would anyway."""
        with contextlib.suppress(ShoalError):
            await self.agent(node, "/v1/converge", timeout=60.0)

    # --- a move ---------------------------------------------------------------------------------------

    async def move(
        self, ref: str, target: str, by: str = "shoal volume move", reasons: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Moves dataset `ref` (and the containers that use it on its node) to `target`; returns what was
        done (bytes, pulls, downtime). One move per dataset at a time."""
        c = self.cluster
        d = find(c.datasets, ref)
        record, ridx = await c.records.record(d.id)
        if record is None:
            raise NotFound(f"dataset {ref} has no record in the registry")
        moving, _ = await c.records.move(d.id)
        check_move(record, target, c.engines.keys(), moving)
        for node in (record.node, target):
            e = c.engines.get(node)
            if e is None or not e.reachable:
                raise Unavailable(f"{node} does not answer; a move needs both nodes up")
        carried = await self._carried(record)
        now = c.now()
        why = (*reasons, f"{by}: {record.name} from {record.node} to {target}")
        move = Move(
            record.id,
            record.name,
            record.node,
            target,
            COPY,
            record.epoch,
            by,
            now,
            now,
            tuple(x["name"] for x in carried.values()),
            reasons=why,
            manager=str(self.m.leadership.me.get("name", "")),
        )
        assigned = (await c.records.all_replicas()).get(record.id)
        ops = begin_ops(move, ridx, *(assigned if assigned else (None, 0)))
        applied, _ = await c.client.txn(ops)
        if not applied:
            raise Conflict(f"dataset {record.name} changed or began moving meanwhile; try again")
        await c.client.put(self._bodies_key(record.id), carried)
        kv(
            log,
            "move begun",
            dataset=record.id,
            name=record.name,
            source=record.node,
            target=target,
            by=by,
            containers=",".join(move.containers) or None,
        )
        task = asyncio.get_running_loop().create_task(self._run(move, carried))
        self._running[record.id] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._running.pop(record.id, None)

    @staticmethod
    def _bodies_key(dataset_id: str) -> str:
        """The containers a move carries (their create bodies), beside the move record."""
        return keys.move(dataset_id) + ".containers"

    async def _carried(self, record: Dataset) -> dict[str, dict[str, Any]]:
        """The containers on the dataset's node that use it: name -> {name, body, running, id}."""
        c = self.cluster
        e = c.engine(record.node)
        path = f"/flocker/{record.id}"
        out: dict[str, dict[str, Any]] = {}
        for ct in e.containers:
            if not containers_using(record, [ct], path):
                continue
            doc = await e.call("GET", f"/containers/{ct['Id']}/json")
            name = str(doc.get("Name", "")).lstrip("/")
            labels = (doc.get("Config") or {}).get("Labels") or {}
            stored = (
                await c.client.get_json(keys.reschedule(labels[SWARM_ID])) if SWARM_ID in labels else None
            )
            body = (
                stored["body"] if isinstance(stored, dict) and isinstance(stored.get("body"), dict) else None
            )
            body = body or body_from_inspect(doc, c.pool_of(record.node).get("device"))
            running = bool((doc.get("State") or {}).get("Running"))
            out[name] = {"name": name, "id": doc["Id"], "body": body, "running": running}
        return out

    async def _update(self, move: Move, **changes: Any) -> Move:
        """The move record changed (phase, progress), compared on its index: a move that someone else
        changed or undid meanwhile stops here."""
        c = self.cluster
        have, index = await c.records.move(move.id)
        if have is None or have.phase != move.phase or have.started != move.started:
            raise Conflict(f"the move of {move.name} was changed or undone meanwhile")
        new = replace(move, updated=c.now(), **changes)
        if not await c.client.put(keys.move(move.id), new.to_dict(), cas=index):
            raise Conflict(f"the move of {move.name} was changed meanwhile")
        return new

    async def _pull(self, move: Move, final: bool) -> tuple[Move, dict[str, Any]]:
        got = await self.agent(
            move.target, f"/v1/pull/{move.id}", {"source": move.source, "final": final}, timeout=PULL_TIMEOUT
        )
        sent = int(got.get("bytes", 0))
        rate = sent / max(1e-3, float(got.get("seconds", 0.0))) if sent else move.rate
        move = await self._update(move, bytes=move.bytes + sent, rate=rate, pulls=move.pulls + 1)
        return move, got

    async def _run(self, move: Move, carried: dict[str, dict[str, Any]]) -> dict[str, Any]:
        t0 = time.monotonic()
        stopped_at = 0.0
        try:
            crash_point("move-started")
            move, got = await self._pull(move, final=False)
            pulls = 1
            while float(got.get("seconds", 0.0)) > SLOW_PULL and pulls < MAX_COPY_PULLS:
                move, got = await self._pull(move, final=False)
                pulls += 1
            await self._precreate(move, carried)
            crash_point("move-copied")
            move = await self._update(move, phase=FINAL)
            stopped_at = time.monotonic()
            await self._stop(move.source, carried)
            crash_point("move-final")
            move, got = await self._pull(move, final=True)
            crash_point("move-pulled")
            move = await self._fence(move)
        except BaseException as e:
            reason = e.message if isinstance(e, ShoalError) else (str(e) or type(e).__name__)
            with contextlib.suppress(Exception):
                await self.undo(move, reason)
            raise
        crash_point("move-fenced")
        result = await self.forward(move, carried)
        result.update(
            total=round(time.monotonic() - t0, 3),
            # from the stop to the last container started again (the old ones' removal comes after)
            downtime=round(result.pop("started_at", time.monotonic()) - stopped_at, 3) if carried else 0.0,
            bytes=move.bytes,
            pulls=move.pulls,
        )
        kv(
            log,
            "move done",
            dataset=move.id,
            name=move.name,
            source=move.source,
            target=move.target,
            bytes=move.bytes,
            pulls=move.pulls,
            seconds=result["total"],
            downtime=result["downtime"],
        )
        return result

    async def _precreate(self, move: Move, carried: dict[str, dict[str, Any]]) -> None:
        """While the containers still run: each old one is renamed aside on the source and its copy is
        created (not started) on the target under its own name, so the downtime is only the last
        increment, the fence and the start. Kept beside the move record, so an undo or a resume finds
        them."""
        c = self.cluster
        src = c.engine(move.source)
        for x in carried.values():
            aside = f"{x['name']}-moving-{move.id[:8]}"
            await src.call("POST", f"/containers/{x['id']}/rename", params={"name": aside})
            x["aside"] = aside
            await c.client.put(self._bodies_key(move.id), carried)
            c.mark(move.source, {"containers"}, (x["id"],))
            await c.fresh()
            created = await self.m.containers.create(
                x["name"],
                no_copy(x["body"], move.name),
                target=move.target,
                reasons=(f"moves with dataset {move.name}",),
            )
            x["new"] = created["Id"]
            await c.client.put(self._bodies_key(move.id), carried)

    async def _stop(self, node: str, carried: dict[str, dict[str, Any]]) -> None:
        e = self.cluster.engine(node)
        for x in carried.values():
            if x["running"]:
                await e.call(
                    "POST",
                    f"/containers/{x['id']}/stop",
                    params={"t": str(STOP_TIMEOUT)},
                    timeout=STOP_TIMEOUT + 15,
                )
                self.cluster.mark(node, {"containers"}, (x["id"],))

    async def _fence(self, move: Move) -> Move:
        c = self.cluster
        record, ridx = await c.records.record(move.id)
        have, midx = await c.records.move(move.id)
        if record is None or have is None or have.phase != FINAL:
            raise Conflict(f"the move of {move.name} was changed or undone before its fence")
        assigned = (await c.records.all_replicas()).get(move.id)
        new, ops = fence_ops(record, ridx, have, midx, c.now(), *(assigned if assigned else (None, 0)))
        applied, _ = await c.client.txn(ops)
        if not applied:
            raise Conflict(f"the fence of {move.name} lost a race: its records changed meanwhile")
        self._cache_record(new)
        kv(log, "move fenced", dataset=move.id, name=move.name, node=new.node, epoch=new.epoch)
        return replace(have, phase=FENCED)

    def _cache_record(self, new: Dataset) -> None:
        c = self.cluster
        c.datasets = [new if d.id == new.id else d for d in c.datasets]
        c.reindex()

    async def forward(self, move: Move, carried: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """After the fence: the target's copy made writable, the containers created there, the record gone."""
        c = self.cluster
        if carried is None:
            stored = await c.client.get_json(self._bodies_key(move.id))
            carried = stored if isinstance(stored, dict) else {}
        await self.converge(move.target)
        start_soon(lambda: self.converge(move.source))
        made = []
        self._unstarted.pop(move.id, None)
        for x in carried.values():
            made.append(await self._recreate(move, x))
        unstarted = self._unstarted.pop(move.id, [])
        started_at = time.monotonic()
        for x in carried.values():  # the old ones (stopped, renamed aside) go once the new ones run
            with contextlib.suppress(NotFound):
                await self._remove_old(move, x)
        await c.client.delete(keys.move(move.id))
        await c.client.delete(self._bodies_key(move.id))
        reasons = [*move.reasons, f"fenced at epoch {move.epoch + 1}: {move.target} holds the writable copy"]
        reasons += [f"container {n} created again on {move.target}" for n in made]
        reasons += [
            f"container {n} did not start on {move.target}; started again once it can" for n in unstarted
        ]
        await self.m.decisions.event(
            event_record("move", move.name, move.target, reasons, c.now(), [move.name], move.source, move.id)
        )
        return {
            "dataset": move.id,
            "name": move.name,
            "from": move.source,
            "to": move.target,
            "containers": made,
            "not_started": unstarted,
            "started_at": started_at,
        }

    async def _recreate(self, move: Move, x: dict[str, Any]) -> str:
        """One container of a move, after the fence: its copy on the target started (created then, if a
        restarted manager finds none); `forward` removes the old one (stopped, renamed aside) from the
        source after every copy runs, so that removal is no part of the downtime."""
        c = self.cluster
        name = x["name"]
        new = x.get("new")
        if new:
            with contextlib.suppress(NotFound):
                c.locate(new)
                new = new if c.locate(new).node == move.target else None
        if not new:
            with contextlib.suppress(NotFound):
                await self._remove_old(move, x)  # its name is free for the copy created now
            created = await self.m.containers.create(
                name,
                no_copy(x["body"], move.name),
                target=move.target,
                reasons=(f"moved with dataset {move.name}",),
            )
            new = created["Id"]
        if x.get("running") and not await self._start_or_keep(move, move.target, new, name):
            self._unstarted.setdefault(move.id, []).append(name)
        return name

    async def _start_or_keep(self, move: Move, node: str, container_id: str, name: str) -> bool:
        """Starts a container a move stopped (on the target after the fence, on the source after an
        undo). A start that fails (the node's agent, which is also its volume plugin, away: dockerd gives
        up mounting after ~15 s) is kept under keys.move_start, and the leader starts it again until it
        runs (`retry_starts`): the move itself stands (its data is fenced where it is), but a container it
        stopped is never left stopped for good. 304 (started already: a resumed move) is a start."""
        c = self.cluster
        try:
            await c.engine(node).call("POST", f"/containers/{container_id}/start")
        except EngineError as e:
            if e.status != 304:
                await self._keep_start(move, node, container_id, name, e.message)
                return False
        except ShoalError as e:
            await self._keep_start(move, node, container_id, name, e.message)
            return False
        c.mark(node, {"containers"}, (container_id,))
        return True

    async def _keep_start(self, move: Move, node: str, container_id: str, name: str, error: str) -> None:
        doc = {
            "name": name,
            "dataset": move.id,
            "volume": move.name,
            "error": error,
            "since": self.cluster.now(),
        }
        await self.cluster.client.put(keys.move_start(node, container_id), doc)
        kv(log, "container not started; retried", logging.WARNING, container=name, node=node,
           dataset=move.id, error=error)  # fmt: skip

    async def retry_starts(self) -> None:
        """Every container a move left stopped because its start failed is started again; one that runs
        (or was started, or removed, by someone else meanwhile) is struck off."""
        c = self.cluster
        pairs, _ = await c.client.list_prefix(keys.MOVE_STARTS)
        for p in pairs:
            node, _, container_id = p.key.removeprefix(keys.MOVE_STARTS).partition("/")
            doc = p.json() if isinstance(p.json(), dict) else {}
            try:
                await c.engine(node).call("POST", f"/containers/{container_id}/start")
            except EngineError as e:
                if e.status not in (304, 404):
                    continue
            except NotFound:
                pass
            except ShoalError:
                continue  # the node or its plugin still away: next round
            else:
                c.mark(node, {"containers"}, (container_id,))
                kv(log, "container started again", container=doc.get("name", container_id[:12]), node=node,
                   dataset=doc.get("dataset", ""))  # fmt: skip
            await c.client.delete(p.key, cas=p.modify_index)

    async def _remove_old(self, move: Move, x: dict[str, Any]) -> None:
        c = self.cluster
        e = c.engine(move.source)
        with contextlib.suppress(ShoalError):
            await e.call("DELETE", f"/containers/{x['id']}", params={"force": "1"})
        c.forget(move.source, x["id"])

    async def undo(self, move: Move, reason: str) -> None:
        """Before the fence: the move record goes, the source's stopped containers start again."""
        c = self.cluster
        have, index = await c.records.move(move.id)
        if have is None:
            return
        if resume(have) == "forward":
            await self.forward(have)
            return
        stored = await c.client.get_json(self._bodies_key(move.id))
        carried = stored if isinstance(stored, dict) else {}
        # the record first: while it says final, the source's agent refuses to mount the dataset
        if not await c.client.delete(keys.move(move.id), cas=index):
            raise Conflict(f"the move of {move.name} changed while it was being undone")
        e = c.engines.get(move.source)
        for x in carried.values():  # the copies made ahead on the target go; the old names come back
            with contextlib.suppress(ShoalError):
                if x.get("new"):
                    await c.engine(move.target).call(
                        "DELETE", f"/containers/{x['new']}", params={"force": "1"}
                    )
                    c.forget(move.target, x["new"])
                if x.get("aside") and e is not None:
                    await e.call("POST", f"/containers/{x['id']}/rename", params={"name": x["name"]})
                    c.mark(move.source, {"containers"}, (x["id"],))
        if have.phase == FINAL:
            for x in carried.values():
                if x.get("running"):
                    await self._start_or_keep(move, move.source, x["id"], x["name"])
        await c.client.delete(self._bodies_key(move.id))
        reasons = [
            *move.reasons,
            f"undone before the fence: {reason}",
            f"{move.source} keeps the writable copy",
        ]
        await self.m.decisions.event(
            event_record("move", move.name, None, reasons, c.now(), [move.name], move.source, move.id)
        )
        kv(log, "move undone", logging.WARNING, dataset=move.id, name=move.name, reason=reason)

    async def resume_all(self) -> None:
        """A leader's first look: every move record left by a killed manager is undone or finished. A
        move another live manager drives (beside it, over one etcd) is that manager's to finish."""
        lead = self.m.leadership
        me = str(lead.me.get("name", ""))
        alive = {str(v.get("name", "")) for v in await lead.members()} - {me} if lead.shared else set()
        for move, _ in (await self.cluster.records.all_moves()).values():
            # one begun since this manager took the lead is its own (its record is written a moment before
            # it is counted running) or a live manager's: undoing it would stop a move under way
            if (
                move.id in self._running
                or move.started >= self._since
                or (move.manager and move.manager in alive)
            ):
                continue
            try:
                if resume(move) == "forward":
                    await self.forward(move)
                else:
                    await self.undo(move, "the manager restarted during the move")
            except ShoalError as e:
                kv(log, "move not resumed", logging.WARNING, dataset=move.id, error=e.message)

    async def under_way(self) -> list[dict[str, Any]]:
        """Every move under way, as its record says (`GET /shoal/v1/moves`, `shoal volume ls`)."""
        return [mv.to_dict() for mv, _ in (await self.cluster.records.all_moves()).values()]

    async def status(self, dataset_id: str) -> dict[str, Any] | None:
        move, _ = await self.cluster.records.move(dataset_id)
        return move.to_dict() if move is not None else None

    # --- promotion and replicas --------------------------------------------------------------------

    async def promote(self, d: Dataset, reasons: list[str]) -> Dataset:
        """The owner of `d` is down: its freshest live replica becomes the writable copy, fenced (the
        old node's copy is demoted when it comes back, and becomes a replica again)."""
        c = self.cluster
        record, ridx = await c.records.record(d.id)
        assigned = (await c.records.all_replicas()).get(d.id)
        if record is None or assigned is None:
            raise Conflict(f"dataset {d.name} has no replica to promote")
        statuses = (await c.records.statuses()).get(d.id, {})
        live = [n for n in assigned[0].nodes if (e := c.engines.get(n)) is not None and e.reachable]
        ready = [n for n in live if n in statuses and statuses[n].snapshot]
        if not ready:
            raise Conflict(f"dataset {d.name} has no replica with data on a node that answers")
        node = max(ready, key=lambda n: statuses[n].taken)
        lag = statuses[node].lag(c.now())
        others = tuple(n for n in assigned[0].nodes if n != node)
        new, ops = promotion_ops(
            record, ridx, node, replace(assigned[0], nodes=(record.node, *others)), assigned[1]
        )
        applied, _ = await c.client.txn(ops)
        if not applied:
            raise Conflict(f"the promotion of {d.name} lost a race: its records changed meanwhile")
        self._cache_record(new)
        why = [
            *reasons,
            f"replica on {node} promoted at epoch {new.epoch} (it held the writes of up to "
            f"{lag or 0.0:.1f}s before)",
            f"{record.node}'s copy is demoted to a replica when it comes back",
        ]
        await self.m.decisions.event(
            event_record("promote", d.name, node, why, c.now(), [d.name], record.node, d.id)
        )
        kv(
            log,
            "replica promoted",
            dataset=d.id,
            name=d.name,
            node=node,
            epoch=new.epoch,
            lost=record.node,
            lag=f"{lag or 0.0:.2f}s",
        )
        await self.converge(node)
        return new

    async def assign_replicas(self) -> None:
        """Every dataset whose profile asks replicas gets them on other nodes, chosen by the scheduler
        through its filters (the owner and chosen nodes excluded, the profile's constraints applied). A
        dataset none fits is recorded once, with the scheduler's reasons, until that changes."""
        c = self.cluster
        now = c.now()
        assigned = await c.records.all_replicas()
        profiles = self.m.settings.profiles
        ids = {d.id for d in c.datasets}
        self._unplaced = {i: why for i, why in self._unplaced.items() if i in ids}
        for d in list(c.datasets):
            wanted = replicas_wanted(d, profiles, now)
            have = assigned.get(d.id)
            if not wanted and have is None:
                continue
            plan = replica_plan(d, wanted, have[0] if have else None, c.engines.keys())
            profile = profiles.get(d.profile)
            chosen, unplaced = choose_replicas(d.node, plan.keep, plan.add, profile, self.m.place)
            if unplaced is not None:
                await self._no_replica_node(d, wanted, profile, unplaced, now)
            else:
                self._unplaced.pop(d.id, None)
            if have is not None and tuple(chosen) == have[0].nodes:
                continue
            new = Replicas(d.id, tuple(chosen), now)
            if not await c.client.put(keys.replicas(d.id), new.to_dict(), cas=have[1] if have else 0):
                continue
            added = [n for n in chosen if n not in plan.keep]
            if added:
                why = [f"profile {d.profile} asks {wanted} replica(s)"]
                if profile is not None and profile.constraints:
                    why.append(f"on nodes where {', '.join(profile.constraints)}")
                why.append(f"the scheduler chose {', '.join(added)}")
                await self.m.decisions.event(
                    event_record("replica", d.name, added[0], why, now, [d.name], d.node, d.id)
                )
                kv(log, "replica assigned", dataset=d.id, name=d.name, nodes=",".join(chosen))

    async def _no_replica_node(
        self, d: Dataset, wanted: int, profile: Profile | None, p: Placement, now: float
    ) -> None:
        rejected = [str(r) for r in p.rejected]
        seen = sorted(f"{r.node} {r.filter} {r.expression}" for r in p.rejected)
        if self._unplaced.get(d.id) == seen:
            return  # recorded already: the same nodes left out by the same rules (live values may differ)
        self._unplaced[d.id] = seen
        asks = f" on nodes where {', '.join(profile.constraints)}" if profile and profile.constraints else ""
        why = [f"profile {d.profile} asks {wanted} replica(s){asks}", "no other node fits", *rejected]
        await self.m.decisions.event(event_record("replica", d.name, None, why, now, [d.name], d.node, d.id))
        kv(log, "no replica node", logging.WARNING, dataset=d.id, name=d.name, reasons="; ".join(rejected))

    async def replicas_view(self) -> dict[str, list[dict[str, Any]]]:
        """dataset id -> each replica's node and lag, for `shoal volume ls|inspect` and the dashboard."""
        return await self.cluster.records.replica_rows(self.cluster.now())


async def _every(seconds: float, step: Callable[[], Awaitable[None]], what: str) -> None:
    """`step` every `seconds`, for as long as this manager leads; a failing round (the registry away, a
    node gone) is logged and the next one tries again."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            kv(log, f"{what} failed", logging.WARNING, error=str(e))
        await asyncio.sleep(seconds)


def replica_spec(profile: Profile | None, avoid: Iterable[str]) -> ContainerSpec:
    """What the scheduler is asked for one replica of a dataset (pure): a node that serves shoal volumes,
    none of `avoid` (the owner, the replicas chosen already), and the profile's constraints."""
    away = tuple(parse("constraint", f"node!={n}") for n in avoid)
    own = tuple(parse("constraint", text) for text in (profile.constraints if profile else ()))
    return ContainerSpec(volume_driver="shoal", constraints=(*away, *own))


def choose_replicas(
    owner: str,
    keep: Iterable[str],
    add: int,
    profile: Profile | None,
    place: Callable[[ContainerSpec], Placement],
) -> tuple[list[str], Placement | None]:
    """The replica nodes of a dataset (pure given `place`, the scheduler over one view of the cluster):
    those kept, then `add` more, one placement each. Returns them and, if the scheduler found no node for
    one, its placement (the reasons, for the record)."""
    chosen = list(keep)
    for _ in range(add):
        p = place(replica_spec(profile, [owner, *chosen]))
        if p.node is None:
            return chosen, p
        chosen.append(p.node)
    return chosen, None


def check_target(target: str, nodes) -> None:
    if target not in set(nodes):
        raise BadRequest(f"no node named {target!r}; nodes: {', '.join(sorted(nodes))}")
