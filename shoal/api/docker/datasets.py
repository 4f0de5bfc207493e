"""Containers and volume creates that use dataset volumes (driver shoal or flocker): the manager decides
the datasets (shoal.data.model) before the engine is asked, writes their records, and gives the container
its profile's I/O limits. The engine's plugin call then finds the record and its agent converges."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.api.docker.spec import volume_uses
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

if TYPE_CHECKING:
    from shoal.cluster.state import Cluster


@dataclass(frozen=True, slots=True)
class DatasetRequest:
    raw: str  # the Docker volume name, e.g. demoVol@gold
    intent: Intent
    follows: str | None  # the dataset name whose node the container must go to, if any


def dataset_volumes(body: Mapping[str, Any]) -> list[str]:
    """The volume names in a create request that the dataset driver serves."""
    return list(dict.fromkeys(name for name, driver in volume_uses(body) if driver in DRIVERS))


def dataset_request(
    raw: str, datasets: list[Dataset], profiles: Mapping[str, Profile], opts: Mapping[str, str] | None = None
) -> DatasetRequest:
    """Pure: parse one dataset volume name (a bad one fails here, before anything is made) and say which
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
    body: Mapping[str, Any], datasets: list[Dataset], profiles: Mapping[str, Profile]
) -> list[DatasetRequest]:
    return [dataset_request(raw, datasets, profiles) for raw in dataset_volumes(body)]


def decide_all(
    requests: list[DatasetRequest],
    node: str,
    datasets: list[Dataset],
    default_profile: str,
    free_bytes: int | None,
    ids: Iterable[str],
    now: float,
) -> tuple[list[Dataset], list[Dataset]]:
    """Pure: the datasets the container mounts, and the new records to write (ids supplies fresh uuids)."""
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


def intent_binds_to_mounts(body: dict[str, Any]) -> dict[str, Any]:
    """`-v myVol@gold:/data` with no volume driver (the seed's first command): a local volume name cannot
    hold '@', so such a name can only mean a dataset. It becomes a volume mount on the shoal driver, leaving
    the request's other volumes on the driver they had."""
    host = dict(body.get("HostConfig") or {})
    if host.get("VolumeDriver") not in (None, "", "local"):
        return body
    keep, mounts = [], list(host.get("Mounts") or [])
    for b in host.get("Binds") or []:
        src, _, rest = b.partition(":")
        if "@" in src and not src.startswith("/") and rest:
            target, _, mode = rest.partition(":")
            mounts.append(
                {
                    "Type": "volume",
                    "Source": src,
                    "Target": target,
                    "ReadOnly": "ro" in mode.split(","),
                    "VolumeOptions": {"DriverConfig": {"Name": DRIVERS[0]}},
                }
            )
        else:
            keep.append(b)
    if len(mounts) == len(host.get("Mounts") or []):
        return body
    host["Binds"], host["Mounts"] = keep, mounts
    return {**body, "HostConfig": host}


@contextlib.asynccontextmanager
async def committed(c: Cluster, new: list[Dataset]) -> AsyncIterator[None]:
    """Writes a decision's new dataset records for what follows (the engine's create); if that fails, takes
    them back, so nothing is left half-made."""
    if c.records is None:
        raise RuntimeError("the cluster cache is not started")
    await c.records.commit(tuple(new))
    c.datasets = [*c.datasets, *new]
    try:
        yield
    except BaseException:
        for d in reversed(new):
            await c.records.remove(d)
        c.datasets = [d for d in c.datasets if d not in new]
        raise
