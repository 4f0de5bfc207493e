"""The JSON a simulated engine answers, in dockerd 20.10's shapes: every key dockerd writes, the same
types, `null` where dockerd writes null. Values that differ by nature (ids, times, pids, addresses, paths)
are made up; everything a client reads for meaning (states, names, labels, images, limits, ports) is the
container's own. tests/contract/test_engine.py holds these shapes to a real dockerd.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shoal.sim.engine_model import (
    API_VERSION,
    HOST_DEFAULTS,
    IMAGES,
    KERNEL,
    MIN_API_VERSION,
    SERVER_VERSION,
    Container,
    Image,
    Mount,
    Network,
    Volume,
    now_ns,
    rfc3339,
)
from shoal.sim.engine_node import NodeEngine

ROOT = "/var/lib/docker"
_EMPTY_CONFIG = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}  # fmt: skip


def version() -> dict[str, Any]:
    details = {"ApiVersion": API_VERSION, "Arch": "amd64", "BuildTime": "2023-04-01T00:00:00.000000000+00:00",
               "Experimental": "false", "GitCommit": "5d6db84", "GoVersion": "go1.19.8",
               "KernelVersion": KERNEL, "MinAPIVersion": MIN_API_VERSION, "Os": "linux"}  # fmt: skip
    return {
        "Platform": {"Name": ""},
        "Components": [
            {"Name": "Engine", "Version": SERVER_VERSION, "Details": details},
            {"Name": "containerd", "Version": "1.6.20~ds1", "Details": {"GitCommit": "1.6.20~ds1-1+deb12u3"}},
            {"Name": "runc", "Version": "1.1.5+ds1", "Details": {"GitCommit": "1.1.5+ds1-1+deb12u1"}},
            {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": ""}},
        ],
        "Version": SERVER_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "5d6db84",
        "GoVersion": "go1.19.8",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": KERNEL,
        "BuildTime": "2023-04-01T00:00:00.000000000+00:00",
    }


def info(node: NodeEngine, address: str) -> dict[str, Any]:
    total, running, paused, stopped = node.counts()
    spec = node.spec
    return {
        "ID": node.id,
        "Containers": total,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": len(IMAGES),
        "Driver": "overlay2",
        "DriverStatus": [
            ["Backing Filesystem", "extfs"],
            ["Supports d_type", "true"],
            ["Native Overlay Diff", "true"],
            ["userxattr", "false"],
        ],  # fmt: skip
        "Plugins": {
            "Volume": list(spec.volume_drivers),
            "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"],
            "Authorization": None,
            "Log": [
                "awslogs",
                "fluentd",
                "gcplogs",
                "gelf",
                "journald",
                "json-file",
                "local",
                "logentries",
                "splunk",
                "syslog",
            ],  # fmt: skip
        },
        **dict.fromkeys(
            (
                "MemoryLimit",
                "SwapLimit",
                "KernelMemory",
                "KernelMemoryTCP",
                "CpuCfsPeriod",
                "CpuCfsQuota",
                "CPUShares",
                "CPUSet",
                "PidsLimit",
                "IPv4Forwarding",
                "BridgeNfIptables",
                "BridgeNfIp6tables",
            ),
            True,
        ),  # fmt: skip
        "Debug": False,
        "NFd": 24 + total,
        "OomKillDisable": True,
        "NGoroutines": 40 + len(node.listeners),
        "SystemTime": rfc3339(now_ns()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "1",
        "NEventsListener": len(node.listeners),
        "KernelVersion": KERNEL,
        "OperatingSystem": spec.os,
        "OSVersion": "12",
        "OSType": "linux",
        "Architecture": "x86_64",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True, "Official": True}
            },
            "Mirrors": [],
        },
        "NCPU": spec.ncpu,
        "MemTotal": spec.mem_total,
        "GenericResources": None,
        "DockerRootDir": ROOT,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": spec.name,
        "Labels": list(spec.labels),
        "ExperimentalBuild": False,
        "ServerVersion": SERVER_VERSION,
        "Runtimes": {
            "io.containerd.runc.v2": {"path": "runc"},
            "io.containerd.runtime.v1.linux": {"path": "runc"},
            "runc": {"path": "runc"},
        },  # fmt: skip
        "DefaultRuntime": "runc",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },  # fmt: skip
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "1.6.20~ds1-1+deb12u3", "Expected": "1.6.20~ds1-1+deb12u3"},
        "RuncCommit": {"ID": "1.1.5+ds1-1+deb12u1", "Expected": "1.1.5+ds1-1+deb12u1"},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": [
            f"WARNING: API is accessible on http://{address} without encryption.\n         Access to the "
            "remote API is equivalent to root access on the host. Refer\n         to the 'Docker daemon "
            "attack surface' section in the documentation for\n         more information: "
            "https://docs.docker.com/go/attack-surface/"
        ],
    }


# --- containers ---------------------------------------------------------------------------------


def _endpoint(c: Container, net: Network | None, aliases: bool) -> dict[str, Any]:
    live = c.address and net is not None and net.subnet
    up = c.running and net is not None
    ep: dict[str, Any] = {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": [c.id[:12]] if aliases and up and net is not None and not net.predefined else None,
        "NetworkID": c.network_id,
        "EndpointID": c.endpoint_id if up else "",
        "Gateway": net.gateway if live and net else "",
        "IPAddress": net.address(c.address) if live and net else "",
        "IPPrefixLen": 16 if live else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": _mac(c.address) if live else "",
        "DriverOpts": None,
    }
    return ep


def _mac(n: int) -> str:
    return f"02:42:ac:11:{n >> 8 & 255:02x}:{n & 255:02x}"


def _networks(node: NodeEngine, c: Container, aliases: bool) -> dict[str, Any]:
    if c.network_mode.startswith("container:"):
        return {}
    return {c.network_name: _endpoint(c, node.network_of(c), aliases)}


def _mount(node: NodeEngine, m: Mount, listed: bool) -> dict[str, Any]:
    if m.kind == "bind":
        return {"Type": "bind", "Source": m.source, "Destination": m.destination, "Mode": m.mode, "RW": m.rw,
                "Propagation": "rprivate"}  # fmt: skip
    v = node.volumes.get(m.source)
    anonymous_in_list = listed and v is not None and v.anonymous
    return {"Type": "volume", "Name": m.source,
            "Source": "" if anonymous_in_list else f"{ROOT}/volumes/{m.source}/_data",
            "Destination": m.destination, "Driver": v.driver if v else "local", "Mode": m.mode, "RW": m.rw,
            "Propagation": ""}  # fmt: skip


def _port_list(c: Container) -> list[dict[str, Any]]:
    if not c.running:
        return []
    out: list[dict[str, Any]] = []
    bound = {p for p, _, _ in c.ports}
    for private, ip, public in c.ports:
        port, _, proto = private.partition("/")
        for host_ip in [ip] if ip else ["0.0.0.0", "::"]:
            out.append(
                {"IP": host_ip, "PrivatePort": int(port), "PublicPort": public, "Type": proto or "tcp"}
            )
    for private in c.exposed():
        if private not in bound:
            port, _, proto = private.partition("/")
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    return out


def _command(c: Container) -> str:
    return " ".join(c.argv())


def summary(node: NodeEngine, c: Container, now: int) -> dict[str, Any]:
    """One entry of GET /containers/json."""
    return {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image_ref,
        "ImageID": c.image.id if c.image else "",
        "Command": _command(c),
        "Created": c.created_ns // 1_000_000_000,
        "Ports": _port_list(c),
        "Labels": c.config.get("Labels"),
        "State": c.status,
        "Status": c.state_text(now),
        "HostConfig": {"NetworkMode": c.network_mode},
        "NetworkSettings": {"Networks": _networks(node, c, False)},
        "Mounts": [_mount(node, m, True) for m in sorted(c.mounts, key=lambda m: m.destination)],
    }


_MARK = "\x00status\x00"
_MARK_JSON = json.dumps(_MARK).encode()


def summary_json(node: NodeEngine, c: Container, now: int) -> bytes:
    """The list entry, encoded. All of it but STATUS (which reads the clock) changes only with the state,
    so it is encoded once per state: `docker ps -a` over 30,000 containers is the manager's heaviest read."""
    key = (c.status, c.started_ns, c.finished_ns, c.network_id)
    if c.listed is None or c.listed[0] != key:
        doc = summary(node, c, now)
        doc["Status"] = _MARK
        head, tail = json.dumps(doc).encode().split(_MARK_JSON)
        c.listed = (key, head, tail)
    return c.listed[1] + json.dumps(c.state_text(now)).encode() + c.listed[2]


