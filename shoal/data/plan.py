"""Convergence as a pure function (Flocker's "calculate the changes"): what the registry holds (the
cluster's view) and what this node's pool holds (the truth about data) to the steps that close the gap.

The pool wins every disagreement that could cost data. A dataset on the pool that the registry does not
know is re-published, never deleted; a name someone else holds is reported as a conflict; a dataset is
deleted only for an explicit deletion request naming this node, and only when no container on this node
uses it and nothing was made from it. The table below (Flocker's DATASET_TRANSITIONS) says, for each
dataset id, what is wanted × what is found → what to do.

Every pool step is atomic on disk and ordered so that an agent killed between two steps finds the rest
still to do: parents are made before their snapshots and clones, deletions take children first, and the
leftover of a step cut short (`.new-*`) is discarded before anything else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from shoal.data.model import DEFAULT_PROFILE, Dataset, Deletion, Refused
from shoal.data.moves import copy_order

# --- what is found and what is wanted -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnDisk:
    """A finished dataset on the pool (at its mount path)."""

    id: str
    readonly: bool = False
    limit: int = 0  # bytes, 0 = none
    record: Dataset | None = None  # the pool's own record of it; None on a pool older than records


@dataclass(frozen=True, slots=True)
class PoolState:
    datasets: Mapping[str, OnDisk]
    partial: tuple[str, ...] = ()  # leftovers of an interrupted step: `.new-<id>`, `.new-del-<id>`
    pending: Mapping[str, Dataset] = field(default_factory=dict)  # recorded, not made yet (a make cut short)
    deleting: Mapping[str, Dataset] = field(default_factory=dict)  # recorded as being deleted
    strays: tuple[Refused, ...] = ()  # entries the pool does not understand: reported, left alone
    # copies that are not the node's writable one (shoal.data.moves): the pool's record, and its state:
    # "replica" (read-only, in <pool>/copies/<id>/), "demoting" (recorded as a replica, the old writable
    # copy not yet put away), "promoting" (becoming the writable copy)
    replicas: Mapping[str, Dataset] = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)
    copies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # transfer snapshots, oldest first


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the registry holds: every valid record (all nodes), the name claims, the deletion requests,
    and the records refused as forged or broken."""

    records: Mapping[str, Dataset]
    names: Mapping[str, str] = field(default_factory=dict)  # name -> the dataset id holding it
    deletions: Mapping[str, Deletion] = field(default_factory=dict)
    refused: tuple[Refused, ...] = ()
    replicas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # id -> the nodes assigned
    # each record's modify index as read: a node's write of its own record compares on it, so a fence
    # committed after the read makes the write fail instead of undoing the fence
    indexes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """One change. Pool steps: discard, create, snapshot, clone, limit, adopt (write the pool's record of
    a dataset that has none), delete. Registry steps: publish (write the node's record, claiming its
    name), forget (a deleted dataset's record, name and request), refuse (answer a deletion request)."""

    op: str
    id: str
    source: str = ""
    size: int = 0
    record: Dataset | None = None  # the record the step writes (on the pool, or in the registry)
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.op} {self.id}" + (f" from {self.source}" if self.source else "")

    def fields(self) -> dict[str, str]:
        """The step as log fields (key=value)."""
        out = {"step": self.op, "dataset": self.id}
        if self.record is not None and self.record.name:
            out["name"] = self.record.name
        if self.source:
            out["source"] = self.source
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    reports: tuple[str, ...] = ()  # what is wrong and left as it is (refused records, conflicts, waits)


POOL_OPS = frozenset(
    {"discard", "create", "snapshot", "clone", "limit", "adopt", "delete", "epoch", "promote", "demote"}
)
MAKES = ("create", "snapshot", "clone")

# --- the table ----------------------------------------------------------------------------------------

