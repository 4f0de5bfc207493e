"""The cluster-wide system endpoints: ping, version, info (classic Swarm's SystemStatus), the merged
event stream, and the replies for what the manager does not serve."""

from __future__ import annotations

import asyncio
import datetime
import json
import platform

import aiohttp
from aiohttp import web

from shoal import __version__
from shoal.api.docker.common import API_VERSION, MIN_API_VERSION, api_path, manager_of, reply_json
from shoal.cluster.state import Engine

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
    c = m.cluster
    now = c.now()
    containers = [ct for e in c.engines.values() for ct in e.containers]
    states = [ct.get("State") for ct in containers]
    image_ids = {i["Id"] for e in c.engines.values() for i in e.images}
    status: list[list[str]] = [
        ["Role", "primary"],
        ["Strategy", m.strategy_name],
        ["Filters", "health, constraint, affinity, dependency, port, volume, resources"],
        ["Nodes", str(len(c.index))],
    ]
    for node in sorted(c.index.nodes, key=lambda n: n.name):
        e = c.engines.get(node.name)
        cts = e.containers if e else []
        run = sum(1 for x in cts if x.get("State") == "running")
        paused = sum(1 for x in cts if x.get("State") == "paused")
        health = {"passing": "Healthy", "critical": "Unhealthy"}.get(node.health, "Pending")
        if node.health == "passing" and now - node.gathered_at > m.fact_ttl:
            health = "Unhealthy"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        status += [
            [f" {node.name}", node.engine.removeprefix("tcp://")],
            ["  └ ID", node.id],
            ["  └ Status", health],
            [
                "  └ Containers",
                f"{len(cts)} ({run} Running, {paused} Paused, {len(cts) - run - paused} Stopped)",
            ],
            ["  └ Reserved CPUs", f"{node.reserved_cpus:g} / {node.cpus:g}"],
            ["  └ Reserved Memory", f"{_human_bytes(node.reserved_memory)} / {_human_bytes(node.memory)}"],
            ["  └ Labels", labels],
            ["  └ UpdatedAt", time_iso(node.gathered_at)],
            ["  └ ServerVersion", str(node.facts.get("docker_version", ""))],
        ]
    ncpu = int(sum(n.cpus for n in c.index.nodes))
    mem = int(sum(n.memory for n in c.index.nodes))
    return reply_json(
        {
            "ID": "shoal",
            "Name": m.name,
            "Containers": len(containers),
            "ContainersRunning": states.count("running"),
            "ContainersPaused": states.count("paused"),
            "ContainersStopped": len(states) - states.count("running") - states.count("paused"),
            "Images": len(image_ids),
            "Driver": "",
            "DriverStatus": [],
            "SystemStatus": status,
            "Plugins": {
                "Volume": sorted({d for n in c.index.nodes for d in n.volume_drivers}),
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
            "SystemTime": time_iso(now),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "NEventsListener": 0,
            "KernelVersion": platform.release(),
            "OperatingSystem": "shoal cluster",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "NCPU": ncpu,
            "MemTotal": mem,
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
    )


def time_iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


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
    c = manager_of(request).cluster
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def one(e: Engine) -> None:
        node = c.index.get(e.node)
        tag = {
            "Name": e.node,
            "Id": node.id if node else e.node,
            "Addr": e.url.removeprefix("tcp://"),
            "Ip": node.address if node else "",
        }
        try:
            async with e.session.get(
                f"{e.base}/v{API_VERSION}/events",
                params=request.query,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as up:
                async for line in up.content:
                    if line.strip():
                        ev = json.loads(line)
                        ev["node"] = tag
                        # as classic Swarm: in Actor.Attributes too, the part the docker CLI prints
                        attrs = ev.setdefault("Actor", {}).setdefault("Attributes", {})
                        attrs.update(
                            {
                                "node.name": tag["Name"],
                                "node.id": tag["Id"],
                                "node.addr": tag["Addr"],
                                "node.ip": tag["Ip"],
                            }
                        )
                        await queue.put(json.dumps(ev).encode() + b"\n")
        except (aiohttp.ClientError, OSError, ValueError):
            pass

    tasks = [asyncio.get_running_loop().create_task(one(e)) for e in c.engines.values()]
    done = asyncio.get_running_loop().create_task(asyncio.wait(tasks))
    done.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (item := await queue.get()) is not None:
            await resp.write(item)
    finally:
        for t in tasks:
            t.cancel()
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
    """`docker system df` over every node: one image id counts once (as in /images/json), containers and
    volumes are named node/name (as in their lists)."""
    from shoal.api.docker.common import fan_out

    c = manager_of(request).cluster
    results = await fan_out(list(c.engines.values()), lambda e: e.json("GET", "/system/df"))
    images: dict[str, dict] = {}
    containers, volumes, cache, layers = [], [], [], 0
    for e, r in results:
        if isinstance(r, BaseException):
            continue
        layers += r.get("LayersSize") or 0
        for img in r.get("Images") or []:
            used = max(img.get("Containers", 0), 0)  # containers using it, on every node together
            if img["Id"] in images:
                images[img["Id"]]["Containers"] += used
            else:
                images[img["Id"]] = {**img, "Containers": used}
        containers += [
            {**x, "Names": [f"/{e.node}{n}" for n in x.get("Names") or []]} for x in r.get("Containers") or []
        ]
        volumes += [{**v, "Name": f"{e.node}/{v['Name']}"} for v in r.get("Volumes") or []]
        cache += r.get("BuildCache") or []
    return reply_json(
        {"LayersSize": layers, "Images": list(images.values()), "Containers": containers, "Volumes": volumes,
         "BuildCache": cache}
    )  # fmt: skip