def host_config(c: Container) -> dict[str, Any]:
    out = {**HOST_DEFAULTS, **c.host}
    if c.host.get("Memory") and not c.host.get("MemorySwap"):
        out["MemorySwap"] = 2 * c.host["Memory"]
    if c.host.get("Privileged"):
        out["MaskedPaths"], out["ReadonlyPaths"] = None, None
    return out


def config(c: Container) -> dict[str, Any]:
    cfg = c.config
    img: Image | None = c.image
    exposed = {
        p: {}
        for p in c.exposed()
        if p in (img.exposed if img else ()) or p in (cfg.get("ExposedPorts") or {})
    }
    volumes = {m.destination: {} for m in c.mounts if m.destination in (img.volumes if img else ())}
    volumes.update(cfg.get("Volumes") or {})
    cmd = cfg.get("Cmd")
    if cmd is None and not cfg.get("Entrypoint") and img:
        cmd = list(img.cmd)
    out: dict[str, Any] = {
        "Hostname": cfg.get("Hostname") or c.id[:12],
        "Domainname": cfg.get("Domainname", ""),
        "User": cfg.get("User", ""),
        "AttachStdin": cfg.get("AttachStdin", False),
        "AttachStdout": cfg.get("AttachStdout", False),
        "AttachStderr": cfg.get("AttachStderr", False),
    }
    if exposed:
        out["ExposedPorts"] = exposed
    out.update({
        "Tty": cfg.get("Tty", False),
        "OpenStdin": cfg.get("OpenStdin", False),
        "StdinOnce": cfg.get("StdinOnce", False),
        "Env": c.env() or None,
        "Cmd": cmd,
        "Image": c.image_ref,
        "Volumes": volumes or None,
        "WorkingDir": cfg.get("WorkingDir") or (img.workdir if img else ""),
        "Entrypoint": cfg.get("Entrypoint"),
        "OnBuild": None,
        "Labels": cfg.get("Labels"),
    })  # fmt: skip
    for k in ("StopSignal", "StopTimeout", "Healthcheck", "MacAddress"):
        if k in cfg:
            out[k] = cfg[k]
    return out


