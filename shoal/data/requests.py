"""What a container or volume create asks of the data services, and what is decided (pure): which of
its volumes are datasets, which existing dataset ties it to a node, the records a new one makes, and the
profile's I/O limits for the container. The manager's service layer runs these around placement; the
agent's plugin decides with shoal.data.model when an engine is driven directly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.data.model import (
    DRIVERS,
    Dataset,
    Intent,
    Profile,
    check_room,
    decide,
    matching,
    parse_intent,
    resolve_prefix,
)
from shoal.data.profiles import blkio


@dataclass(frozen=True, slots=True)
class DatasetRequest:
    raw: str  # the Docker volume name, e.g. demoVol@gold
    intent: Intent
    follows: str | None  # the dataset name whose node the container must go to, if any


def dataset_volumes(uses: Sequence[tuple[str, str]]) -> list[str]:
    """The volume names (of a create's (name, driver) uses) that the dataset driver serves."""
    return list(dict.fromkeys(name for name, driver in uses if driver in DRIVERS))


def dataset_request(
    raw: str, datasets: list[Dataset], profiles: Mapping[str, Profile], opts: Mapping[str, str] | None = None
) -> DatasetRequest:
    """Parse one dataset volume name (a bad one fails here, before anything is made) and say which
    existing dataset it ties the container (or volume) to."""
    intent = parse_intent(raw, profiles, opts)
    have = matching(datasets, intent)
    if have is not None:
        follows: str | None = have.name
    elif intent.snapshot_of is not None:
        follows = resolve_prefix(datasets, intent.snapshot_of).name
    else:
        follows = None
    return DatasetRequest(raw, intent, follows)


def dataset_requests(
    uses: Sequence[tuple[str, str]], datasets: list[Dataset], profiles: Mapping[str, Profile]
) -> list[DatasetRequest]:
    return [dataset_request(raw, datasets, profiles) for raw in dataset_volumes(uses)]


def decide_all(
    requests: list[DatasetRequest],
    node: str,
    datasets: list[Dataset],
    default_profile: str,
    free_bytes: int | None,
    ids: Iterable[str],
    now: float,
) -> tuple[list[Dataset], list[Dataset]]:
    """The datasets the container mounts, and the new records to write (ids supplies fresh uuids)."""
    known = list(datasets)
    fresh = iter(ids)
    used, new = [], []
    for r in requests:
        d = decide(r.intent, node, known, fresh, now, r.raw, default_profile)
        if d.new and free_bytes is not None:
            check_room(free_bytes, d.dataset.size, r.intent.name, f"the pool on {node}")
        known += d.new
        new += d.new
        used.append(d.dataset)
    return used, new


def with_limits(
    out: dict[str, Any], used: list[Dataset], profiles: Mapping[str, Profile], device: str | None
) -> dict[str, Any]:
    """The create request with each mounted dataset's profile limits on the pool's device (the strictest
    wins when several datasets share the device)."""
    if not device or not used:
        return out
    host = dict(out.get("HostConfig") or {})
    for d in used:
        for key, entries in blkio(profiles[d.profile], device).items():
            have = [e for e in host.get(key) or [] if e.get("Path") != device]
            mine = [e for e in host.get(key) or [] if e.get("Path") == device]
            rate = min([e["Rate"] for e in mine] + [entries[0]["Rate"]])
            host[key] = [*have, {"Path": device, "Rate": rate}]
    return {**out, "HostConfig": host}
