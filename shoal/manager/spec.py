"""A Docker container-create request, read once into a ContainerSpec for the scheduler (pure).

Expressions come from `-e constraint:/affinity:` (taken out of Env) and from the labels
`com.docker.swarm.constraints` / `com.docker.swarm.affinities` (JSON lists: how docker-compose passes
them); as classic Swarm did, the request sent to the engine carries them in those labels only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shoal.data.model import DRIVERS
from shoal.errors import BadRequest
from shoal.scheduler.expr import Expr, parse, parse_env
from shoal.scheduler.model import ContainerSpec

CONSTRAINTS_LABEL = "com.docker.swarm.constraints"
AFFINITIES_LABEL = "com.docker.swarm.affinities"


def _label_exprs(labels: dict[str, str], label: str, kind: str) -> list[Expr]:
    raw = labels.get(label)
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        raise BadRequest(
            f'label {label} must be a JSON list of expressions, e.g. ["node==node1"]; ' f"got {raw!r}"
        ) from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadRequest(f"label {label} must be a JSON list of strings; got {raw!r}")
    return [parse(kind, i) for i in items]


def _container_refs(host: dict[str, Any]) -> list[str]:
    """Containers this one must share a node with: links, --volumes-from, --net/--pid/--ipc container:."""
    refs = []
    for link in host.get("Links") or []:
        refs.append(link.split(":", 1)[0].lstrip("/"))
    for vf in host.get("VolumesFrom") or []:
        refs.append(vf.split(":", 1)[0])
    for mode in (host.get("NetworkMode"), host.get("PidMode"), host.get("IpcMode")):
        if isinstance(mode, str) and mode.startswith("container:"):
            refs.append(mode.split(":", 1)[1])
    return list(dict.fromkeys(refs))


def _ports(host: dict[str, Any]) -> list[tuple[int, str]]:
    out = []
    for key, bindings in (host.get("PortBindings") or {}).items():
        port, _, proto = key.partition("/")
        for b in bindings or []:
            hp = (b or {}).get("HostPort") or ""
            if hp:
                lo, _, hi = hp.partition("-")
                for p in range(int(lo), int(hi or lo) + 1):
                    out.append((p, proto or "tcp"))
    return out


def volume_uses(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every named volume a create mounts, with its driver: `-v NAME:/path` binds take HostConfig's
    VolumeDriver, `--mount type=volume` entries their own DriverConfig; either defaults to local."""
    host = body.get("HostConfig") or {}
    out = []
    for b in host.get("Binds") or []:
        src = b.split(":", 1)[0]
        if src and not src.startswith("/") and ":" in b:
            out.append((src, host.get("VolumeDriver") or "local"))
    for mnt in host.get("Mounts") or []:
        if mnt.get("Type") == "volume" and mnt.get("Source"):
            driver = ((mnt.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name")
            out.append((mnt["Source"], driver or "local"))
    return out


def named_volumes(body: Mapping[str, Any]) -> list[str]:
    return [name for name, _ in volume_uses(body)]


PREDEFINED_NETWORKS = frozenset({"", "default", "bridge", "host", "none"})


def user_networks(body: dict[str, Any]) -> list[str]:
    """The user-defined networks a create joins: its network mode and its endpoints config."""
    mode = (body.get("HostConfig") or {}).get("NetworkMode") or ""
    names = [] if mode in PREDEFINED_NETWORKS or ":" in mode else [mode]
    names += list(((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).keys())
    return [n for n in dict.fromkeys(names) if n not in PREDEFINED_NETWORKS]


def container_spec(body: dict[str, Any], name: str) -> tuple[ContainerSpec, dict[str, Any]]:
    """The scheduler's view of the request, and the request as the engine should get it."""
    if not isinstance(body, dict):
        raise BadRequest("the container config must be a JSON object")
    image = body.get("Image") or ""
    if not image:
        raise BadRequest("No image was specified: give an image name")
    env, constraints, affinities = parse_env(body.get("Env"))
    labels = dict(body.get("Labels") or {})
    constraints += _label_exprs(labels, CONSTRAINTS_LABEL, "constraint")
    affinities += _label_exprs(labels, AFFINITIES_LABEL, "affinity")
    host = body.get("HostConfig") or {}
    cpus = (host.get("NanoCpus") or 0) / 1e9 or (host.get("CpuShares") or 0) / 1024
    spec = ContainerSpec(
        name=name,
        image=image,
        constraints=tuple(constraints),
        affinities=tuple(affinities),
        ports=tuple(_ports(host)),
        memory=int(host.get("Memory") or 0),
        cpus=float(cpus),
        depends_on=tuple(_container_refs(host)),
        volume_driver=host.get("VolumeDriver") or "",
        volumes=tuple(dict.fromkeys(named_volumes(body))),
        networks=tuple(user_networks(body)),
    )
    out = dict(body)
    out["Env"] = env
    if constraints:
        labels[CONSTRAINTS_LABEL] = json.dumps([str(e) for e in constraints])
    if affinities:
        labels[AFFINITIES_LABEL] = json.dumps([str(e) for e in affinities])
    out["Labels"] = labels
    return spec, out


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