def _inspect_ports(c: Container) -> dict[str, Any]:
    if not c.running:
        return {}
    out: dict[str, Any] = {}
    for private, ip, public in c.ports:
        out.setdefault(private, [])
        for host_ip in [ip] if ip else ["0.0.0.0", "::"]:
            out[private].append({"HostIp": host_ip, "HostPort": str(public)})
    for private in c.exposed():
        out.setdefault(private, None)
    return out


def inspect(node: NodeEngine, c: Container) -> dict[str, Any]:
    """GET /containers/{id}/json."""
    argv = c.argv()
    net = None if c.network_mode.startswith("container:") else node.network_of(c)
    live = bool(c.address and net is not None and net.subnet)
    up = c.running and net is not None and not c.network_mode.startswith("container:")
    default_bridge = net is not None and net.name == "bridge"
    joined = c.network_mode.startswith("container:")
    return {
        "Id": c.id,
        "Created": rfc3339(c.created_ns),
        "Path": argv[0] if argv else "",
        "Args": list(argv[1:]),
        "State": {
            "Status": c.status,
            "Running": c.running,
            "Paused": c.status == "paused",
            "Restarting": c.status == "restarting",
            "OOMKilled": False,
            "Dead": c.status == "dead",
            "Pid": c.pid,
            "ExitCode": c.exit_code,
            "Error": c.error,
            "StartedAt": rfc3339(c.started_ns),
            "FinishedAt": rfc3339(c.finished_ns),
        },
        "Image": c.image.id if c.image else "",
        "ResolvConfPath": f"{ROOT}/containers/{c.id}/resolv.conf" if c.started_ns else "",
        "HostnamePath": f"{ROOT}/containers/{c.id}/hostname" if c.started_ns else "",
        "HostsPath": f"{ROOT}/containers/{c.id}/hosts" if c.started_ns else "",
        "LogPath": f"{ROOT}/containers/{c.id}/{c.id}-json.log" if c.started_ns else "",
        "Name": "/" + c.name,
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": host_config(c),
        "GraphDriver": {
            "Data": {
                "LowerDir": f"{ROOT}/overlay2/{c.id}-init/diff",
                "MergedDir": f"{ROOT}/overlay2/{c.id}/merged",
                "UpperDir": f"{ROOT}/overlay2/{c.id}/diff",
                "WorkDir": f"{ROOT}/overlay2/{c.id}/work",
            },
            "Name": "overlay2",
        },
        "Mounts": [_mount(node, m, False) for m in c.mounts],
        "Config": config(c),
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": c.sandbox if c.started_ns and not joined else "",
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": _inspect_ports(c) if not joined else {},
            "SandboxKey": f"/var/run/docker/netns/{c.sandbox[:12]}" if c.started_ns and not joined else "",
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": c.endpoint_id if up and default_bridge else "",
            "Gateway": net.gateway if live and default_bridge and net else "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": net.address(c.address) if live and default_bridge and net else "",
            "IPPrefixLen": 16 if live and default_bridge else 0,
            "IPv6Gateway": "",
            "MacAddress": _mac(c.address) if live and default_bridge else "",
            "Networks": _networks(node, c, True),
        },
    }


