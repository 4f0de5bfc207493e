"""Classic Swarm's rescheduling, with the data, and draining a node.

A container asks with `-e reschedule:on-node-failure` or the label
`com.docker.swarm.reschedule-policies=["on-node-failure"]` (classic Swarm's words; `off` is the default,
any other word is a 400 naming it). Its create request is kept at `shoal/reschedule/<com.docker.swarm.id>`.
When its node is down (shoal.manager.failure), it is created again through the ordinary create path —
the same filters and strategy, its name, its config and its `com.docker.swarm.id` — and started if it was
running. A dataset it mounts that has a replica is promoted first (fenced: shoal.manager.moves.promote),
so the container lands on the replica's node; one without a replica keeps the container waiting for its
node (recorded). A hard `node==` constraint naming the lost node is dropped to reschedule (recorded), as
the node it names is the one that is gone. Containers without the policy stay listed, `Host Down`.

When the node comes back, its copies of rescheduled containers are removed (classic Swarm's
removeDuplicateContainers: the same swarm id running elsewhere), and its agent demotes its old dataset
copies, which the replica assignment then keeps in sync by increment.

`shoal node drain NODE` (`undrain`): no new placements there (a `node!=` constraint on every create), and
its policy-carrying containers move away one at a time, each with its datasets (the move of
shoal.manager.moves).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shoal import keys
from shoal.data.model import containers_using
from shoal.data.requests import dataset_volumes
from shoal.errors import BadRequest, Conflict, NotFound, ShoalError
from shoal.logs import kv
from shoal.manager.decisions import event_record
from shoal.manager.failure import Failure
from shoal.manager.moves import POLICY_LABEL, SWARM_ID, start_soon
from shoal.scheduler.expr import Expr, parse
from shoal.scheduler.model import ContainerSpec

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager.reschedule")
POLICIES = ("off", "on-node-failure")
ON_FAILURE = "on-node-failure"
EVERY = 0.5  # seconds between looks at the nodes
RETRY_EVERY = 10.0  # seconds between tries of a lost node's containers that could not be placed yet


def reschedule_policies(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`-e reschedule:POLICY` (taken out of Env) and the policies label to the label alone, checked: an
    unknown word is a 400 that names it (pure)."""
    env, found = [], []
    for item in body.get("Env") or []:
        if isinstance(item, str) and item.startswith("reschedule:"):
            found.append(item.removeprefix("reschedule:"))
        else:
            env.append(item)
    labels = dict(body.get("Labels") or {})
    if POLICY_LABEL in labels:
        try:
            listed = json.loads(labels[POLICY_LABEL])
        except ValueError:
            listed = None
        if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
            raise BadRequest(f'label {POLICY_LABEL} must be a JSON list of policies, e.g. ["{ON_FAILURE}"]')
        found += listed
    for word in found:
        if word not in POLICIES:
            raise BadRequest(f"unknown reschedule policy {word!r}: use one of {', '.join(POLICIES)}")
    if len(set(found) - {"off"}) and "off" in found:
        raise BadRequest("reschedule policy off cannot be combined with another policy")
    out = dict(body)
    if "Env" in body or found:
        out["Env"] = env
    policies = list(dict.fromkeys(found))
    if policies:
        labels[POLICY_LABEL] = json.dumps(policies)
        out["Labels"] = labels
    return out, policies


def with_swarm_id(body: Mapping[str, Any]) -> dict[str, Any]:
    """Every container gets classic Swarm's `com.docker.swarm.id` (64 hex) if it has none: the identity a
    rescheduled container keeps on its new node."""
    labels = dict(body.get("Labels") or {})
    if labels.get(SWARM_ID):
        return dict(body)
    labels[SWARM_ID] = secrets.token_hex(32)
    return {**body, "Labels": labels}


def has_policy(labels: Mapping[str, str] | None) -> bool:
    try:
        return ON_FAILURE in json.loads((labels or {}).get(POLICY_LABEL, "[]"))
    except (ValueError, TypeError):
        return False


