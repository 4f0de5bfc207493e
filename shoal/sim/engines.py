"""Simulated Docker engines: N nodes served from one process, each on its own loopback TCP port, speaking
the parts of the Engine API (1.41, with or without the `/v1.NN` prefix) that the shoal manager uses, so the
manager can be measured at sizes one machine cannot run for real.

Simulated, in dockerd 20.10's shapes, statuses and messages: `/_ping`, `/version`, `/info`;
`/containers/json` (`all`, `limit`, `filters` id, name, label, status, exited, ancestor, network, volume,
before, since), create (name rules and conflicts, unknown images, Binds, Mounts, the images' anonymous
volumes, port bindings), start, stop, kill, restart, pause, unpause, wait (`condition`), remove (`force`,
`v`), inspect; `/events` (streamed JSON lines in dockerd's order -- create, network connect, volume mount,
start, kill, die, disconnect, unmount, stop, destroy -- with `since`, `until` and filters type, event,
container, network, volume, label); `/images/json` and `/images/{name}/json` (the dev cluster's busybox,
redis and todolist, with the ids they have there); `/volumes` list, inspect, create, remove; `/networks`
list, inspect, create, remove (bridge, host and none predefined). Name, id and id-prefix lookups go as in
dockerd (an ambiguous prefix is dockerd's 500 "Multiple IDs found"); anything else is 404 "page not found".

Not simulated: processes (a container "runs" as a flag; how it exits is read from its command, see
`shoal.sim.engine_model`), logs, attach, exec, stats, top, archive, build, pull, push, save, load, commit,
image tags and removal, network connect and disconnect, prune, the stop grace period (stop is instant),
restart policies, health checks, swarm; a body field of the wrong type is refused in Docker's form but in
the simulation's words. A configurable latency before every answer stands for a real engine's work.

Measured here (2 shared cores): 1,000 nodes take ~40 MB idle, ~55 MB with an event stream open on each,
~160 MB holding 30,000 running containers created with the docker CLI's bodies, ~215 MB once every node's
list has been read (list entries are kept encoded). One process answers ~4,000 pings, ~2,600 /info,
~2,100 inspects, ~2,000 creates and ~850 30-row `ps -a` per CPU-second, so a benchmark at 1,000 nodes
runs a few processes, each serving its own range of nodes (`--first`).

tests/contract/test_engine.py runs one suite of assertions against this and against a real dockerd, so
the simulation cannot drift from what it stands for.

    python -m shoal.sim.engines --nodes 500 --port-base 30000 --latency-ms 1

prints {"sim00000": "tcp://127.0.0.1:30000", ...} on one line of stdout once every node listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from aiohttp import web

from shoal.errors import Conflict, EngineError, ShoalError
from shoal.sim import engine_shapes as shapes
from shoal.sim.engine_model import (
    API_VERSION,
    IMAGE_FILTERS,
    IMAGES,
    MIN_API_VERSION,
    SERVER_VERSION,
    Event,
    NodeSpec,
    check_filters,
    labels_match,
    normalize_ref,
    now_ns,
    parse_filters,
)
from shoal.sim.engine_node import NodeEngine

Handler = Callable[[web.Request, NodeEngine], Awaitable[web.StreamResponse]]
_HEADERS = {
    "Api-Version": API_VERSION,
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Server": f"Docker/{SERVER_VERSION} (linux)",
}
NODES: web.AppKey[dict[int, NodeEngine]] = web.AppKey("nodes", dict)
LATENCY: web.AppKey[float] = web.AppKey("latency", float)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type="application/json")


def _message(status: int, message: str) -> web.Response:
    return _json({"message": message}, status)


def _flag(request: web.Request, key: str) -> bool:
    """dockerd's BoolValue: anything but "", 0, no, false, none is true."""
    return request.query.get(key, "").strip().lower() not in ("", "0", "no", "false", "none")


def _int(request: web.Request, key: str) -> int:
    raw = request.query.get(key, "")
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise EngineError(500, f'strconv.Atoi: parsing "{raw}": invalid syntax', "") from None


async def _body(request: web.Request) -> dict[str, Any]:
    ctype = request.headers.get("Content-Type", "")
    raw = await request.read()
    if ctype and not ctype.split(";")[0].strip().lower() == "application/json":
        raise EngineError(400, f"Content-Type specified ({ctype}) must be 'application/json'", "")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise EngineError(500, f"invalid JSON: {e}", "") from None
    if not isinstance(doc, dict):
        raise EngineError(500, "invalid JSON: the body is not an object", "")
    return doc