# wanted: "here" (a record places it on this node), "elsewhere" (on another node), "absent" (no record),
#         "delete" (a deletion request for this node that was not refused)
# found:  "absent", "pending" (recorded on the pool, not made), "present", "unrecorded" (made, no record
#         of its own: a pool from before records), "deleting" (a deletion cut short), and the copies that
#         are not writable (shoal.data.moves): "replica", "demoting", "promoting"
# A record placing the dataset elsewhere at a higher epoch than this node's writable copy is the fence:
# that copy is demoted (read-only, kept as a replica); a replica the record places here is promoted.
TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("here", "absent"): "make",
    ("here", "pending"): "make",
    ("here", "present"): "keep",
    ("here", "unrecorded"): "adopt",
    ("here", "deleting"): "finish_delete",
    ("absent", "pending"): "make",  # the node had been asked: finish it, then re-publish it
    ("absent", "present"): "keep",  # re-published: the registry lost it, the node did not
    ("absent", "unrecorded"): "adopt",
    ("absent", "deleting"): "finish_delete",
    ("elsewhere", "absent"): "nothing",
    ("elsewhere", "pending"): "report_elsewhere",
    ("elsewhere", "present"): "report_elsewhere",
    ("elsewhere", "unrecorded"): "report_elsewhere",
    ("elsewhere", "deleting"): "finish_delete",
    ("delete", "absent"): "forget",
    ("delete", "pending"): "delete",
    ("delete", "present"): "delete",
    ("delete", "unrecorded"): "delete",
    ("delete", "deleting"): "finish_delete",
    ("here", "replica"): "promote",
    ("here", "promoting"): "promote",
    ("here", "demoting"): "demote",  # put the old copy away first; the next round promotes
    ("elsewhere", "replica"): "nothing",
    ("elsewhere", "demoting"): "demote",
    ("elsewhere", "promoting"): "promote",  # finished, then demoted by the next round
    ("absent", "replica"): "report_replica",
    ("absent", "demoting"): "demote",
    ("absent", "promoting"): "promote",
    ("delete", "replica"): "delete",
    ("delete", "demoting"): "delete",
    ("delete", "promoting"): "delete",
}
TRANSITIONS[("elsewhere", "present")] = "fenced_or_elsewhere"


@dataclass(frozen=True, slots=True)
class _Input:
    node: str
    cluster: Cluster
    pool: PoolState
    users: Mapping[str, tuple[str, ...]] | None
    now: float
    default_profile: str
    deletions: Mapping[str, Deletion]

    def found(self, i: str) -> str:
        if i in self.pool.deleting:
            return "deleting"
        if i in self.pool.replicas:
            return self.pool.roles.get(i, "replica")
        if i in self.pool.datasets:
            return "present" if self.pool.datasets[i].record is not None else "unrecorded"
        return "pending" if i in self.pool.pending else "absent"

    def wanted(self, i: str) -> str:
        if i in self.deletions:
            return "delete"
        d = self.cluster.records.get(i)
        if d is None:
            return "absent"
        return "here" if d.node == self.node else "elsewhere"

    def local_record(self, i: str) -> Dataset | None:
        if i in self.pool.datasets:
            return self.pool.datasets[i].record
        return self.pool.pending.get(i) or self.pool.deleting.get(i) or self.pool.replicas.get(i)

    def conflict(self, d: Dataset) -> str:
        """Why `d`'s name is not its own, or ""."""
        holder = self.cluster.names.get(d.name) if d.kind == "dataset" and d.name else None
        return f"name {d.name} is held by dataset {holder}" if holder not in (None, d.id) else ""

    def published(self, d: Dataset, size: int) -> Dataset:
        """The registry record the node stands behind for its own dataset `d`."""
        have = self.cluster.records.get(d.id)
        return replace(
            d,
            node=self.node,
            size=size,
            recovered=have.recovered if have is not None else self.now,
            conflict=self.conflict(d),
        )


def plan(
    node: str,
    cluster: Cluster,
    pool: PoolState,
    users: Mapping[str, tuple[str, ...]] | None,
    held: Collection[str] = (),
    now: float = 0.0,
    default_profile: str = DEFAULT_PROFILE,
) -> Plan:
    """The steps that bring this node's pool and its part of the registry together.

    `users` is which containers on this node's engine use each dataset (None: the engine did not answer,
    so nothing is deleted this round); `held` are ids whose last step failed and waits out its backoff;
    `now` stamps re-published records."""
    deletions = {i: r for i, r in cluster.deletions.items() if r.node == node and not r.refused}
    inp = _Input(node, cluster, pool, users, now, default_profile, deletions)
    local = set(pool.datasets) | set(pool.pending) | set(pool.deleting) | set(pool.replicas)
    mine = {i for i, d in cluster.records.items() if d.node == node}
    steps: list[Step] = []
    reports = [f"refused record {r}" for r in cluster.refused if r.node in ("", node)]
    reports += [f"left alone on the pool: {s}" for s in pool.strays]
    for name in pool.partial:
        owner = name.removeprefix(".new-").removeprefix("del-")
        if owner not in pool.deleting:  # a deletion cut short is finished by its own step
            steps.append(Step("discard", name))
    for i in sorted(local | mine | set(deletions)):
        if i in held:
            continue
        action = TRANSITIONS.get((inp.wanted(i), inp.found(i)), "nothing")
        steps_i, reports_i = _ACTIONS[action](inp, i)
        steps += steps_i
        reports += reports_i
    parents = {i: d.parent for i, d in cluster.records.items()}
    parents.update({i: d.parent for i in local if (d := inp.local_record(i)) is not None})
    return Plan(_ordered(steps, pool, held, parents), tuple(reports))


