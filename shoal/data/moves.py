"""Moves, replicas and the fence, as plain data and pure decisions.

A dataset has exactly one writable copy: the one on the node its registry record names, at the record's
fencing `epoch`. Every node's pool keeps, beside each copy, the epoch and role ("owner" or "replica") it
holds it at, and a node serves a copy writable (the plugin's Mount) only when `serves_writable` says so:
the record names this node, at the epoch its pool holds, and the pool holds it as owner. Ownership moves
only in one registry transaction that compares on the dataset record (and the move record) and raises the
epoch (`fence_ops`, `promotion_ops`): the instant it commits, the old copy is no longer the writable one,
whatever its node believes; that node, on seeing the higher epoch, makes its copy read-only and keeps it as
a replica (`demote`), never deletes it.

A move is Flocker's two phases (flocker/node/agents/blockdevice.py moved a volume by detaching and
attaching; its older ZFS backend pushed a snapshot while the application ran, then stopped it and pushed
the increment):

    copy    the target pulls a full send of a snapshot while the containers keep running (again and again
            while the manager waits, each an increment)
    final   the manager has stopped the dataset's containers on the source; the target pulls the last
            increment (the source refuses new mounts from the moment this phase is written)
    fenced  the one transaction: record.node = target, record.epoch + 1, move.phase = fenced
    (done)  the target promotes its copy, the containers are created again there, the move record goes

A manager that restarts (or any failure) before `fenced` undoes the move: the record still names the
source at its epoch, so the source's copy is still the writable one and its containers are started again;
after `fenced` the move only goes forward (`resume`). A replica is a copy kept on another node by the same
pulls, every few seconds (`REPLICATE_EVERY`), read-only until promoted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from shoal import keys
from shoal.data.model import _WORD, Dataset, Profile, Refused, _short, _text_ok, is_dataset_id
from shoal.errors import BadRequest, Conflict

OWNER, REPLICA, PROMOTING = "owner", "replica", "promoting"
ROLES = (OWNER, REPLICA, PROMOTING)
COPY, FINAL, FENCED = "copy", "final", "fenced"
PHASES = (COPY, FINAL, FENCED)
REPLICATE_EVERY = 2.0  # seconds between a replica's pulls (the replica's lag is at most this plus a send)
KEEP_COPIES = 3  # transfer snapshots kept per dataset on each node (the newest common one is the base)
REPLICATE_AFTER = 5.0  # a dataset gets its replicas once it is this old (a create taken back never does)
BYS = ("shoal volume move", "reschedule", "drain", "create", "replica")


def serves_writable(record: Dataset | None, node: str, role: str, epoch: int) -> bool:
    """The fence, as the plugin applies it: `node`'s copy (held at `role`, `epoch` on its pool) is the
    writable one only if the registry's record names `node` at that very epoch (pure)."""
    return record is not None and role == OWNER and record.node == node and record.epoch == epoch


# --- the move record ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """`shoal/moves/<dataset id>`: one move under way (at most one per dataset: created with cas=0)."""

    id: str  # the dataset's id
    name: str
    source: str
    target: str
    phase: str = COPY
    epoch: int = 0  # the record's epoch when the move began; the fence makes it epoch + 1
    by: str = "shoal volume move"
    started: float = 0.0
    updated: float = 0.0
    containers: tuple[str, ...] = ()  # com.docker.swarm.id of the containers that go with the dataset
    bytes: int = 0  # sent so far, over every pull of this move
    rate: float = 0.0  # bytes/s of the last pull
    pulls: int = 0
    reasons: tuple[str, ...] = ()
    manager: str = ""  # the manager driving it (several share a registry: a live one's move is its own)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["containers"], d["reasons"] = list(self.containers), list(self.reasons)
        return d


