"""What volumes and networks share: local-scope objects, each engine holding its own copy, and the one
cluster object a set of copies stands for.

A create through the manager without a `node/` prefix makes the object on every node and gives each copy
the label `com.docker.swarm.id` with one id the manager minted (64 hex, as dockerd's ids): those copies
are one cluster-wide object, listed once under its bare name with that id, whatever id each engine gave its
copy. The id lives in the copies themselves, not in a record beside them, so it cannot drift from what the
engines hold: a manager restart or a registry rebuilt from scratch reads the same id back, a copy deleted on
one node leaves the id of the others as it was, and a copy made later on a node that joined carries the
same label. (An id derived from the copies — a hash of the engines' ids, or the first node's — would
change whenever a node joins or one copy goes, and every client holding it would lose the object.) The
label is classic Swarm's own container identity label; docker-compose ignores `com.docker.` labels when it
compares a project's networks and volumes, so it sees no drift.

An object without the label (made on one node directly, made with `node2/NAME`, dockerd's own bridge, host
and none, a volume the engine made for a container) is that node's alone and keeps classic Swarm's
`node/name` form. A create that fails on one node is undone on the others: nothing is left half-made.

`merge`, `resolve` and `pruned` are pure (plain data in and out); the rest does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.cluster.engine import Engine
from shoal.cluster.state import Cluster
from shoal.errors import Ambiguous, BadRequest, EngineError, NotFound, ShoalError

Results = list[tuple[Engine, Any]]

SWARM_ID = "com.docker.swarm.id"  # the manager's id of a cluster-wide object, on each of its copies
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Copy:
    """One engine's copy: its node, the engine's own id for it (a volume's is its name), its name."""

    node: str
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClusterObject:
    """What the manager shows: `id` is the manager's (cluster-wide) or the engine's (one node's), `name`
    bare (cluster-wide) or `node/name`; `copies` in node name order."""

    id: str
    name: str
    copies: tuple[Copy, ...]
    cluster_wide: bool

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(c.node for c in self.copies)

    def on(self, node: str) -> Copy | None:
        return next((c for c in self.copies if c.node == node), None)

    def only(self, copies: Iterable[Copy]) -> ClusterObject:
        """The same object, narrowed to some of its copies (a `node2/NAME` reference to one copy)."""
        keep = tuple(copies)
        return ClusterObject(self.id, self.name, keep, self.cluster_wide)


def filters_object(raw: str) -> dict[str, Any]:
    """A `filters` query value as every list and prune takes it: a JSON object ("" = none). Anything else
    is refused here, before any engine is asked: dockerd answers it with a 500."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError as e:
        raise BadRequest(
            f"invalid filter: {e} (filters are a JSON object, as the docker CLI sends)"
        ) from None
    if not isinstance(parsed, dict):
        raise BadRequest("invalid filter: filters are a JSON object, as the docker CLI sends")
    return parsed


def swarm_id(obj: Mapping[str, Any]) -> str:
    """The manager's id a copy carries ("" when it carries none, or something that is not one)."""
    labels = obj.get("Labels")
    value = labels.get(SWARM_ID) if isinstance(labels, dict) else None
    return value if isinstance(value, str) and _HEX64.fullmatch(value) else ""


def merge(per_node: Mapping[str, Sequence[Mapping[str, Any]]], id_field: str = "Id") -> list[ClusterObject]:
    """Each node's list (node -> the engine's objects) as cluster objects, nodes in name order:
    the copies carrying one manager id are one object (its name is the first node's copy's name; a
    second copy on the same node is ignored), every other copy is its node's own. Volumes have no id:
    pass id_field="Name". Cluster-wide objects come first, in the order first seen, then each node's."""
    wide: dict[str, list[Copy]] = {}
    local: list[ClusterObject] = []
    for node, objs in sorted(per_node.items()):  # node order, so every answer lists them alike
        for o in objs:
            copy = Copy(node, str(o.get(id_field) or ""), str(o.get("Name") or ""))
            if mid := swarm_id(o):
                copies = wide.setdefault(mid, [])
                if all(c.node != node for c in copies):
                    copies.append(copy)
            else:  # a volume has no id of its own: its cluster id is its listed name
                shown = f"{node}/{copy.name}"
                local.append(ClusterObject(shown if id_field == "Name" else copy.id, shown, (copy,), False))
    merged = [ClusterObject(mid, cs[0].name, tuple(cs), True) for mid, cs in wide.items()]
    return merged + local


def resolve(
    objects: Sequence[ClusterObject],
    ref: str,
    nodes: Iterable[str],
    node: str = "",
    prefixes: bool = True,
) -> ClusterObject | None:
    """What `ref` names, most exact first: `node/x` (that node's copy whose name or id is x, or whose id
    starts with x), the manager's id or an engine's own id, a cluster-wide name, the bare name of objects
    that are one node's, then a unique id prefix (`prefixes`: networks; a volume has only its name).
    `node`: where the caller acts (a connect's container): among several matches it keeps that node's.
    Several objects still matching is `Ambiguous`, naming them; nothing is None (the caller says
    what was not found, after looking again)."""
    head, sep, rest = ref.partition("/")
    if sep:
        if head not in set(nodes):
            raise NotFound(f"no node named {head!r} (`docker info` lists the nodes); {ref!r} names nothing")
        on_node = [(o, c) for o in objects if (c := o.on(head)) is not None]
        for level in (
            [(o, c) for o, c in on_node if rest in (c.name, c.id)],
            [(o, c) for o, c in on_node if prefixes and rest and c.id.startswith(rest)],
        ):
            if len(level) > 1:
                raise Ambiguous(f"{ref} is ambiguous ({len(level)} matches on {head}): use more of the id")
            if level:
                o, c = level[0]
                return o.only([c])
        return None

    def own_ids(o: ClusterObject) -> list[str]:  # the engines' ids of its copies (a volume has none)
        return [c.id for c in o.copies if c.id != c.name]

    levels = (
        [o for o in objects if ref == o.id or ref in own_ids(o)],
        [o for o in objects if o.cluster_wide and o.name == ref],
        [o for o in objects if not o.cluster_wide and o.copies[0].name == ref],
        [o for o in objects if prefixes and ref and any(i.startswith(ref) for i in (o.id, *own_ids(o)))],
    )
    for level in levels:
        if len(level) > 1 and node:
            level = [o for o in level if o.on(node) is not None] or level
        if len(level) > 1:
            names = ", ".join(o.name for o in level)
            raise Ambiguous(f"{ref} is ambiguous: it names {names}; name one of them")
        if level:
            return level[0]
    return None


def pruned(before: Sequence[ClusterObject], deleted: Mapping[str, Iterable[str]]) -> list[str]:
    """The names a prune reports: each engine said which of its copies it deleted (node -> names); a
    cluster-wide object all of whose copies went is reported once, by its name, and each copy of one that
    still has others (in use on another node) as `node/name`, as is every one-node object."""
    gone = {(node, name) for node, names in deleted.items() for name in names}
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for o in before:
        went = [c for c in o.copies if (c.node, c.name) in gone]
        seen.update((c.node, c.name) for c in went)
        if o.cluster_wide and went and len(went) == len(o.copies):
            out.append(o.name)
        else:
            out += [f"{c.node}/{c.name}" for c in went]
    out += [f"{node}/{name}" for node, name in sorted(gone - seen)]
    return out


def scattered(objects: Sequence[ClusterObject]) -> dict[str, tuple[str, ...]]:
    """Bare names that several nodes hold each as their own (no cluster-wide object of that name): name
    -> those nodes. A container create naming such a volume has no one object to follow, so it is
    refused with the nodes listed rather than placed on one of them at random."""
    wide = {o.name for o in objects if o.cluster_wide}
    held: dict[str, list[str]] = {}
    for o in objects:
        if not o.cluster_wide and o.copies[0].name not in wide:
            held.setdefault(o.copies[0].name, []).append(o.copies[0].node)
    return {name: tuple(sorted(set(nodes))) for name, nodes in held.items() if len(set(nodes)) > 1}


def labelled(body: Mapping[str, Any], mid: str) -> dict[str, Any]:
    """The create body each node gets for a cluster-wide object: its labels plus the manager's id."""
    labels = body.get("Labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("Labels must be a JSON object of strings")
    given = labels.get(SWARM_ID)
    if given is not None and given != mid:
        raise BadRequest(f"the label {SWARM_ID} is the manager's id of a cluster-wide object: leave it out")
    return {**body, "Labels": {**labels, SWARM_ID: mid}}


def check_name(name: str) -> None:
    if name in (".", "..") or "/" in name or "\0" in name:
        raise BadRequest(f"invalid name {name!r}: a name is one path segment, without '/' or NUL")


async def fan_out(engines: list[Engine], call: Callable[[Engine], Awaitable[Any]]) -> Results:
    """`call` on every engine at once; each engine's answer or the error it raised, in order."""
    results = await asyncio.gather(*(call(e) for e in engines), return_exceptions=True)
    return list(zip(engines, results, strict=True))


async def on_every_node(c: Cluster, method: str, api_path: str, **kw: Any) -> Results:
    """One call on every node's engine at once (a list, a prune): each engine's answer or its error."""
    return await fan_out(list(c.engines.values()), lambda e: e.call(method, api_path, **kw))


def failures(results: Results) -> list[tuple[Engine, BaseException]]:
    return [(e, r) for e, r in results if isinstance(r, BaseException)]


def successes(results: Results) -> Results:
    return [(e, r) for e, r in results if not isinstance(r, BaseException)]


def first_error(failed: list[tuple[Engine, BaseException]], what: str) -> ShoalError:
    """The first node's error, saying which node it came from."""
    e, err = failed[0]
    if isinstance(err, EngineError):
        return EngineError(err.status, f"{err.message} (on {e.node})", err.node)
    if isinstance(err, ShoalError):
        return err
    return ShoalError(f"{what} failed on {e.node}: {err}")


def partly(failed: list[tuple[Engine, BaseException]], what: str, done: list[str]) -> ShoalError:
    """A prune some nodes did and others could not: the first node's error, saying what was done (a
    prune is safe to run again; the nodes that failed are named in the error)."""
    err = first_error(failed, what)
    if not done:
        return err
    tail = f"; {what} did run on the other nodes and deleted {', '.join(done)}"
    if isinstance(err, EngineError):
        return EngineError(err.status, err.message + tail, err.node)
    return ShoalError(err.message + tail)