# --- the actions --------------------------------------------------------------------------------------

_Out = tuple[list[Step], list[str]]


def _nothing(inp: _Input, i: str) -> _Out:
    return [], []


def _make(inp: _Input, i: str) -> _Out:
    want = inp.cluster.records.get(i)
    d = want if want is not None and want.node == inp.node else inp.pool.pending[i]
    if not d.parent:
        steps = [Step("create", i, size=d.size, record=d)]
    else:
        op = "snapshot" if d.kind == "snapshot" else "clone"
        steps = [Step(op, i, d.parent, d.size if op == "clone" else 0, record=d)]
    if want is None:  # recorded on the pool but lost from the registry
        steps.append(Step("publish", i, record=inp.published(d, d.size), reason="recovered"))
    return steps, []


def _keep(inp: _Input, i: str) -> _Out:
    disk = inp.pool.datasets[i]
    assert disk.record is not None
    have = inp.cluster.records.get(i)
    size = have.size if have is not None else disk.record.size
    steps = []
    if disk.record.kind == "dataset" and disk.limit != size:
        steps.append(Step("limit", i, size=size, record=replace(disk.record, size=size)))
    want = inp.published(disk.record, size)
    holder = inp.cluster.names.get(want.name) if want.kind == "dataset" else None
    if have is not None and have.epoch > want.epoch:  # the record moved away and back: take its epoch
        steps.append(Step("epoch", i, record=replace(disk.record, size=size, epoch=have.epoch)))
        want = replace(want, epoch=have.epoch)
    if have is None:
        steps.append(Step("publish", i, record=want, reason="recovered"))
    elif have.identity() != want.identity() or have.epoch < want.epoch:
        steps.append(Step("publish", i, record=want, reason="corrected"))
    elif have.conflict != want.conflict or (want.kind == "dataset" and holder is None):
        steps.append(Step("publish", i, record=want, reason="name"))
    return steps, [f"conflict: dataset {i} on {inp.node}: {want.conflict}"] if want.conflict else []


def _adopt(inp: _Input, i: str) -> _Out:
    disk = inp.pool.datasets[i]
    have = inp.cluster.records.get(i)
    if have is not None and have.node == inp.node:
        return [Step("adopt", i, record=replace(have, recovered=0.0, conflict=""))], []
    kind = "snapshot" if disk.readonly else "dataset"
    name = f"recovered-{i[:8]}" if kind == "dataset" else ""
    d = Dataset(i, name, inp.default_profile, inp.node, disk.limit, "", kind, inp.now, name)
    return [
        Step("adopt", i, record=d, reason="no record on the pool or in the registry"),
        Step("publish", i, record=inp.published(d, disk.limit), reason="recovered"),
    ], []


def _fenced_or_elsewhere(inp: _Input, i: str) -> _Out:
    """This node's writable copy, and a record placing the dataset elsewhere: at a higher epoch it is the
    fence (demote: read-only, kept as a replica); at the same or a lower one it is a disagreement that
    could cost data, reported and left."""
    disk = inp.pool.datasets[i]
    there = inp.cluster.records[i]
    if disk.record is not None and there.epoch > disk.record.epoch:
        return _demote(inp, i)
    return _report_elsewhere(inp, i)


def _demote(inp: _Input, i: str) -> _Out:
    mine = inp.local_record(i)
    assert mine is not None
    there = inp.cluster.records.get(i)
    reason = f"{there.node} holds it at epoch {there.epoch}" if there is not None else "finishing"
    return [Step("demote", i, record=mine, reason=reason)], []


def _promote(inp: _Input, i: str) -> _Out:
    """The record places a dataset this node holds a copy of here: the newest copy becomes writable, at
    the record's epoch (a copy of an earlier epoch than the record's is still the newest data there is:
    the fence made sure no other copy was written after it)."""
    want = inp.cluster.records.get(i)
    mine = inp.pool.replicas[i]
    copies = sorted(inp.pool.copies.get(i, ()), key=copy_order)
    if inp.pool.roles.get(i) == "promoting" and i in inp.pool.datasets:
        copies = copies or ["-"]  # made already: only the record is left to write
    if not copies:
        return [], [f"dataset {i} is placed on {inp.node}, whose copy holds no data yet; waiting"]
    record = replace(want if want is not None else mine, node="", recovered=0.0, conflict="")
    if want is None or want.node != inp.node:
        record = replace(record, epoch=mine.epoch)
    return [Step("promote", i, copies[-1], record.size, record=record)], []