def parse_move(key_id: str, doc: object) -> Move | Refused:
    """A move record to a Move, or why it is refused (pure; never raises)."""
    if not isinstance(doc, dict) or not is_dataset_id(doc.get("id")) or doc["id"] != key_id:
        return Refused(keys.move(key_id), "not a move record of the dataset it is stored under")
    words = [doc.get(k) for k in ("source", "target")]
    if not all(isinstance(w, str) and _WORD.fullmatch(w) for w in words) or words[0] == words[1]:
        return Refused(keys.move(key_id), "source and target must be two node names")
    if doc.get("phase") not in PHASES:
        return Refused(keys.move(key_id), f"phase {_short(doc.get('phase'))} is not one of {PHASES}")
    ints = [doc.get(k, 0) for k in ("epoch", "bytes", "pulls")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        return Refused(keys.move(key_id), "epoch, bytes and pulls must be whole numbers")
    seqs = [doc.get(k) or [] for k in ("containers", "reasons")]
    if not all(isinstance(s, list) and all(_text_ok(x, 256) for x in s) for s in seqs):
        return Refused(keys.move(key_id), "containers and reasons must be lists of short text")
    if not _text_ok(doc.get("manager", ""), 256):
        return Refused(keys.move(key_id), "manager must be short text")
    fields = {k: doc[k] for k in Move.__dataclass_fields__ if k in doc}
    fields["containers"], fields["reasons"] = tuple(seqs[0]), tuple(seqs[1])
    for k in ("started", "updated", "rate"):
        v = fields.get(k, 0.0)
        fields[k] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0
    return Move(**fields)


def check_move(record: Dataset, target: str, nodes: Iterable[str], moving: Move | None) -> None:
    """What a move asks must make sense before anything is written (pure): a dataset (not a snapshot,
    whose copy is its parent's business), a known node other than its own, no other move under way."""
    if record.kind != "dataset":
        raise BadRequest(f"{record.id[:8]} is a snapshot: move the dataset it was taken of")
    if target not in set(nodes):
        raise BadRequest(f"no node named {target!r}; nodes: {', '.join(sorted(nodes))}")
    if target == record.node:
        raise BadRequest(f"dataset {record.name} is on {target} already")
    if record.parent:
        raise BadRequest(
            f"dataset {record.name} is a clone of snapshot {record.parent[:8]}: clones stay beside their "
            "snapshot (make a full copy with a new dataset to move it)"
        )
    if moving is not None:
        raise Conflict(
            f"dataset {record.name} is already moving from {moving.source} to {moving.target} "
            f"(phase {moving.phase}); wait for it (`shoal volume inspect {record.name}`)"
        )


def tracking(assigned: Replicas | None, dataset_id: str, node: str) -> Replicas:
    """The assignment with `node` in it: a node is put in the assignment before it receives any copy, so
    every copy on any pool is reached by the replica loop and by the deletion chain (pure)."""
    nodes = assigned.nodes if assigned else ()
    return Replicas(dataset_id, tuple(dict.fromkeys((*nodes, node))), assigned.assigned if assigned else 0.0)


def begin_ops(
    move: Move, record_index: int, assigned: Replicas | None = None, assigned_index: int = 0
) -> list[dict[str, Any]]:
    """The transaction that starts a move: its record created only if none exists (cas=0), and only if the
    dataset record is still the one the decision read; the target joins the replica assignment in the
    same transaction (its pulls make a copy there, which stays tracked even if the move is undone)."""
    return [
        {"Verb": "check-index", "Key": keys.dataset(move.id), "Index": record_index},
        {"Verb": "cas", "Key": keys.move(move.id), "Value": move.to_dict(), "Index": 0},
        {
            "Verb": "cas",
            "Key": keys.replicas(move.id),
            "Value": tracking(assigned, move.id, move.target).to_dict(),
            "Index": assigned_index,
        },
    ]


def fence_ops(
    record: Dataset,
    record_index: int,
    move: Move,
    move_index: int,
    now: float,
    assigned: Replicas | None = None,
    assigned_index: int = 0,
) -> tuple[Dataset, list[dict[str, Any]]]:
    """The fence of a move: the record names the target at the next epoch, the move is `fenced`, and the
    old owner takes the target's place in the replica assignment (its demoted copy stays tracked), in one
    transaction that compares on all three records (a second manager, or a move undone meanwhile, makes
    it fail and nothing is written). Returns the new record and the operations (pure)."""
    if move.phase != FINAL or record.node != move.source or record.epoch != move.epoch:
        raise Conflict(f"move of {record.name} cannot be fenced from phase {move.phase}")
    new = replace(record, node=move.target, epoch=record.epoch + 1)
    fenced = replace(move, phase=FENCED, updated=now)
    return new, [
        {"Verb": "cas", "Key": keys.dataset(record.id), "Value": new.to_dict(), "Index": record_index},
        {"Verb": "cas", "Key": keys.move(move.id), "Value": fenced.to_dict(), "Index": move_index},
        {
            "Verb": "cas",
            "Key": keys.replicas(move.id),
            "Value": after_fence(assigned, move).to_dict(),
            "Index": assigned_index,
        },
        # the target is the owner now: what it last received as a replica must not make a later
        # promotion pick it by a stale lag
        {"Verb": "delete", "Key": keys.replica_status(record.id, move.target)},
    ]


def promotion_ops(
    record: Dataset, record_index: int, node: str, replicas: Replicas, replica_index: int
) -> tuple[Dataset, list[dict[str, Any]]]:
    """A replica made the writable copy while its owner is down: the record names `node` at the next
    epoch, and the assignment becomes `replicas` (the old owner in the promoted node's place, so its copy
    catches up by increment when it returns), compared on both records (pure)."""
    if node == record.node:
        raise BadRequest(f"{node} holds the writable copy of {record.name} already")
    if node in replicas.nodes:
        raise BadRequest(f"{node} cannot stay its own replica once promoted")
    new = replace(record, node=node, epoch=record.epoch + 1)
    return new, [
        {"Verb": "cas", "Key": keys.dataset(record.id), "Value": new.to_dict(), "Index": record_index},
        {"Verb": "cas", "Key": keys.replicas(record.id), "Value": replicas.to_dict(), "Index": replica_index},
        # what it last received as a replica says nothing once it is the owner (a later promotion must
        # not pick it by that)
        {"Verb": "delete", "Key": keys.replica_status(record.id, node)},
    ]


def resume(move: Move) -> str:
    """What a manager that finds a move record (after a restart, or a failed step) does with it: before
    the fence the source is still the writable copy, so the move is undone; after it, only forward."""
    return "forward" if move.phase == FENCED else "undo"


# --- transfer snapshots ------------------------------------------------------------------------------


def copy_name(epoch: int, now: float) -> str:
    """A transfer snapshot's name: sortable by (epoch, time), the same on the sender and every receiver."""
    return f"s{epoch:06d}-{int(now * 1000):013d}"


def is_copy_name(name: str) -> bool:
    head, _, tail = name.partition("-")
    return len(head) == 7 and head[0] == "s" and head[1:].isdigit() and len(tail) == 13 and tail.isdigit()


def copy_order(name: str) -> tuple[int, int]:
    """(epoch, time) of a transfer snapshot (`s...`) or of a copy put away by the fence (`old-e...`):
    the newest data a node holds of a dataset is the greatest (pure)."""
    body = name.removeprefix("old-e") if name.startswith("old-e") else name.removeprefix("s")
    epoch, _, ms = body.partition("-")
    return (int(epoch), int(ms)) if epoch.isdigit() and ms.isdigit() else (-1, -1)


def newest_common(sender: Sequence[str], receiver: Sequence[str]) -> str:
    """The base of an incremental send: the newest snapshot both sides hold ("" = a full send)."""
    both = set(sender) & set(receiver)
    return max(both) if both else ""


def to_prune(names: Sequence[str], keep: int = KEEP_COPIES, pinned: Iterable[str] = ()) -> list[str]:
    """Transfer snapshots past the newest `keep` (never a pinned one: a base a receiver still needs)."""
    ordered = sorted(n for n in names if is_copy_name(n))
    pinned = set(pinned)
    return [n for n in ordered[:-keep] if n not in pinned] if len(ordered) > keep else []


# --- replicas -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replicas:
    """`shoal/replicas/<dataset id>`: the nodes the manager chose to keep read-only copies."""

    id: str
    nodes: tuple[str, ...] = ()
    assigned: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "nodes": list(self.nodes), "assigned": self.assigned}


