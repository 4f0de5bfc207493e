"""Containers and volume creates that use dataset volumes (driver shoal or flocker): the manager decides
the datasets (shoal.data.model) before the engine is asked, writes their records, and gives the container
its profile's I/O limits. The engine's plugin call then finds the record and its agent converges."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.data.model import DRIVERS, Dataset, Intent, Profile, by_name, decide, parse_intent, resolve_prefix
from shoal.data.pool.base import PoolFull
from shoal.data.profiles import blkio


@dataclass(frozen=True, slots=True)
class DatasetRequest:
    raw: str  # the Docker volume name, e.g. demoVol@gold
    intent: Intent
    follows: str | None  # the dataset name whose node the container must go to, if any


def dataset_volumes(body: Mapping[str, Any]) -> list[str]:
    """The volume names in a create request that the dataset driver serves."""
    host = body.get("HostConfig") or {}
    names = []
    if host.get("VolumeDriver") in DRIVERS:
        for b in host.get("Binds") or []:
            src = b.split(":", 1)[0]
            if src and not src.startswith("/") and ":" in b:
                names.append(src)
    for m in host.get("Mounts") or []:
        driver = ((m.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name")
        if m.get("Type") == "volume" and m.get("Source") and driver in DRIVERS:
            names.append(m["Source"])
    return list(dict.fromkeys(names))


def dataset_requests(
    body: Mapping[str, Any], datasets: list[Dataset], profiles: Mapping[str, Profile]
) -> list[DatasetRequest]:
    """Pure: parse every dataset volume (bad names fail here, before anything is made) and say which
    existing dataset each one ties the container to."""
    out = []
    for raw in dataset_volumes(body):
        intent = parse_intent(raw, profiles)
        have = by_name(datasets, intent.name)
        if have is not None:
            follows = have.name
        elif intent.snapshot_of is not None:
            follows = resolve_prefix(datasets, intent.snapshot_of).name
        else:
            follows = None
        out.append(DatasetRequest(raw, intent, follows))
    return out


def decide_all(
    requests: list[DatasetRequest],
    node: str,
    datasets: list[Dataset],
    default_profile: str,
    free_bytes: int | None,
) -> tuple[list[Dataset], list[Dataset]]:
    """The datasets the container mounts, and the new records to write (pure but for fresh uuids)."""
    known = list(datasets)
    used, new = [], []
    for r in requests:
        d = decide(
            r.intent, node, known, [str(uuid.uuid4()) for _ in range(2)], time.time(), r.raw, default_profile
        )
        if d.new and free_bytes is not None and (d.dataset.size > free_bytes or free_bytes < 16 << 20):
            raise PoolFull(
                f"the pool on {node} is full: {free_bytes >> 20} MiB free, dataset {r.intent.name} asks "
                f"{d.dataset.size >> 20 if d.dataset.size else 'at least 16'} MiB; remove datasets or "
                "ask for less"
            )
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
