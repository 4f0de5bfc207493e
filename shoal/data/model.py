"""Datasets, profiles and volume-name intent as plain data, and the decisions over them (pure).

A Docker volume name carries intent, as the seed has it: `NAME@PROFILE` makes (or finds) dataset NAME with
that profile, `NAME@snapshot-PREFIX` makes NAME from a new snapshot of the dataset whose id starts with
PREFIX, plain `NAME` uses the default profile. The manager decides with these functions before a container
is created; the agent's plugin decides with the same ones when an engine is driven directly.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Profile:
    """A storage class: the I/O limits a container gets on a dataset of this profile (0 = unlimited)."""

    name: str
    read_bps: int = 0
    write_bps: int = 0
    read_iops: int = 0
    write_iops: int = 0


DEFAULT_PROFILES: Mapping[str, Profile] = {
    "gold": Profile("gold"),
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Dataset:
        return Dataset(**{k: d[k] for k in Dataset.__dataclass_fields__ if k in d})


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
    if not _NAME.match(name):
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
        if not prefix or not _PREFIX.match(prefix):
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
    return next((d for d in datasets if d.kind == "dataset" and d.name == name), None)


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