def parse_replicas(key_id: str, doc: object) -> Replicas | None:
    if not isinstance(doc, dict) or doc.get("id") != key_id or not is_dataset_id(key_id):
        return None
    nodes = doc.get("nodes") or []
    if not isinstance(nodes, list) or not all(isinstance(n, str) and _WORD.fullmatch(n) for n in nodes):
        return None
    at = doc.get("assigned", 0.0)
    return Replicas(key_id, tuple(nodes), float(at) if isinstance(at, int | float) else 0.0)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """`shoal/replica-status/<id>/<node>`: what a replica node last received (written by that node)."""

    node: str
    snapshot: str = ""  # the newest copy it holds
    taken: float = 0.0  # when the owner took that snapshot: the replica holds every write before it
    synced: float = 0.0  # when it finished receiving it
    bytes: int = 0
    error: str = ""

    def lag(self, now: float) -> float | None:
        """Seconds of writes the replica does not hold (None before its first copy)."""
        return max(0.0, now - self.taken) if self.taken else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_status(node: str, doc: object) -> ReplicaStatus | None:
    if not isinstance(doc, dict):
        return None
    try:
        return ReplicaStatus(
            node,
            str(doc.get("snapshot", ""))[:64],
            float(doc.get("taken", 0.0)),
            float(doc.get("synced", 0.0)),
            int(doc.get("bytes", 0)),
            str(doc.get("error", ""))[:512],
        )
    except (TypeError, ValueError):
        return None


