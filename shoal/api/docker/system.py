"""The cluster-wide system endpoints: ping, version, info (classic Swarm's SystemStatus), the merged
event stream, and the replies for what the manager does not serve."""

from __future__ import annotations

import json
import platform

from aiohttp import web

from shoal import __version__
from shoal.api.docker.common import API_VERSION, MIN_API_VERSION, api_path, manager_of, reply_json
from shoal.manager.system import ClusterView, time_iso
from shoal.metrics import render
from shoal.scheduler.filters import default_filters

FILTERS = ", ".join(f.name for f in default_filters())  # what the scheduler applies, in its order
SWARM_PATHS = ("/swarm", "/services", "/nodes", "/tasks", "/secrets", "/configs")


async def ping(request: web.Request) -> web.Response:
    headers = {
        "API-Version": API_VERSION,
        "Docker-Experimental": "false",
        "OSType": "linux",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
    }
    return web.Response(text="" if request.method == "HEAD" else "OK", headers=headers)


async def version(request: web.Request) -> web.Response:
    uname = platform.uname()
    return reply_json(
        {
            "Platform": {"Name": "shoal"},
            "Version": f"shoal/{__version__}",
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": "amd64" if uname.machine == "x86_64" else uname.machine,
            "KernelVersion": uname.release,
            "Components": [{"Name": "shoal manager", "Version": __version__, "Details": {}}],
        }
    )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n} B"


async def info(request: web.Request) -> web.Response:
    m = manager_of(request)
    return reply_json(render_info(m.system.view(), await m.system.role()))


def render_info(v: ClusterView, role: tuple[str, str] = ("primary", "")) -> dict:
    """/info as classic Swarm showed a cluster: SystemStatus pairs per node, which every docker CLI prints.
    `role` is (primary|replica, the primary's Docker API address), as Swarm's replicas named theirs."""
    status: list[list[str]] = [["Role", role[0]]]
    if role[0] != "primary":
        status.append(["Primary", role[1] or "(none elected)"])
    status += [
        ["Strategy", v.strategy],
        ["Filters", FILTERS],
        ["Nodes", str(len(v.nodes))],
    ]
    for nv in v.nodes:
        node = nv.state
        labels = ", ".join(f"{k}={val}" for k, val in sorted(node.labels.items()))
        stopped = nv.containers - nv.running - nv.paused
        status += [
            [f" {node.name}", node.engine.removeprefix("tcp://")],
            ["  └ ID", node.id],
            ["  └ Status", nv.health],
            ["  └ Availability", nv.availability],
            [
                "  └ Containers",
                f"{nv.containers} ({nv.running} Running, {nv.paused} Paused, {stopped} Stopped)",
            ],
            ["  └ Reserved CPUs", f"{node.reserved_cpus:g} / {node.cpus:g}"],
            ["  └ Reserved Memory", f"{_human_bytes(node.reserved_memory)} / {_human_bytes(node.memory)}"],
            ["  └ Labels", labels],
            ["  └ Error", nv.error or "(none)"],
            ["  └ UpdatedAt", time_iso(node.gathered_at)],
            ["  └ ServerVersion", str(node.facts.get("docker_version", ""))],
        ]
    return {
        "ID": "shoal",
        "Name": v.name,
        "Containers": v.containers,
        "ContainersRunning": v.running,
        "ContainersPaused": v.paused,
        "ContainersStopped": v.containers - v.running - v.paused,
        "Images": v.images,
        "Driver": "",
        "DriverStatus": [],
        "SystemStatus": status,
        "Plugins": {
            "Volume": list(v.volume_drivers),
            "Network": ["bridge", "host", "null"],
            "Log": ["json-file"],
        },
        "MemoryLimit": True,
        "SwapLimit": False,
        "KernelMemory": False,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "IPv4Forwarding": True,
        "BridgeNfIptables": True,
        "Debug": False,
        "NFd": 0,
        "OomKillDisable": True,
        "NGoroutines": 0,
        "SystemTime": time_iso(v.now),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "NEventsListener": 0,
        "KernelVersion": platform.release(),
        "OperatingSystem": "shoal cluster",
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": int(sum(n.state.cpus for n in v.nodes)),
        "MemTotal": int(sum(n.state.memory for n in v.nodes)),
        "IndexServerAddress": "",
        "RegistryConfig": {},
        "DockerRootDir": "",
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": f"shoal/{__version__}",
        "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "Swarm": {
            "LocalNodeState": "inactive",
            "NodeID": "",
            "NodeAddr": "",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": [],
        "Warnings": [],
    }


async def swarm_only(request: web.Request) -> web.Response:
    return reply_json(
        {
            "message": 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
            "to connect this node to swarm and try again."
        },
        503,
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Every engine's event stream merged into one, each event saying its node (as classic Swarm did)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    async for ev in manager_of(request).system.events(request.query):
        await resp.write(json.dumps(ev).encode() + b"\n")
    await resp.write_eof()
    return resp


async def not_found(request: web.Request) -> web.Response:
    return reply_json(
        {
            "message": f"page not found: {request.method} {api_path(request)} is not served by the shoal "
            "manager"
        },
        404,
    )


async def system_df(request: web.Request) -> web.Response:
    """`docker system df` over every node, agreeing with the lists and /info."""
    return reply_json(await manager_of(request).system.df())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text exposition of the manager's figures (shoal.metrics.ManagerMetrics), on the Docker
    API's listener: behind its mutual TLS, so a scraper shows the operator's (or its own) certificate."""
    body, content_type = render(manager_of(request).metrics)
    return web.Response(body=body, headers={"Content-Type": content_type})
