"""The Docker Engine API for the whole cluster (`shoal manager`): containers are created on the node the
scheduler picks, everything about an existing object goes to the engine that holds it, and lists and
/info are gathered from every engine. Routes parse and render; `Cluster` and `place` decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from shoal import __version__
from shoal.api.docker.spec import container_spec, named_volumes
from shoal.api.errors import docker_reply
from shoal.cluster.state import Cluster, Engine
from shoal.errors import BadRequest, Conflict, NotFound, ShoalError
from shoal.scheduler.expr import parse
from shoal.scheduler.model import ContainerRef, ContainerSpec, Placement
from shoal.scheduler.place import place
from shoal.scheduler.strategy import by_name

log = logging.getLogger("shoal.manager")
API_VERSION, MIN_API_VERSION = "1.41", "1.24"
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "keep-alive"}
CLUSTER: web.AppKey[Manager] = web.AppKey("manager", object)  # type: ignore[arg-type]
SWARM_PATHS = ("/swarm", "/services", "/nodes", "/tasks", "/secrets", "/configs")


class Manager:
    def __init__(
        self, cluster: Cluster, strategy: str = "spread", fact_ttl: float = 30.0, name: str = "shoal"
    ) -> None:
        self.cluster = cluster
        self.strategy_name = strategy
        self.strategy = by_name(strategy)
        self.fact_ttl = fact_ttl
        self.name = name
        self.decisions: deque[dict[str, Any]] = deque(maxlen=200)
        self.execs: dict[str, str] = {}  # exec id -> node
        self._create_lock = asyncio.Lock()


def _v(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split("."))


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except ShoalError as e:
        return docker_reply(e)
    except aiohttp.ClientError as e:
        return docker_reply(ShoalError(f"engine unreachable: {e}"))


def _mgr(request: web.Request) -> Manager:
    return request.app[CLUSTER]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _path(request: web.Request) -> str:
    m = _VERSIONED.match(request.path)
    return m.group(2) if m else request.path


async def _forward(
    request: web.Request,
    engine: Engine,
    path: str | None = None,
    body: bytes | None = None,
    rewrite: Callable[[Any], Any] | None = None,
) -> web.StreamResponse:
    """Sends the request on to `engine` and streams its answer back (logs -f, stats, wait, events...)."""
    path = path or _path(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    data = await request.read() if body is None else body
    async with engine.session.request(
        request.method,
        f"{engine.base}/v{API_VERSION}{path}",
        params=request.query,
        data=data or None,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=None),
    ) as up:
        if rewrite is not None and up.status < 300:
            return _json(rewrite(json.loads(await up.read())), up.status)
        resp = web.StreamResponse(status=up.status)
        for k, v in up.headers.items():
            if k.lower() not in _HOP and k.lower() not in ("date", "server"):
                resp.headers[k] = v
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


# --- system -----------------------------------------------------------------------------------------


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
    return _json(
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
    m = _mgr(request)
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
    return _json(
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
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


async def swarm_only(request: web.Request) -> web.Response:
    return _json(
        {
            "message": 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
            "to connect this node to swarm and try again."
        },
        503,
    )


# --- containers ------------------------------------------------------------------------------------


def _with_node(c: dict[str, Any], node: str) -> dict[str, Any]:
    c = dict(c)
    c["Names"] = [f"/{node}{n}" for n in c.get("Names") or []]
    return c


async def containers_list(request: web.Request) -> web.Response:
    c = _mgr(request).cluster

    async def one(e: Engine) -> list[dict[str, Any]]:
        try:
            return [
                _with_node(x, e.node) for x in await e.json("GET", "/containers/json", params=request.query)
            ]
        except (aiohttp.ClientError, OSError, TimeoutError):
            return []

    lists = await asyncio.gather(*(one(e) for e in c.engines.values()))
    out = sorted((x for lst in lists for x in lst), key=lambda x: x.get("Created", 0), reverse=True)
    limit = request.query.get("limit")
    if limit and limit.lstrip("-").isdigit() and int(limit) > 0:
        out = out[: int(limit)]
    return _json(out)


async def containers_create(request: web.Request) -> web.Response:
    m = _mgr(request)
    c = m.cluster
    name = request.query.get("name", "")
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as e:
        raise BadRequest(f"the container config is not valid JSON: {e}") from None
    spec, out = container_spec(body, name)
    async with m._create_lock:  # one decision at a time: each sees the last one's placement
        if name and (other := c.name_in_use(name)) is not None:
            raise Conflict(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{other["Id"]}". You have to remove (or rename) that container to be able to reuse '
                "that name."
            )
        holders = c.nodes_with_image(spec.image)
        if not holders:
            await c.resync()
            holders = c.nodes_with_image(spec.image)
        if not holders:
            raise NotFound(
                f"No such image: {spec.image} (no node has it; load it with `docker load` "
                "through the manager, or build it on a node)"
            )
        if set(holders) != set(c.engines):  # the image is only on some nodes: place among those
            tag = spec.image if ":" in spec.image.rsplit("/", 1)[-1] else f"{spec.image}:latest"
            spec = replace(spec, affinities=(*spec.affinities, parse("affinity", f"image=={tag}")))
        volumes = named_volumes(body)
        p = _place(m, spec)
        if p.node is None:  # the cache may lag what was just done on a node directly: look again, once
            await c.resync()
            p = _place(m, spec)
        record = {
            "request": {
                "name": name,
                "image": spec.image,
                "expressions": list(p.expressions),
                "memory": spec.memory,
                "cpus": spec.cpus,
                "ports": [f"{a}/{b}" for a, b in spec.ports],
                "volumes": volumes,
            },
            "placement": p.to_dict(),
            "time": c.now(),
        }
        if p.node is None:
            m.decisions.append({**record, "container": None})
            log.info("no placement for %s: %s", name or spec.image, p.error().splitlines()[-1])
            raise ShoalError(p.error())
        engine = c.engine(p.node)
        params = {"name": name} if name else {}
        created = await engine.json("POST", "/containers/create", params=params, json=out)
        cid = created["Id"]
        c.reservations[cid] = (spec.cpus, spec.memory)
        node = c.index.nodes[c.index.pos[p.node]]
        c.index.upsert(
            replace(
                node,
                containers=(
                    *node.containers,
                    ContainerRef(cid, name, spec.image, out.get("Labels") or {}, spec.ports),
                ),
                reserved_cpus=node.reserved_cpus + spec.cpus,
                reserved_memory=node.reserved_memory + spec.memory,
            )
        )
        engine.containers.append(
            {
                "Id": cid,
                "Names": [f"/{name}"] if name else [f"/{cid[:12]}"],
                "Image": spec.image,
                "State": "created",
                "Labels": out.get("Labels") or {},
                "Ports": [],
            }
        )
        m.decisions.append({**record, "container": cid, "name": name})
        log.info("placed %s on %s (%s)", name or cid[:12], p.node, ", ".join(f"{f}:{n}" for f, n in p.steps))
        asyncio.get_running_loop().create_task(
            _store_decision(m, cid, {**record, "container": cid, "name": name})
        )
        asyncio.get_running_loop().create_task(c.resync(p.node))
    return _json(created, 201)


def _place(m: Manager, spec: ContainerSpec) -> Placement:
    c = m.cluster
    return place(
        spec, c.index, c.now(), strategy=m.strategy, strategy_name=m.strategy_name, fact_ttl=m.fact_ttl
    )


async def _store_decision(m: Manager, cid: str, record: dict[str, Any]) -> None:
    c = m.cluster
    assert c._session is not None
    with contextlib.suppress(Exception):
        async with c._session.put(f"{c.registry}/v1/kv/shoal/decisions/{cid}", data=json.dumps(record)) as r:
            await r.read()


async def container_action(request: web.Request) -> web.StreamResponse:
    c = _mgr(request).cluster
    engine, ct = await c.find(request.match_info["id"])
    action = request.match_info.get("action", "")
    path = f"/containers/{ct['Id']}" + (f"/{action}" if action else "")
    if action in ("attach",) and request.headers.get("Upgrade"):
        return await _hijack(request, engine, path)
    if action == "json" and request.method == "GET":
        node = c.index.nodes[c.index.pos[engine.node]] if engine.node in c.index.pos else None

        def add_node(doc: dict[str, Any]) -> dict[str, Any]:
            doc["Node"] = {
                "ID": node.id if node else engine.node,
                "Name": engine.node,
                "IP": node.address if node else "",
                "Addr": engine.url.removeprefix("tcp://"),
                "Cpus": int(node.cpus) if node else 0,
                "Memory": node.memory if node else 0,
                "Labels": dict(node.labels) if node else {},
            }
            return doc

        return await _forward(request, engine, path, rewrite=add_node)
    if action == "exec" and request.method == "POST":
        body = await request.read()
        created = await engine.json(
            "POST", f"{path}", data=body, headers={"Content-Type": "application/json"}
        )
        _mgr(request).execs[created["Id"]] = engine.node
        return _json(created, 201)
    resp = await _forward(request, engine, path)
    if request.method == "DELETE" or action in (
        "start",
        "stop",
        "kill",
        "restart",
        "rename",
        "pause",
        "unpause",
    ):
        asyncio.get_running_loop().create_task(c.resync(engine.node))
    return resp


async def exec_action(request: web.Request) -> web.StreamResponse:
    m = _mgr(request)
    eid = request.match_info["id"]
    node = m.execs.get(eid)
    if node is None:
        raise NotFound(f"No such exec instance: {eid}")
    engine = m.cluster.engine(node)
    path = f"/exec/{eid}/{request.match_info['action']}"
    if request.match_info["action"] == "start" and request.headers.get("Upgrade"):
        return await _hijack(request, engine, path)
    return await _forward(request, engine, path)


# --- hijacked streams (attach, exec start) -------------------------------------------------------


class _Pipe:
    """Stands in for aiohttp's payload parser right after the 101, to hand over bytes it already read."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.writer.write(data)
        return False, b""

    def feed_eof(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write_eof()


class _Hijacked(asyncio.Protocol):
    """Takes the client's connection over from aiohttp after the 101: bytes go straight to the engine, and
    a half-close (the CLI closes its write side when it has no stdin) is passed on, not taken as the end."""

    def __init__(self, writer: asyncio.StreamWriter, done: asyncio.Event) -> None:
        self.writer = writer
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.writer.write(data)

    def eof_received(self) -> bool:
        with contextlib.suppress(Exception):
            self.writer.write_eof()
        return True  # keep our side open: the engine's output still has to reach the client

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


async def _hijack(request: web.Request, engine: Engine, path: str) -> web.StreamResponse:
    """Docker's hijacked connection: relay the engine's 101, then bytes both ways until either side ends."""
    host, _, port = engine.url.removeprefix("tcp://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = await request.read()
    query = f"?{request.query_string}" if request.query_string else ""
    head = [
        f"{request.method} /v{API_VERSION}{path}{query} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        "Upgrade: tcp",
        f"Content-Length: {len(body)}",
    ]
    if request.headers.get("Content-Type"):
        head.append(f"Content-Type: {request.headers['Content-Type']}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    up_headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    if status != 101:
        length = int(up_headers.get("Content-Length", "0") or 0)
        data = await reader.readexactly(length) if length else await reader.read()
        writer.close()
        return web.Response(status=status, body=data, content_type="application/json")
    resp = web.StreamResponse(
        status=101,
        headers={
            "Content-Type": up_headers.get("Content-Type", "application/vnd.docker.raw-stream"),
            "Connection": "Upgrade",
            "Upgrade": "tcp",
        },
    )
    await resp.prepare(request)
    transport = request.transport
    assert transport is not None and request.protocol is not None
    request.protocol.set_parser(_Pipe(writer))  # what aiohttp read past the headers goes first
    client_gone = asyncio.Event()
    transport.set_protocol(_Hijacked(writer, client_gone))
    try:
        while not client_gone.is_set() and (chunk := await reader.read(65536)):
            transport.write(chunk)
    finally:
        writer.close()
        transport.close()
    return resp


# --- images ----------------------------------------------------------------------------------------


async def images_list(request: web.Request) -> web.Response:
    c = _mgr(request).cluster
    lists = await asyncio.gather(
        *(e.json("GET", "/images/json", params=request.query) for e in c.engines.values()),
        return_exceptions=True,
    )
    merged: dict[str, dict[str, Any]] = {}
    for lst in lists:
        if isinstance(lst, BaseException):
            continue
        for img in lst:
            have = merged.setdefault(img["Id"], dict(img))
            have["RepoTags"] = sorted(set(have.get("RepoTags") or []) | set(img.get("RepoTags") or []))
    return _json(list(merged.values()))


async def image_inspect(request: web.Request) -> web.StreamResponse:
    c = _mgr(request).cluster
    name = request.match_info["name"]
    holders = c.nodes_with_image(name)
    if not holders:
        raise NotFound(f"No such image: {name}")
    return await _forward(request, c.engine(holders[0]), f"/images/{name}/json")


async def image_load(request: web.Request) -> web.Response:
    """`docker load` through the manager loads onto every node."""
    c = _mgr(request).cluster
    data = await request.read()
    results = await asyncio.gather(
        *(e.json("POST", "/images/load", params={"quiet": "1"}, data=data) for e in c.engines.values()),
        return_exceptions=True,
    )
    errors = [
        f"{e.node}: {r}" for e, r in zip(c.engines.values(), results, strict=True) if isinstance(r, Exception)
    ]
    await c.resync()
    if errors:
        raise ShoalError("load failed on " + "; ".join(errors))
    return _json({"stream": f"Loaded onto {len(results)} nodes\n"})


async def image_pull(request: web.Request) -> web.Response:
    """Pulling needs a registry the nodes can reach; this cluster has none, so say so, Docker's way."""
    image = request.query.get("fromImage", "") + (
        f":{request.query['tag']}" if request.query.get("tag") else ""
    )
    if request.query.get("fromSrc"):
        raise BadRequest(
            "docker import through the manager is not supported yet; import on a node, or "
            "`docker load` an image archive through the manager (it loads onto every node)"
        )
    raise NotFound(
        f"pull access denied for {image or 'that image'}: the shoal manager does not pull images "
        "(no image registry is reachable from the nodes); `docker load` an archive through the "
        "manager to put it on every node"
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Every engine's event stream merged into one, each event saying its node (as classic Swarm did)."""
    c = _mgr(request).cluster
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def one(e: Engine) -> None:
        node = c.index.nodes[c.index.pos[e.node]] if e.node in c.index.pos else None
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
    return _json(
        {
            "message": f"page not found: {request.method} {_path(request)} is not served by the shoal "
            "manager"
        },
        404,
    )


def make_app(manager: Manager) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=1 << 34)
    app[CLUSTER] = manager
    r = app.router

    def add(method: str, path: str, handler) -> None:
        r.add_route(method, path, handler)
        r.add_route(method, r"/v{version:[0-9]+\.[0-9]+}" + path, _versioned(handler))

    add("GET", "/_ping", ping)
    add("HEAD", "/_ping", ping)
    add("GET", "/version", version)
    add("GET", "/info", info)
    add("GET", "/events", events)
    add("GET", "/containers/json", containers_list)
    add("POST", "/containers/create", containers_create)
    add("GET", "/containers/{id}/{action}", container_action)
    add("POST", "/containers/{id}/{action}", container_action)
    add("PUT", "/containers/{id}/{action}", container_action)
    add("HEAD", "/containers/{id}/{action}", container_action)
    add("DELETE", "/containers/{id}", container_action)
    add("GET", "/exec/{id}/{action}", exec_action)
    add("POST", "/exec/{id}/{action}", exec_action)
    add("GET", "/images/json", images_list)
    add("GET", "/images/{name:.+}/json", image_inspect)
    add("POST", "/images/load", image_load)
    add("POST", "/images/create", image_pull)
    for p in SWARM_PATHS:
        add("*", p, swarm_only)
        add("*", p + "/{tail:.*}", swarm_only)
    r.add_route("*", "/{tail:.*}", not_found)
    return app


def _versioned(handler):
    async def h(request: web.Request):
        v = request.match_info["version"]
        if _v(v) > _v(API_VERSION):
            return _json(
                {
                    "message": f"client version {v} is too new. Maximum supported API version is "
                    f"{API_VERSION}"
                },
                400,
            )
        if _v(v) < _v(MIN_API_VERSION):
            return _json(
                {
                    "message": f"client version {v} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version"
                },
                400,
            )
        return await handler(request)

    return h