def without_lost_node(spec: ContainerSpec, lost: str) -> tuple[ContainerSpec, list[str]]:
    """A hard `node==` constraint can only name the lost node (the container ran there): dropped."""
    keep: list[Expr] = []
    dropped = []
    for e in spec.constraints:
        if e.key == "node" and e.op == "==" and not e.soft:
            dropped.append(f"constraint {e.text} dropped: it names the lost node {lost}")
        else:
            keep.append(e)
    return replace(spec, constraints=tuple(keep)), dropped


def pinned_to(spec: ContainerSpec, node: str) -> ContainerSpec:
    """A create that must land on `node` (a move's containers): node constraints replaced by node==."""
    keep = tuple(e for e in spec.constraints if e.key != "node")
    return replace(spec, constraints=(*keep, parse("constraint", f"node=={node}")))


class Rescheduler:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.failure = Failure(manager)
        self.draining: set[str] = set()
        self.returning: set[str] = set()  # nodes back whose stale copies are still to be removed
        self.retry_at: dict[str, float] = {}  # down nodes whose containers are tried again then
        self._storing: set[asyncio.Task[None]] = set()
        self._task = start_soon(self._start)

    @property
    def cluster(self):
        return self.m.cluster

    # --- the create path's side -----------------------------------------------------------------------

    def exclusions(self) -> tuple[Expr, ...]:
        return tuple(parse("constraint", f"node!={n}") for n in sorted(self.draining))

    def remember(self, container_id: str, name: str, body: dict[str, Any], node: str) -> None:
        """Keeps a policy-carrying container's create request (in the background, as decisions are)."""
        swarm_id = (body.get("Labels") or {}).get(SWARM_ID)
        if not swarm_id:
            return
        doc = {
            "name": name,
            "body": body,
            "node": node,
            "container": container_id,
            "time": self.cluster.now(),
        }

        async def store() -> None:
            try:
                await self.cluster.client.put(keys.reschedule(swarm_id), doc)
            except ShoalError as e:
                kv(
                    log,
                    "reschedule config not stored",
                    logging.WARNING,
                    container=container_id[:12],
                    error=e.message,
                )

        task = asyncio.get_running_loop().create_task(store())
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    # --- the loop -------------------------------------------------------------------------------------

    async def _start(self) -> None:
        """Alone, the loop runs here from the start. Beside other managers it runs on the leader only
        (two managers would each start a lost node's containers elsewhere), and every manager keeps
        its own view of the drained nodes, which its create path reads."""
        lead = self.m.leadership
        if not lead.shared:
            await self._loop()
            return
        lead.add_task(self._loop)
        while True:
            with contextlib.suppress(Exception):  # the registry away: the last view stands
                await self._refresh_drains()
            await asyncio.sleep(EVERY)

    async def _loop(self) -> None:
        await asyncio.sleep(2.0)  # the cache's first look at the engines
        self.returning |= {n for n, e in self.cluster.engines.items() if e.reachable}
        while True:
            await asyncio.sleep(EVERY)
            try:
                await self._refresh_drains()
                newly, back = await self.failure.sample(self.cluster.now())
                for node, reason in newly.items():
                    kv(log, "node down", logging.WARNING, node=node, reason=reason)
                    await self.reschedule_node(node, reason)
                for node in back:
                    kv(log, "node back", node=node)
                    self.returning.add(node)
                    self.retry_at.pop(node, None)
                for node in newly:
                    self.retry_at[node] = self.cluster.now() + RETRY_EVERY
                for node, at in list(self.retry_at.items()):
                    if at <= self.cluster.now() and node in self.failure.down:
                        self.retry_at[node] = self.cluster.now() + RETRY_EVERY
                        await self.reschedule_node(node, f"{node} is still down", quiet=True)
                for node in list(self.returning):
                    with contextlib.suppress(ShoalError):
                        await self.cleanup(node)
                        self.returning.discard(node)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never stop looking at the nodes
                kv(log, "reschedule round failed", logging.ERROR, exc_info=True, error=str(e))

    async def _refresh_drains(self) -> None:
        with contextlib.suppress(ShoalError):
            pairs, _ = await self.cluster.client.list_prefix(keys.DRAIN)
            self.draining = {keys.last_part(p.key) for p in pairs}

    async def reschedule_node(self, node: str, reason: str, quiet: bool = False) -> list[str]:
        """Every container of `node` with the policy, created again elsewhere; returns their names."""
        c = self.cluster
        e = c.engines.get(node)
        if e is None:
            return []
        done = []
        for ct in list(e.containers):
            if not has_policy(ct.get("Labels")):
                continue
            try:
                done.append(await self.reschedule_one(node, ct, reason))
            except ShoalError as err:
                name = (ct.get("Names") or ["/?"])[0].lstrip("/")
                why = [reason, f"{name} not rescheduled: {err.message}"]
                if not quiet:
                    ev = event_record("reschedule", name, None, why, c.now(), source=node)
                    await self.m.decisions.event(ev)
                kv(log, "not rescheduled", logging.WARNING, container=name, node=node, error=err.message)
        return done

    async def reschedule_one(self, node: str, ct: dict[str, Any], reason: str) -> str:
        c = self.cluster
        name = (ct.get("Names") or ["/"])[0].lstrip("/")
        swarm_id = (ct.get("Labels") or {}).get(SWARM_ID, "")
        stored = await c.client.get_json(keys.reschedule(swarm_id)) if swarm_id else None
        if not isinstance(stored, dict) or not isinstance(stored.get("body"), dict):
            raise NotFound(f"no create request is kept for {name} (it was not created through the manager)")
        body = stored["body"]
        reasons = [reason]
        for raw in dataset_volumes(_uses(body)):
            base = raw.partition("@")[0]
            ds = next((d for d in c.datasets if d.name == base and d.kind == "dataset"), None)
            if ds is None or ds.node != node:
                continue
            try:
                await self.m.moves.promote(ds, [reason])
            except Conflict as err:
                why = f"its dataset {ds.name} lives on {node}: {err.message}; it waits for {node}"
                raise Conflict(why) from None
            reasons.append(f"dataset {ds.name}: its replica was promoted (fenced)")
        created = await self.m.containers.create(
            name, body, replacing=(node, ct["Id"]), reasons=tuple(reasons)
        )
        new_node = c.locate(created["Id"]).node
        if ct.get("State") in ("running", "restarting", "paused"):
            await c.engine(new_node).call("POST", f"/containers/{created['Id']}/start")
            c.mark(new_node, {"containers"}, (created["Id"],))
        why = [*reasons, f"{name} created again on {new_node} (`shoal why {name}`: its placement)"]
        await self.m.decisions.event(event_record("reschedule", name, new_node, why, c.now(), source=node))
        kv(log, "rescheduled", container=name, lost=node, node=new_node, id=created["Id"][:12])
        return name

    async def cleanup(self, node: str) -> list[str]:
        """A node back (or seen by a manager that just started): its copies of containers that were
        created again elsewhere are removed. A copy is stale when the kept create request of its swarm id
        names another container, and that one is in the cluster (classic Swarm's
        removeDuplicateContainers, made safe against a manager restart by the kept request)."""
        c = self.cluster
        e = c.engine(node)
        listed = await e.call("GET", "/containers/json", params={"all": "1"})  # the engine itself, now
        others = {ct["Id"] for other, ct in c.all_containers() if other.node != node}
        removed = []
        for ct in listed or []:
            swarm_id = (ct.get("Labels") or {}).get(SWARM_ID)
            if not swarm_id or not has_policy(ct.get("Labels")):
                continue
            kept = await c.client.get_json(keys.reschedule(swarm_id))
            current = kept.get("container") if isinstance(kept, dict) else None
            if current and current != ct["Id"] and current in others:
                await e.call("DELETE", f"/containers/{ct['Id']}", params={"force": "1"})
                c.forget(node, ct["Id"])
                removed.append((ct.get("Names") or ["/?"])[0].lstrip("/"))
        if removed:
            why = [f"{node} is back", *(f"its stale copy of {n} removed: it runs elsewhere" for n in removed)]
            await self.m.decisions.event(event_record("reschedule", node, node, why, c.now(), source=node))
            kv(log, "stale copies removed", node=node, containers=",".join(removed))
        return removed

    # --- drain ----------------------------------------------------------------------------------------

    async def drain(self, node: str) -> dict[str, Any]:
        """No new placements on `node`; its policy-carrying containers (and their datasets) move away, one
        at a time. Returns what moved and what stayed, with why."""
        c = self.cluster
        c.engine(node)  # a NotFound names the nodes there are
        await c.client.put(keys.drain(node), {"node": node, "since": c.now(), "by": "shoal node drain"})
        self.draining.add(node)
        moved, stayed = [], []
        e = c.engine(node)
        for ct in list(e.containers):
            name = (ct.get("Names") or ["/?"])[0].lstrip("/")
            if not has_policy(ct.get("Labels")):
                stayed.append({"name": name, "reason": "no reschedule policy"})
                continue
            try:
                moved.append(await self._drain_one(node, ct, name))
            except ShoalError as err:
                stayed.append({"name": name, "reason": err.message})
        why = [f"{node} drained by shoal node drain"]
        why += [f"{x['name']} moved to {x['to']}" for x in moved]
        why += [f"{x['name']} stays: {x['reason']}" for x in stayed]
        await self.m.decisions.event(event_record("drain", node, None, why, c.now(), source=node))
        return {"node": node, "draining": True, "moved": moved, "stayed": stayed}

    async def _drain_one(self, node: str, ct: dict[str, Any], name: str) -> dict[str, Any]:
        c = self.cluster
        datasets = [
            d
            for d in c.datasets
            if d.node == node and d.kind == "dataset" and containers_using(d, [ct], f"/flocker/{d.id}")
        ]
        swarm_id = (ct.get("Labels") or {}).get(SWARM_ID, "")
        stored = await c.client.get_json(keys.reschedule(swarm_id)) if swarm_id else None
        body = stored.get("body") if isinstance(stored, dict) else None
        if not isinstance(body, dict):
            raise NotFound("no create request is kept for it (it was not created through the manager)")
        if datasets:
            spec = ContainerSpec(volume_driver="shoal", constraints=self.exclusions())
            p = self.m.place(spec)
            if p.node is None:
                raise Conflict("no other node can take its datasets")
            for d in datasets:
                await self.m.moves.move(d.name, p.node, by="drain", reasons=(f"{node} is draining",))
            return {"name": name, "to": p.node, "datasets": [d.name for d in datasets]}
        # stopped first (never two running), created again elsewhere, and only then removed: a create
        # that fails leaves the old one where it was, started again
        running = ct.get("State") == "running"
        src = c.engine(node)
        with contextlib.suppress(ShoalError):
            await src.call("POST", f"/containers/{ct['Id']}/stop", params={"t": "10"}, timeout=25)
        try:
            created = await self.m.containers.create(
                name, body, replacing=(node, ct["Id"]), reasons=(f"{node} is draining",)
            )
        except ShoalError:
            c.mark(node, {"containers"}, (ct["Id"],))
            if running:
                with contextlib.suppress(ShoalError):
                    await src.call("POST", f"/containers/{ct['Id']}/start")
            raise
        with contextlib.suppress(ShoalError):
            await src.call("DELETE", f"/containers/{ct['Id']}", params={"force": "1"})
        c.forget(node, ct["Id"])
        to = c.locate(created["Id"]).node
        if running:
            await c.engine(to).call("POST", f"/containers/{created['Id']}/start")
            c.mark(to, {"containers"}, (created["Id"],))
        return {"name": name, "to": to, "datasets": []}

    async def undrain(self, node: str) -> dict[str, Any]:
        self.cluster.engine(node)
        await self.cluster.client.delete(keys.drain(node))
        self.draining.discard(node)
        why = [f"{node} undrained: placements allowed again"]
        await self.m.decisions.event(event_record("drain", node, node, why, self.cluster.now()))
        return {"node": node, "draining": False}


def _uses(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    from shoal.manager.spec import volume_uses

    return volume_uses(body)
