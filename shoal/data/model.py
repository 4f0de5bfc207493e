"""Datasets, profiles and volume-name intent as plain data, and the decisions over them (pure).

A Docker volume name carries intent, as the seed has it: `NAME@PROFILE` makes (or finds) dataset NAME with
that profile, `NAME@snapshot-PREFIX` makes NAME from a new snapshot of the dataset whose id starts with
PREFIX, plain `NAME` uses the default profile. The manager decides with these functions before a container
is created; the agent's plugin decides with the same ones when an engine is driven directly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.errors import BadRequest, Conflict, NotFound, PoolFull

DRIVERS = ("shoal", "flocker")  # flocker: so the seed's commands and compose files run unchanged
MAX_NAME_BYTES = 255
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PREFIX = re.compile(r"^[0-9a-f-]+$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)i?[bB]?$")
MIN_FREE = 16 << 20  # below this a pool counts as full whatever the dataset asks
# a dataset id is a canonical (lowercase) uuid: the only thing that ever becomes a path on a pool
_DATASET_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")  # node and profile names
KINDS = ("dataset", "snapshot")
MAX_TEXT = 1024  # bytes of a free-text field (volume name, conflict) a record may carry


@dataclass(frozen=True, slots=True)
class Profile:
    """A storage class: the I/O limits a container gets on a dataset of this profile (0 = unlimited)."""

    name: str
    read_bps: int = 0
    write_bps: int = 0
    read_iops: int = 0
    write_iops: int = 0
    replicas: int = 0  # read-only copies kept on other nodes (shoal.data.moves), shipped every few seconds
    # where the scheduler may put those replicas: constraint expressions as `-e constraint:` takes them
    # (`storage==ssd`, `region!=eu-1`), checked when the profiles are loaded (shoal.data.profiles)
    constraints: tuple[str, ...] = ()


DEFAULT_PROFILES: Mapping[str, Profile] = {
    "gold": Profile("gold", replicas=1),
    "silver": Profile("silver", read_bps=100 << 20, write_bps=100 << 20, read_iops=4000, write_iops=4000),
    "bronze": Profile("bronze", read_bps=10 << 20, write_bps=10 << 20, read_iops=500, write_iops=500),
}
DEFAULT_PROFILE = "bronze"  # Flocker's default


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str  # uuid4
    name: str  # unique among datasets; "" for snapshots
    profile: str
    node: str
    size: int = 0  # bytes, 0 = no limit
    parent: str = ""  # the snapshot a clone was made from, the dataset a snapshot was taken of
    kind: str = "dataset"  # "dataset" (writable) | "snapshot" (read-only)
    created: float = 0.0
    volume: str = ""  # the Docker volume name it was asked for by (e.g. demoVol@gold)
    # the registry's view only (never on the pool): when the node re-published a record the registry had
    # lost (0 = never), and why the name is not this dataset's (another dataset claimed it first)
    recovered: float = 0.0
    conflict: str = ""
    # the fencing epoch: raised by one in the registry transaction that moves the writable copy to another
    # node (a move's fence, a replica's promotion); a node serves the dataset writable only while the
    # registry's record names it at the epoch its own pool holds (shoal.data.moves)
    epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Dataset:
        return Dataset(**{k: d[k] for k in Dataset.__dataclass_fields__ if k in d})

    def identity(self) -> tuple[Any, ...]:
        """What a dataset is, whichever side holds the record: the fields the pool's own record keeps
        (size aside: it is the one setting that may change)."""
        return (self.id, self.name, self.profile, self.parent, self.kind, self.created, self.volume)


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that is not used, and why (a forged or broken one: it is reported, never acted on)."""

    key: str
    reason: str
    node: str = ""  # the node the record names, when it names one at all

    def __str__(self) -> str:
        return f"{_short(self.key, quote=False)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Deletion:
    """An explicit, durable request to delete a dataset or snapshot (what `docker volume rm` and `shoal
    volume rm` write). Only its node acts on it, and only once no container uses the dataset; a refused
    request stays, with the reason, until the one who asked takes it back or asks again."""

    id: str
    node: str
    name: str = ""
    by: str = ""  # "docker volume rm" | "shoal volume rm"
    requested: float = 0.0
    refused: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_dataset_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 36 and bool(_DATASET_ID.fullmatch(value))