# --- images, volumes, networks ------------------------------------------------------------------


def image_summary(img: Image) -> dict[str, Any]:
    return {"Containers": -1, "Created": img.created, "Id": img.id, "Labels": None, "ParentId": "",
            "RepoDigests": None, "RepoTags": list(img.tags), "SharedSize": -1, "Size": img.size,
            "VirtualSize": img.size}  # fmt: skip


def image_inspect(img: Image) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for k, v in _EMPTY_CONFIG.items():
        if k == "Tty" and img.exposed:
            cfg["ExposedPorts"] = {p: {} for p in img.exposed}
        cfg[k] = v
    cfg.update(Env=list(img.env), Cmd=list(img.cmd), WorkingDir=img.workdir)
    if img.volumes:
        cfg["Volumes"] = {v: {} for v in img.volumes}
    top = f"{ROOT}/overlay2/{img.id[7:]}"
    data = {"LowerDir": f"{top}-lower/diff"} if img.layers > 1 else {}
    data.update(MergedDir=f"{top}/merged", UpperDir=f"{top}/diff", WorkDir=f"{top}/work")
    return {
        "Id": img.id,
        "RepoTags": list(img.tags),
        "RepoDigests": [],
        "Parent": "",
        "Comment": "",
        "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(img.created)),
        "Container": "",
        "ContainerConfig": dict(_EMPTY_CONFIG),
        "DockerVersion": "",
        "Author": "",
        "Config": cfg,
        "Architecture": "amd64",
        "Os": "linux",
        "Size": img.size,
        "VirtualSize": img.size,
        "GraphDriver": {"Data": data, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": [f"sha256:{i:064x}" for i in range(1, img.layers + 1)]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


def volume(v: Volume) -> dict[str, Any]:
    return {
        "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.created_ns // 1_000_000_000)),
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": f"{ROOT}/volumes/{v.name}/_data",
        "Name": v.name,
        "Options": v.options,
        "Scope": "local",
    }


def network(node: NodeEngine, n: Network, with_containers: bool) -> dict[str, Any]:
    config: list[dict[str, str]] = []
    if n.subnet:
        config = [{"Subnet": n.subnet}] if n.predefined else [{"Subnet": n.subnet, "Gateway": n.gateway}]
    containers: dict[str, Any] = {}
    if with_containers:
        for c in node.containers.values():
            if c.running and c.network_id == n.id and not c.network_mode.startswith("container:"):
                containers[c.id] = {
                    "Name": c.name,
                    "EndpointID": c.endpoint_id,
                    "MacAddress": _mac(c.address) if c.address and n.subnet else "",
                    "IPv4Address": f"{n.address(c.address)}/16" if c.address and n.subnet else "",
                    "IPv6Address": "",
                }
    return {
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created_ns),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": n.ipam_options, "Config": config},
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": n.options,
        "Labels": n.labels,
    }