def replicas_wanted(record: Dataset, profiles: Mapping[str, Profile], now: float) -> int:
    """How many replicas a dataset's profile asks for, once the dataset is old enough to keep (pure)."""
    profile = profiles.get(record.profile)
    if profile is None or record.kind != "dataset" or record.conflict or record.parent:
        return 0
    return profile.replicas if now - record.created >= REPLICATE_AFTER else 0


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """What the manager's replica loop does with one dataset's assignment (pure `replica_plan`)."""

    keep: tuple[str, ...]
    drop: tuple[str, ...] = ()
    add: int = 0  # how many more nodes the scheduler should choose


def replica_plan(record: Dataset, wanted: int, assigned: Replicas | None, live: Iterable[str]) -> ReplicaPlan:
    """Every node in the assignment keeps its place, except the owner (after a promotion or a move it
    holds the record's copy, which the record tracks): a node holds a copy from the moment it is assigned,
    and the assignment is what the deletion chain walks, so nothing ever drops a copy from it — not a
    place beyond what the profile asks (an old owner after a move or a failover), not a node that is down
    (it catches up by increment when it returns), not a node the manager does not list (a cache not yet
    filled, a node removed: its copy is still on its disk). Only nodes in the cluster (`live`) count
    towards the profile's number; missing places are filled by the scheduler (pure)."""
    live = set(live)
    keep = tuple(dict.fromkeys(n for n in (assigned.nodes if assigned else ()) if n != record.node))
    drop = tuple(n for n in (assigned.nodes if assigned else ()) if n not in keep)
    counted = sum(1 for n in keep if n in live)
    return ReplicaPlan(keep, drop, max(0, wanted - counted))


def after_fence(assigned: Replicas | None, move: Move) -> Replicas:
    """The assignment once a move is fenced: the old owner keeps its (demoted) copy as a replica, in the
    target's place if the target was one (pure)."""
    nodes = tuple(n for n in (assigned.nodes if assigned else ()) if n != move.target)
    return Replicas(
        move.id, tuple(dict.fromkeys((*nodes, move.source))), assigned.assigned if assigned else 0.0
    )


# --- progress -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """A pull under way, as `shoal volume inspect` and the CLI's progress bar show it."""

    bytes: int = 0
    started: float = field(default_factory=time.time)
    total: int = 0  # the sender's estimate (0 = unknown)

    def rate(self, now: float) -> float:
        return self.bytes / max(1e-3, now - self.started)