def _short(value: object, quote: bool = True) -> str:
    """A value as a report may quote it: bounded, quoted if text, control characters escaped."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", errors="replace").decode("ascii", errors="replace")
    text = text if len(text) <= 60 else f"{text[:57]}..."
    return f"'{text}'" if isinstance(value, str) and quote else text


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text_ok(value: object, limit: int = MAX_TEXT) -> bool:
    return (
        isinstance(value, str)
        and len(value.encode(errors="replace")) <= limit
        and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    )


def record_problem(key_id: str, doc: object) -> str:
    """Why a record (the value under shoal/datasets/<key_id>, or a pool's own record file) cannot be used,
    or "" when it can. Nothing in a record becomes a path unless it passes here: ids are canonical uuids
    that match their key, names follow the volume-name rules, nodes and profiles are plain words (pure)."""
    if not isinstance(doc, dict):
        return "the value is not a JSON object"
    rid = doc.get("id")
    if not is_dataset_id(rid):
        return f"id {_short(rid)} is not a dataset id (a lowercase uuid)"
    if rid != key_id:
        return f"the record says id {rid} but is stored under {_short(key_id)}"
    kind, name, parent = doc.get("kind", "dataset"), doc.get("name", ""), doc.get("parent", "")
    if kind not in KINDS:
        return f"kind {_short(kind)} is not one of {', '.join(KINDS)}"
    if parent != "" and not is_dataset_id(parent):
        return f"parent {_short(parent)} is not a dataset id"
    if kind == "snapshot" and name != "":
        return "a snapshot has no name (it is found by its id)"
    if kind == "dataset" and not (
        isinstance(name, str) and _NAME.fullmatch(name) and len(name) <= MAX_NAME_BYTES and ".." not in name
    ):
        return f"name {_short(name)} is not a volume name (letters, digits, '_', '.', '-')"
    for what in ("node", "profile"):
        value = doc.get(what, "")
        if not (isinstance(value, str) and _WORD.fullmatch(value)):
            return f"{what} {_short(value)} is not a {what} name"
    size, created = doc.get("size", 0), doc.get("created", 0.0)
    if not (isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 1 << 62):
        return f"size {_short(size)} is not a number of bytes"
    epoch = doc.get("epoch", 0)
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch < 1 << 62):
        return f"epoch {_short(epoch)} is not a fencing epoch (a whole number)"
    for what, value in (("created", created), ("recovered", doc.get("recovered", 0.0))):
        if not (_is_number(value) and value >= 0):
            return f"{what} {_short(value)} is not a time"
    for what in ("volume", "conflict"):
        if not _text_ok(doc.get(what, "")):
            return f"{what} {_short(doc.get(what))} is not a short line of text"
    return ""


def parse_record(key_id: str, doc: object) -> Dataset | Refused:
    """A registry record to a Dataset, or the reason it is refused (pure; never raises)."""
    problem = record_problem(key_id, doc)
    if problem:
        node = doc.get("node") if isinstance(doc, dict) else None
        return Refused(key_id, problem, node if isinstance(node, str) and _WORD.fullmatch(node) else "")
    assert isinstance(doc, dict)
    return Dataset.from_dict(doc)


def parse_deletion(key_id: str, doc: object) -> Deletion | Refused:
    """A deletion request to a Deletion, or the reason it is refused (pure; never raises)."""
    if not isinstance(doc, dict):
        return Refused(key_id, "the value is not a JSON object")
    rid, node = doc.get("id"), doc.get("node")
    if not is_dataset_id(rid) or rid != key_id:
        return Refused(key_id, f"id {_short(rid)} is not the dataset id it is stored under")
    if not (isinstance(node, str) and _WORD.fullmatch(node)):
        return Refused(key_id, f"node {_short(node)} is not a node name")
    fields = {k: doc.get(k, "") for k in ("name", "by", "refused")}
    if not all(_text_ok(v) for v in fields.values()) or not _is_number(doc.get("requested", 0.0)):
        return Refused(key_id, "name, by, refused or requested is not what a deletion request holds")
    return Deletion(rid, node, requested=float(doc.get("requested", 0.0)), **fields)


@dataclass(frozen=True, slots=True)
class Intent:
    """What a volume name asks for."""

    name: str
    profile: str | None = None
    snapshot_of: str | None = None  # an id prefix
    size: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The records a request makes (new), or the dataset it names (existing)."""

    dataset: Dataset
    new: tuple[Dataset, ...] = field(default=())


def parse_size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise BadRequest(f"size {text!r} is not a size: use e.g. 512M, 1G, 10G")
    return int(float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2).lower() or " "))))


