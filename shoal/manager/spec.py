"""A Docker container-create request, read once into a ContainerSpec for the scheduler (pure).

Expressions come from `-e constraint:/affinity:` (taken out of Env) and from the labels
`com.docker.swarm.constraints` / `com.docker.swarm.affinities` (JSON lists: how docker-compose passes
them); as classic Swarm did, the request sent to the engine carries them in those labels only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from shoal.data.model import DRIVERS
from shoal.errors import BadRequest
from shoal.scheduler.expr import Expr, parse, parse_env
from shoal.scheduler.model import ContainerSpec
from shoal.scheduler.values import HOST_PORTS_LABEL

CONSTRAINTS_LABEL = "com.docker.swarm.constraints"
AFFINITIES_LABEL = "com.docker.swarm.affinities"
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # dockerd's validContainerNamePattern
_HOST_PORT = re.compile(r"^\d{1,5}(-\d{1,5})?$")
_KIND = {dict: "a JSON object", list: "a JSON list", str: "a string", int: "a whole number"}


def _want(value: Any, kind: type, where: str) -> Any:
    """`value` is of `kind` (None is as good as empty: Docker's own clients send null)."""
    if value is None:
        return kind()
    if kind is int and isinstance(value, bool):
        raise BadRequest(f"{where} must be a whole number, not a boolean")
    if not isinstance(value, kind):
        got = type(value).__name__ if not isinstance(value, str) or kind is str else f"the string {value!r}"
        raise BadRequest(f"{where} must be {_KIND[kind]}, not {got}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _want(value, list, where)
    for i, item in enumerate(items):
        _want(item, str, f"{where}[{i}]")
    return items


def _string_map(value: Any, where: str) -> dict[str, str]:
    items = _want(value, dict, where)
    for k, v in items.items():
        _want(v, str, f"{where}[{k!r}]")
    return items


def check_name(name: str) -> None:
    """A container name as dockerd checks it, before anything is placed."""
    if name and not _NAME.match(name):
        raise BadRequest(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def check_body(body: Any) -> None:
    """Every part of a create request that the manager itself reads has the type Docker gives it, so a
    malformed request is a 400 that names the field, never a half-made container or a 500. The rest goes to
    the engine, which checks it and answers in Docker's own words."""
    if not isinstance(body, dict):
        raise BadRequest("the container config must be a JSON object")
    _want(body.get("Image"), str, "Image")
    _strings(body.get("Env"), "Env")
    _string_map(body.get("Labels"), "Labels")
    host = _want(body.get("HostConfig"), dict, "HostConfig")
    for key in ("Binds", "Links", "VolumesFrom"):
        _strings(host.get(key), f"HostConfig.{key}")
    for key in ("NetworkMode", "PidMode", "IpcMode", "VolumeDriver"):
        _want(host.get(key), str, f"HostConfig.{key}")
    for key in ("Memory", "NanoCpus", "CpuShares"):
        if _want(host.get(key), int, f"HostConfig.{key}") < 0:
            raise BadRequest(f"HostConfig.{key} must not be negative")
    for key, bindings in _want(host.get("PortBindings"), dict, "HostConfig.PortBindings").items():
        for i, b in enumerate(_want(bindings, list, f"HostConfig.PortBindings[{key!r}]")):
            where = f"HostConfig.PortBindings[{key!r}][{i}]"
            hp = _want(_want(b, dict, where).get("HostPort"), str, f"{where}.HostPort")
            if hp and not (_HOST_PORT.match(hp) and all(0 < int(p) < 65536 for p in hp.split("-"))):
                raise BadRequest(f"{where}.HostPort {hp!r} is not a port or a range of ports (1-65535)")
    for i, mnt in enumerate(_want(host.get("Mounts"), list, "HostConfig.Mounts")):
        where = f"HostConfig.Mounts[{i}]"
        _want(mnt, dict, where)
        for key in ("Type", "Source", "Target"):
            _want(mnt.get(key), str, f"{where}.{key}")
        opts = _want(mnt.get("VolumeOptions"), dict, f"{where}.VolumeOptions")
        driver = _want(opts.get("DriverConfig"), dict, f"{where}.VolumeOptions.DriverConfig")
        _want(driver.get("Name"), str, f"{where}.VolumeOptions.DriverConfig.Name")
    net = _want(body.get("NetworkingConfig"), dict, "NetworkingConfig")
    _want(net.get("EndpointsConfig"), dict, "NetworkingConfig.EndpointsConfig")


def _label_exprs(labels: dict[str, str], label: str, kind: str) -> list[Expr]:
    """A JSON list label. `\\!` reads as `!`: bash users write `["container\\!=c1"]` to keep `!` from
    history expansion, classic Swarm's documentation wrote it so, and it is no JSON escape at all."""
    raw = labels.get(label)
    if not raw:
        return []
    try:
        items = json.loads(raw.replace("\\!", "!"))
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


def _port_range(spec: str) -> list[tuple[int, str]]:
    """`80/tcp`, `80`, `8000-8002/udp` as (port, proto) pairs; anything else as none (the engine refuses
    it in its own words)."""
    port, _, proto = spec.partition("/")
    lo, _, hi = port.partition("-")
    if not (lo.isdigit() and (hi.isdigit() or not hi)) or int(hi or lo) - int(lo) > 65535:
        return []
    return [(p, proto or "tcp") for p in range(int(lo), int(hi or lo) + 1)]


def host_mode_ports(body: Mapping[str, Any]) -> list[tuple[int, str]]:
    """What a `--net=host` container exposes takes those ports on its node (classic Swarm's port filter in
    host mode): the engine publishes nothing for it, so the ports are the exposed ones."""
    if ((body.get("HostConfig") or {}).get("NetworkMode") or "") != "host":
        return []
    exposed = body.get("ExposedPorts")
    return [p for key in (exposed if isinstance(exposed, dict) else {}) for p in _port_range(str(key))]


def with_refs(body: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """The request with container references the engine cannot read (`node3/db`, the names `docker ps`
    shows through the manager) replaced by the container's id (pure; `ids`: written ref -> id)."""
    host = dict(body.get("HostConfig") or {})
    if not ids or not host:
        return dict(body)

    def swap(ref: str, sep: str) -> str:
        head, cut, rest = ref.partition(sep)
        return ids.get(head.lstrip("/"), head) + cut + rest

    if host.get("Links"):
        host["Links"] = [swap(link, ":") for link in host["Links"]]
    if host.get("VolumesFrom"):
        host["VolumesFrom"] = [swap(vf, ":") for vf in host["VolumesFrom"]]
    for key in ("NetworkMode", "PidMode", "IpcMode"):
        mode = host.get(key)
        if isinstance(mode, str) and mode.startswith("container:"):
            host[key] = "container:" + ids.get(
                mode.removeprefix("container:"), mode.removeprefix("container:")
            )
    return {**body, "HostConfig": host}


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


def with_network_names(body: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The create body with each network reference in `names` (a cluster-wide network's manager id or id
    prefix -> its name, shoal.manager.networks.by_name) written as the name every node knows it by: in
    `HostConfig.NetworkMode` and as a key of `NetworkingConfig.EndpointsConfig` (pure)."""
    if not names:
        return body
    out = dict(body)
    host = dict(out.get("HostConfig") or {})
    if (mode := host.get("NetworkMode")) in names:
        host["NetworkMode"] = names[mode]
        out["HostConfig"] = host
    net = out.get("NetworkingConfig") or {}
    if endpoints := net.get("EndpointsConfig"):
        out["NetworkingConfig"] = {
            **net,
            "EndpointsConfig": {names.get(k, k): v for k, v in endpoints.items()},
        }
    return out


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
        ports=tuple(dict.fromkeys([*_ports(host), *host_mode_ports(body)])),
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
    if taken := host_mode_ports(body):
        labels[HOST_PORTS_LABEL] = json.dumps([f"{p}/{proto}" for p, proto in dict.fromkeys(taken)])
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