def _ns(raw: str) -> int | None:
    """`since`/`until` as dockerd reads them: seconds, optionally with a fraction."""
    if not raw:
        return None
    sec, _, frac = raw.partition(".")
    try:
        return int(sec) * 1_000_000_000 + (int(frac[:9].ljust(9, "0")) if frac else 0)
    except ValueError:
        raise EngineError(400, f'strconv.ParseInt: parsing "{raw}": invalid syntax', "") from None


# --- system ---------------------------------------------------------------------------------------


async def ping(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
    body = b"" if request.method == "HEAD" else b"OK"
    return web.Response(body=body, headers=headers, content_type="text/plain", charset="utf-8")


async def version(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    return _json(shapes.version())


async def info(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    return _json(shapes.info(node, request.host))


def _event_filter(filters: dict[str, list[str]]) -> Callable[[Event], bool]:
    """dockerd's events.Filter: `type` and `event` exact; `container`, `network`, `volume` match a prefix of
    the actor's id or of its name attribute, whatever the event's type; `label` the actor's attributes."""

    def wanted(ev: Event) -> bool:
        if "type" in filters and ev.type not in filters["type"]:
            return False
        if "event" in filters and ev.action not in filters["event"]:
            return False
        for key in ("container", "network", "volume"):
            if key in filters and not any(
                ev.actor.startswith(x) or ev.name.startswith(x) for x in filters[key]
            ):
                return False
        return "label" not in filters or labels_match(ev.attributes(), filters["label"])

    return wanted


async def events(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    since = _ns(request.query.get("since", ""))
    until = _ns(request.query.get("until", ""))
    wanted = _event_filter(parse_filters(request.query.get("filters", "")))
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    listener = (queue, wanted)
    node.listeners.add(listener)  # before the replay, so nothing falls between the two
    try:
        await resp.prepare(request)
        last = 0
        if since is not None:
            for ev in list(node.events):
                if ev.ns >= since and (until is None or ev.ns <= until) and wanted(ev):
                    await resp.write(ev.line)
                    last = ev.ns
        while True:
            timeout = None if until is None else (until - now_ns()) / 1e9
            if timeout is not None and timeout <= 0:
                break
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it can drop a cancel (3.11)
                    ev = await queue.get()
            except TimeoutError:
                break
            if ev is None:
                break
            if ev.ns > last and (until is None or ev.ns <= until):
                await resp.write(ev.line)
    except ConnectionResetError:
        pass  # the client left
    finally:
        node.listeners.discard(listener)
    return resp


# --- containers -----------------------------------------------------------------------------------


async def containers_list(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    filters = parse_filters(request.query.get("filters", ""))
    limit = _int(request, "limit")
    now = now_ns()
    listed = node.list(_flag(request, "all"), limit, filters)
    body = b"[" + b",".join(shapes.summary_json(node, c, now) for c in listed) + b"]"
    return web.Response(body=body, content_type="application/json")


def _typed(what: str, status: int) -> Callable[[Handler], Handler]:
    """A body whose fields have the wrong types is the client's mistake, refused in Docker's form with the
    status dockerd's decoder gives; `what` names the object for the message. (The checks in the model
    catch the usual fields by name; this catches what is deeper.)"""

    def wrap(handler: Handler) -> Handler:
        async def typed(request: web.Request, node: NodeEngine) -> web.StreamResponse:
            try:
                return await handler(request, node)
            except (AttributeError, TypeError, ValueError) as e:
                raise EngineError(status, f"invalid {what}: {e}", node.spec.name) from None

        return typed

    return wrap


@_typed("container config", 500)
async def containers_create(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    body = await _body(request)
    c = node.create(request.query.get("name", ""), body)
    return _json({"Id": c.id, "Warnings": []}, 201)


async def container_inspect(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    return _json(shapes.inspect(node, node.get(request.match_info["id"])))


async def container_action(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    ref, action = request.match_info["id"], request.match_info["action"]
    changed = True
    if action == "start":
        changed = node.start(ref)
    elif action == "stop":
        changed = node.stop(ref)
    elif action == "kill":
        node.kill(ref, request.query.get("signal", ""))
    elif action == "restart":
        node.restart(ref)
    elif action == "pause":
        node.pause(ref)
    elif action == "unpause":
        node.unpause(ref)
    else:
        return _message(404, "page not found")
    return web.Response(status=204 if changed else 304)


async def container_wait(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    c, fut = node.wait(request.match_info["id"], request.query.get("condition", ""))
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)  # dockerd answers the headers at once and the body on exit
    try:
        code = c.exit_code if fut is None else await fut
    finally:
        if fut is not None and c.waiters:
            c.waiters = [w for w in c.waiters if w[1] is not fut] or None
    await resp.write(json.dumps({"Error": None, "StatusCode": code}).encode() + b"\n")
    await resp.write_eof()
    return resp


async def container_remove(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    node.remove(request.match_info["id"], _flag(request, "force"), _flag(request, "v"))
    return web.Response(status=204)


# --- images, volumes, networks --------------------------------------------------------------------


async def images_list(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    filters = parse_filters(request.query.get("filters", ""))
    check_filters(filters, IMAGE_FILTERS)
    out = []
    for img in IMAGES:
        refs = filters.get("reference", [])
        if refs and not any(
            fnmatchcase(t, r) or fnmatchcase(t.rsplit(":", 1)[0], r) for t in img.tags for r in refs
        ):
            continue
        if filters.get("dangling", ["false"])[0].lower() in ("1", "true"):
            continue
        if "label" in filters:
            continue
        out.append(shapes.image_summary(img))
    return _json(out)


async def image_inspect(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    name = request.match_info["name"]
    img = node.image(name)
    if img is None:
        raise EngineError(404, f"no such image: {name}: No such image: {normalize_ref(name)}", node.spec.name)
    return _json(shapes.image_inspect(img))


async def volumes_list(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    found = node.volume_list(parse_filters(request.query.get("filters", "")))
    return _json({"Volumes": [shapes.volume(v) for v in found], "Warnings": None})


@_typed("volume config", 400)
async def volumes_create(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    return _json(shapes.volume(node.volume_create(await _body(request))), 201)


async def volume_inspect(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    return _json(shapes.volume(node.volume_get(request.match_info["name"])))


async def volume_remove(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    node.volume_remove(request.match_info["name"], _flag(request, "force"))
    return web.Response(status=204)


async def networks_list(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    found = node.network_list(parse_filters(request.query.get("filters", "")))
    return _json([shapes.network(node, n, False) for n in found])


@_typed("network config", 400)
async def networks_create(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    net, warning = node.network_create(await _body(request))
    return _json({"Id": net.id, "Warning": warning}, 201)


async def network_inspect(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    return _json(shapes.network(node, node.network(request.match_info["id"], inspecting=True), True))


async def network_remove(request: web.Request, node: NodeEngine) -> web.StreamResponse:
    node.network_remove(request.match_info["id"])
    return web.Response(status=204)


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/_ping", ping),
    ("HEAD", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("GET", "/events", events),
    ("GET", "/containers/json", containers_list),
    ("POST", "/containers/create", containers_create),
    ("GET", "/containers/{id}/json", container_inspect),
    ("POST", "/containers/{id}/wait", container_wait),
    ("POST", "/containers/{id}/{action:start|stop|kill|restart|pause|unpause}", container_action),
    ("DELETE", "/containers/{id}", container_remove),
    ("GET", "/images/json", images_list),
    ("GET", "/images/{name:.+}/json", image_inspect),
    ("GET", "/volumes", volumes_list),
    ("POST", "/volumes/create", volumes_create),
    ("GET", "/volumes/{name}", volume_inspect),
    ("DELETE", "/volumes/{name}", volume_remove),
    ("GET", "/networks", networks_list),
    ("POST", "/networks/create", networks_create),
    ("GET", "/networks/{id}", network_inspect),
    ("DELETE", "/networks/{id}", network_remove),
)


def _version_error(raw: str) -> web.Response | None:
    try:
        wanted = tuple(int(x) for x in raw.split("."))
    except ValueError:
        return _message(404, "page not found")
    if wanted > tuple(int(x) for x in API_VERSION.split(".")):
        return _message(
            400, f"client version {raw} is too new. Maximum supported API version is {API_VERSION}"
        )
    if wanted < tuple(int(x) for x in MIN_API_VERSION.split(".")):
        return web.Response(
            status=400,
            text=f"client version {raw} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version",
        )
    return None


def _wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        if "version" in request.match_info:
            refused = _version_error(request.match_info["version"])
            if refused is not None:
                return refused
        app = request.app
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        node = app[NODES][port]
        if app[LATENCY] > 0:
            await asyncio.sleep(app[LATENCY])
        if not node.answering.is_set():
            await node.answering.wait()
        try:
            return await handler(request, node)
        except EngineError as e:
            return _message(e.status, e.message)

    return route


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """dockerd's forms for what no route serves and for anything unexpected (never a traceback)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status in (404, 405):
            return _message(404, "page not found")
        return _message(e.status, e.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as e:
        return _message(500, f"{type(e).__name__}: {e}")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_HEADERS)


def make_app(nodes: dict[int, NodeEngine], latency: float) -> web.Application:
    """One application for every simulated node; the local port a request came in on names the node."""
    app = web.Application(middlewares=[_errors], client_max_size=16 << 20)
    app[NODES] = nodes
    app[LATENCY] = latency
    for method, path, handler in ROUTES:
        route = _wrap(handler)
        app.router.add_route(method, path, route)
        app.router.add_route(method, r"/v{version:[0-9][0-9.]*}" + path, route)
    app.on_response_prepare.append(_headers)
    return app


@dataclass
class SimEngines:
    """A running set of simulated engines."""

    nodes: dict[str, str]  # node name -> tcp://127.0.0.1:port
    engines: dict[str, NodeEngine]
    runner: web.AppRunner
    sockets: list[socket.socket] = field(default_factory=list)

    async def close(self) -> None:
        """End every open event stream and wait, then stop listening."""
        for node in self.engines.values():
            for queue, _ in list(node.listeners):
                queue.put_nowait(None)
            for c in node.containers.values():
                for _, fut in c.waiters or ():
                    fut.cancel()
        await self.runner.cleanup()
        for s in self.sockets:
            s.close()


def node_names(n: int, first: int = 0, prefix: str = "sim") -> list[str]:
    """The same names `shoal.sim.nodes` gives its simulated nodes: sim00000, sim00001, ..."""
    return [f"{prefix}{i:05d}" for i in range(first, first + n)]


async def serve(
    n: int,
    latency: float = 0.0,
    *,
    host: str = "127.0.0.1",
    port_base: int = 0,
    first: int = 0,
    prefix: str = "sim",
    specs: Sequence[NodeSpec] | None = None,
) -> SimEngines:
    """Serve `n` simulated engines (or one per spec) on `host`, node i on `port_base + i` (or on ports the
    OS picks when port_base is 0). `latency` seconds pass before every answer."""
    specs = list(specs) if specs is not None else [NodeSpec(name) for name in node_names(n, first, prefix)]
    by_port: dict[int, NodeEngine] = {}
    app = make_app(by_port, latency)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    sockets, nodes, engines = [], {}, {}
    try:
        for i, spec in enumerate(specs):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port_base + i if port_base else 0))
            except OSError as e:
                s.close()
                raise Conflict(
                    f"cannot listen on {host}:{port_base + i}: {e.strerror}; pick another port base "
                    "(or 0, for ports the OS picks)"
                ) from None
            s.listen(128)
            s.setblocking(False)
            sockets.append(s)
            port = s.getsockname()[1]
            engine = NodeEngine(spec)
            by_port[port] = engine
            engines[spec.name] = engine
            nodes[spec.name] = f"tcp://{host}:{port}"
            await web.SockSite(runner, s).start()
    except BaseException:
        await runner.cleanup()
        for s in sockets:
            s.close()
        raise
    return SimEngines(nodes, engines, runner, sockets)


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def _main(args: argparse.Namespace) -> None:
    _raise_fd_limit(args.nodes * 4 + 256)  # a listener, a keep-alive pool and an event stream per node
    specs = [
        NodeSpec(
            name, args.ncpu, args.mem_mb << 20, tuple(args.label), volume_drivers=tuple(args.volume_driver)
        )
        for name in node_names(args.nodes, args.first, args.prefix)
    ]
    sim = await serve(
        args.nodes, args.latency_ms / 1000, host=args.host, port_base=args.port_base, specs=specs
    )
    print(json.dumps(sim.nodes), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.close()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m shoal.sim.engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1, help="how many engines to serve")
    p.add_argument(
        "--port-base", type=int, default=0, help="node i listens on PORT_BASE+i (0: ports the OS picks)"
    )
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--first", type=int, default=0, help="number of the first node (sim00000 is 0)")
    p.add_argument("--prefix", default="sim", help="node names are PREFIX plus five digits")
    p.add_argument("--ncpu", type=int, default=4, help="NCPU every node reports")
    p.add_argument("--mem-mb", type=int, default=8192, help="MemTotal every node reports, in MiB")
    p.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="an engine label (repeatable)"
    )
    p.add_argument("--volume-driver", action="append", default=["local"], metavar="NAME",
                   help="a volume plugin every node reports besides local (repeatable)")  # fmt: skip
    args = p.parse_args(argv)
    if any("=" not in label for label in args.label):
        p.error("--label takes KEY=VALUE")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        p.error(f"--host {args.host}: simulated engines listen on a loopback address only (e.g. 127.0.0.1)")
    if args.nodes < 1:
        p.error("--nodes must be at least 1")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_main(args))
    except ShoalError as e:
        p.exit(1, f"{p.prog}: {e}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