def parse_intent(raw: str, profiles: Mapping[str, Profile], opts: Mapping[str, str] | None = None) -> Intent:
    """A volume name (and `--opt profile=/size=`) to an Intent, or a BadRequest that says what is wrong."""
    opts = opts or {}
    if not raw:
        raise BadRequest("a dataset volume needs a name, e.g. -v myVol@gold:/data")
    if len(raw.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"volume name is {len(raw.encode())} bytes; at most {MAX_NAME_BYTES}")
    if "/" in raw or ".." in raw:
        raise BadRequest(f"volume name {raw!r} may not contain '/' or '..'")
    name, sep, tail = raw.partition("@")
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"volume name {name!r} must start with a letter or digit and hold only letters, digits, "
            "'_', '.' and '-'"
        )
    size = parse_size(opts["size"]) if opts.get("size") else 0
    unknown = sorted(set(opts) - {"profile", "size"})
    if unknown:
        raise BadRequest(f"unknown volume option {', '.join(unknown)}: shoal takes profile and size")
    if sep and tail.startswith("snapshot-"):
        prefix = tail.removeprefix("snapshot-").lower()
        if not prefix or not _PREFIX.fullmatch(prefix):
            raise BadRequest(
                f"{raw!r} names no dataset: after @snapshot- give the first hex digits of a dataset id "
                "(`shoal volume ls` shows them)"
            )
        return Intent(name, snapshot_of=prefix, size=size)
    profile = tail if sep else opts.get("profile")
    if sep and not tail:
        raise BadRequest(f"{raw!r} names no profile after '@'; profiles: {', '.join(profiles)}")
    if profile is not None and profile not in profiles:
        raise BadRequest(
            f"unknown storage profile {profile!r} in {raw!r}; profiles: {', '.join(profiles)} "
            "(or set them in the profiles file)"
        )
    return Intent(name, profile=profile, size=size)


def by_name(datasets: Iterable[Dataset], name: str) -> Dataset | None:
    """The dataset that holds `name` (one re-published with a name already taken does not)."""
    return next((d for d in datasets if d.kind == "dataset" and d.name == name and not d.conflict), None)


def matching(datasets: Iterable[Dataset], intent: Intent) -> Dataset | None:
    """The existing dataset an intent names, if any; asking it for another profile is a Conflict."""
    have = by_name(datasets, intent.name)
    if have is not None and intent.profile is not None and intent.profile != have.profile:
        raise Conflict(
            f"dataset {have.name} exists with profile {have.profile}, not {intent.profile}; use "
            f"{have.name}@{have.profile} or another name"
        )
    return have


def check_room(free: int, size: int, name: str, pool: str) -> None:
    """A new dataset needs its size (or, unsized, MIN_FREE) free in `pool` (how the message names it)."""
    if size > free or free < MIN_FREE:
        raise PoolFull(
            f"{pool} is full: {free >> 20} MiB free, dataset {name} asks "
            f"{size >> 20 if size else f'at least {MIN_FREE >> 20}'} MiB; remove datasets or ask for less"
        )