def _report_replica(inp: _Input, i: str) -> _Out:
    return [], [f"replica of dataset {i} kept: the registry has no record of the dataset"]


def _report_elsewhere(inp: _Input, i: str) -> _Out:
    there = inp.cluster.records[i].node
    return [], [f"conflict: dataset {i} is on {inp.node}'s pool but the registry places it on {there}; left"]


def _children(inp: _Input, i: str) -> list[Dataset]:
    """What was made from dataset `i` and is not itself being deleted."""
    known = {**inp.cluster.records}
    for j in set(inp.pool.datasets) | set(inp.pool.pending):
        if (r := inp.local_record(j)) is not None:
            known[j] = r
    return [d for d in known.values() if d.parent == i and d.id not in inp.deletions]


def _delete(inp: _Input, i: str) -> _Out:
    target = inp.local_record(i) or inp.cluster.records.get(i) or Dataset(i, "", "", inp.node)
    if i in inp.pool.replicas:  # a copy of a dataset whose owner deleted it: nothing uses or hangs off it
        return [Step("delete", i, record=target), Step("forget", i, record=target, reason="replica")], []
    children = _children(inp, i)
    if children:
        listed = ", ".join(f"{d.kind} {d.name or d.id[:8]}" for d in children)
        reason = f"dataset {target.name or i} has {listed} made from it; remove those first"
        return [Step("refuse", i, record=target, reason=reason)], []
    if inp.users is None:
        return [], [f"deletion of {target.name or i} waits: the engine did not say which containers use it"]
    users = sorted(inp.users.get(i, ()))
    if users:
        reason = (
            f"dataset {target.name or i} is in use by container(s) {', '.join(users)} on {inp.node}; "
            "remove them first (docker rm -f ...)"
        )
        return [Step("refuse", i, record=target, reason=reason)], []
    return [Step("delete", i, record=target), Step("forget", i, record=target)], []


def _finish_delete(inp: _Input, i: str) -> _Out:
    """A deletion whose mark is on the pool already passed its checks: it is finished whatever the
    registry now says (the mark is the node's own copy of the request)."""
    target = inp.pool.deleting[i]
    steps = [Step("delete", i, record=target)]
    if inp.wanted(i) != "elsewhere":  # another node's record of that id is not this node's to drop
        steps.append(Step("forget", i, record=target))
    return steps, []


def _forget(inp: _Input, i: str) -> _Out:
    target = inp.cluster.records.get(i) or Dataset(i, inp.deletions[i].name, "", inp.node)
    return [Step("forget", i, record=target)], []


_ACTIONS = {
    "nothing": _nothing,
    "make": _make,
    "keep": _keep,
    "adopt": _adopt,
    "report_elsewhere": _report_elsewhere,
    "fenced_or_elsewhere": _fenced_or_elsewhere,
    "demote": _demote,
    "promote": _promote,
    "report_replica": _report_replica,
    "delete": _delete,
    "finish_delete": _finish_delete,
    "forget": _forget,
}


def _ordered(
    steps: list[Step], pool: PoolState, held: Collection[str], parents: Mapping[str, str]
) -> tuple[Step, ...]:
    """Discards first; makes parents before children (a make whose parent waits out a backoff waits with
    it); then the rest; deletions children first (deepest first), each followed by its forget."""
    discards = [s for s in steps if s.op == "discard"]
    makes = [s for s in steps if s.op in MAKES]
    made = set(pool.datasets)
    ordered: list[Step] = []
    while makes:
        ready = [s for s in makes if not s.source or s.source in made or not _planned(s.source, makes)]
        if not ready:  # a cycle of parents: make none of them (each fails on its own next round)
            break
        for s in ready:
            makes.remove(s)
            if s.source and s.source in held and s.source not in made:
                continue
            ordered.append(s)
            made.add(s.id)
    rest = [s for s in steps if s.op not in MAKES and s.op not in ("discard", "delete", "forget")]
    deletes = [s for s in steps if s.op in ("delete", "forget")]
    depth = {s.id: _depth(s.id, parents) for s in deletes}
    deletes.sort(key=lambda s: (-depth[s.id], s.id, s.op == "forget"))
    return (*discards, *ordered, *rest, *deletes)


def _planned(i: str, makes: list[Step]) -> bool:
    return any(s.id == i for s in makes)


def _depth(i: str, parents: Mapping[str, str]) -> int:
    """How far down a chain of snapshots and clones `i` sits (a clone of a snapshot of a dataset: 2)."""
    seen = {i}
    while (i := parents.get(i, "")) and i not in seen:
        seen.add(i)
    return len(seen) - 1