def resolve_prefix(datasets: Iterable[Dataset], prefix: str) -> Dataset:
    """The dataset whose id starts with prefix: none or several is an error that lists what there is."""
    sources = [d for d in datasets if d.kind == "dataset"]
    hits = [d for d in sources if d.id.startswith(prefix)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        known = ", ".join(f"{d.name} ({d.id[:8]})" for d in sources[:10]) or "none yet"
        raise NotFound(f"no dataset id starts with {prefix!r}; datasets: {known}")
    listed = ", ".join(f"{d.name} ({d.id})" for d in hits)
    raise BadRequest(f"snapshot-{prefix} is ambiguous: it matches {listed}; give more of the id")


def decide(
    intent: Intent,
    node: str,
    datasets: Iterable[Dataset],
    ids: Iterable[str],
    now: float,
    volume: str = "",
    default_profile: str = DEFAULT_PROFILE,
) -> Decision:
    """Which dataset a volume name means, making the records for a new one.

    A new dataset goes on `node` (the scheduler's choice); a snapshot and its clone go on the source's
    node, whatever `node` says. `ids` supplies fresh uuids (the caller's randomness, not ours)."""
    datasets = list(datasets)
    fresh = iter(ids)
    have = matching(datasets, intent)
    if have is not None:
        if intent.snapshot_of is not None and not (have.parent and _parent_of(datasets, have, intent)):
            raise Conflict(f"dataset {have.name} already exists; a snapshot volume needs a new name")
        return Decision(have)
    if intent.snapshot_of is not None:
        source = resolve_prefix(datasets, intent.snapshot_of)
        snap = Dataset(
            next(fresh), "", source.profile, source.node, source.size, source.id, "snapshot", now, ""
        )
        clone = Dataset(
            next(fresh),
            intent.name,
            source.profile,
            source.node,
            source.size,
            snap.id,
            "dataset",
            now,
            volume,
        )
        return Decision(clone, (snap, clone))
    profile = intent.profile or default_profile
    made = Dataset(next(fresh), intent.name, profile, node, intent.size, "", "dataset", now, volume)
    return Decision(made, (made,))


def _parent_of(datasets: list[Dataset], clone: Dataset, intent: Intent) -> bool:
    """Is `clone` already the answer to this snapshot intent (the same name asked again)?"""
    snap = next((d for d in datasets if d.id == clone.parent), None)
    return snap is not None and snap.parent.startswith(intent.snapshot_of or "")


def check_remove(target: Dataset, datasets: Iterable[Dataset], mounted_by: int) -> None:
    """A dataset in use or with snapshots/clones hanging off it stays; the error says which."""
    if mounted_by:
        raise Conflict(
            f"dataset {target.name or target.id} is mounted by {mounted_by} container(s); stop them first"
        )
    children = [d for d in datasets if d.parent == target.id]
    if children:
        listed = ", ".join(f"{d.kind} {d.name or d.id[:8]}" for d in children)
        raise Conflict(f"dataset {target.name or target.id} has {listed} made from it; remove those first")


def check_unused(target: Dataset, users: Iterable[str], node: str) -> None:
    """The node's own engine is asked before any deletion: a container that uses the dataset (running or
    not, under any of the dataset's volume names) keeps it, as dockerd keeps a volume in use."""
    users = sorted(users)
    if users:
        raise Conflict(
            f"dataset {target.name or target.id} is in use by container(s) {', '.join(users)} on {node}; "
            "remove them first (docker rm -f ...)"
        )


def containers_using(target: Dataset, containers: Iterable[Mapping[str, Any]], path: str) -> list[str]:
    """The names of the engine's containers (its /containers/json?all=1 entries) that use `target`: a
    dataset volume of its name (any `@...` suffix), or a mount of its path (pure)."""
    out = []
    for c in containers:
        for m in c.get("Mounts") or []:
            if not isinstance(m, Mapping):
                continue
            source = str(m.get("Source") or "")
            named = (
                m.get("Type") == "volume"
                and m.get("Driver") in DRIVERS
                and target.name
                and str(m.get("Name") or "").partition("@")[0] == target.name
            )
            if named or source == path or source.startswith(path + "/"):
                names = c.get("Names") or [c.get("Id", "")[:12]]
                out.append(str(names[0]).lstrip("/"))
                break
    return out


def find(datasets: Iterable[Dataset], ref: str) -> Dataset:
    """A dataset or snapshot by name, full id or unique id prefix."""
    datasets = list(datasets)
    named = by_name(datasets, ref)
    if named is not None:
        return named
    hits = [d for d in datasets if d.id.startswith(ref.lower())] if ref else []
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise BadRequest(f"{ref!r} is ambiguous: " + ", ".join(f"{d.name or d.kind} ({d.id})" for d in hits))
    raise NotFound(
        f"no dataset or snapshot named {ref!r} or with an id starting so; `shoal volume ls` lists them"
    )


def decide_snapshot(source: Dataset, new_id: str, now: float) -> Dataset:
    if source.kind != "dataset":
        raise BadRequest(f"{source.id[:8]} is a snapshot already; snapshot a dataset")
    return Dataset(new_id, "", source.profile, source.node, source.size, source.id, "snapshot", now, "")


def decide_clone(
    source: Dataset, name: str, datasets: Iterable[Dataset], ids: Iterable[str], now: float
) -> tuple[Dataset, ...]:
    """A writable copy named `name`: of a snapshot directly, of a dataset through a new snapshot of it."""
    parse_intent(name, {})  # the same name rules as a volume name (no profile part allowed here)
    if by_name(datasets, name) is not None:
        raise Conflict(f"a dataset named {name} exists already")
    fresh = iter(ids)
    made: tuple[Dataset, ...] = ()
    snap = source
    if source.kind == "dataset":
        snap = decide_snapshot(source, next(fresh), now)
        made = (snap,)
    clone = Dataset(next(fresh), name, snap.profile, snap.node, snap.size, snap.id, "dataset", now, name)
    return (*made, clone)
