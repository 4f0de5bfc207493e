"""The Consul HTTP API (the subset shoal serves), on aiohttp. Routes parse and render; Registry decides.

Every input is bounded and checked before it reaches the registry: JSON bodies at 1 MiB (KV values at
Consul's 512 KB, transactions at its 512 KiB), numbers and durations in range, types as Consul's
decoder wants them. Whatever still goes wrong is answered as Consul would — a status and a plain-text
message — never a traceback, and the traceback goes to the log.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shoal import __version__, errors, jsonbody
from shoal import metrics as prom
from shoal.errors import BadRequest, NotFound, ShoalError, TooLarge
from shoal.logs import kv
from shoal.registry import bexpr, decode, txn
from shoal.registry import model as m
from shoal.registry.blocking import Read
from shoal.registry.core import Registry
from shoal.registry.model import SINCE_HEADER
from shoal.registry.views import Filters, KVChanges

log = logging.getLogger("shoal.registry.http")

CONSUL_VERSION = "1.22.0"
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
REGISTRY: web.AppKey[Registry] = web.AppKey("registry", Registry)
METRICS: web.AppKey[prom.RegistryMetrics] = web.AppKey("metrics", prom.RegistryMetrics)
WOKE = "shoal.registry.woke"  # request key: the index of the change that woke a blocking query


def _flag(request: web.Request, name: str) -> bool:
    return name in request.query


def _int_param(request: web.Request, name: str, what: str) -> int | None:
    return decode.uint(request.query.get(name), what)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    data = decode.parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("Request decode failed: expected a JSON object")
    return data


def _json(data: Any, index: int | None = None, status: int = 200) -> web.Response:
    headers = (
        {"X-Consul-Index": str(index), "X-Consul-Knownleader": "true", "X-Consul-Lastcontact": "0"}
        if index is not None
        else {}
    )
    return web.Response(
        status=status, body=jsonbody.dumps(data), content_type="application/json", headers=headers
    )


# Bodies rendered from one Read, by the Read's identity: every reader of one query woken by one change
# shares one Read (blocking.Flights), so 10,000 of them cost one JSON encoding, not 10,000. A Read is
# immutable and the cache holds it, so its id cannot be reused while its entry lives. Bounded by bytes,
# oldest out first: the readers of one Read are all woken at once, so only the newest few are ever asked
# for again, and 256 kept whatever their size held 256 copies of a 2.9 MB listing of 1,000 nodes (with
# the Reads behind them): 1.3 GB of the registry's memory.
class _Rendered:
    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.bodies: dict[tuple[int, str], tuple[Read[Any], bytes]] = {}

    def get(self, r: Read[Any], shape: str) -> bytes | None:
        got = self.bodies.get((id(r), shape))
        return got[1] if got is not None and got[0] is r else None

    def put(self, r: Read[Any], shape: str, body: bytes) -> None:
        if (was := self.bodies.pop((id(r), shape), None)) is not None:
            self.size -= len(was[1])
        while self.bodies and self.size + len(body) > self.limit:
            _, old = self.bodies.pop(next(iter(self.bodies)))  # the oldest
            self.size -= len(old)
        self.bodies[(id(r), shape)] = (r, body)
        self.size += len(body)


_RENDERED = _Rendered(32 << 20)


def _read_json(r: Read[Any], shape: str, render: Callable[[], Any]) -> web.Response:
    """`render()` (the answer built from `r`, in the form named `shape`) as JSON, with r's index."""
    body = _RENDERED.get(r, shape)
    if body is None:
        body = jsonbody.dumps(render())
        _RENDERED.put(r, shape, body)
    return web.Response(body=body, content_type="application/json", headers=_index_headers(r.index))


async def _blocking(request: web.Request, read: Callable[[], Awaitable[Read[Any]]]) -> Read[Any]:
    """Consul's blocking query (blocking.py): with ?index=N, the answer once the query's own index is
    past N, or when ?wait passes. Queries are named by path and parameters, so readers of the same one
    share a read when one change wakes them all."""
    index = _int_param(request, "index", "index")
    wait = 0.0
    if index:
        wait = (
            min(decode.duration(request.query.get("wait") or "5m", "wait", number_unit=1.0), MAX_WAIT)
            or DEFAULT_WAIT
        )
    key = (
        request.path,
        tuple(sorted((k, v) for k, v in request.query.items() if k not in ("index", "wait"))),
    )
    if not index:
        return await request.app[REGISTRY].block(key, read, index, wait)
    figures = request.app[METRICS]
    figures.blocked += 1
    try:
        return await request.app[REGISTRY].block(
            key, read, index, wait, lambda woke: request.__setitem__(WOKE, woke)
        )
    finally:
        figures.blocked -= 1


def _filters(request: web.Request, shape: bexpr.Struct | None = None) -> Filters:
    """Consul's read filters: every ?tag (all must be there, any case), every ?node-meta=KEY:VALUE (all
    must match; Consul's ParseMetaPair: no colon means an empty value), ?passing, and ?filter=."""
    meta: dict[str, str] = {}
    for pair in request.query.getall("node-meta", []):
        k, _, v = pair.partition(":")
        meta[k] = v
    expr = request.query.get("filter", "")
    return Filters(
        tags=tuple(request.query.getall("tag", [])),
        node_meta=tuple(meta.items()),
        passing=_flag(request, "passing"),
        expr=bexpr.compile_filter(expr, shape) if expr and shape is not None else None,
    )


def _index_headers(index: int) -> dict[str, str]:
    return {"X-Consul-Index": str(index), "X-Consul-Knownleader": "true", "X-Consul-Lastcontact": "0"}


def consul_status(err: ShoalError) -> int:
    """The status for the error's kind, from the one table every HTTP edge shares (shoal.errors): Consul's
    clients branch on status codes, not bodies (py-consul, consul-template and Consul's Go client all
    do), and anything without a status of its own, an engine's reply included, is Consul's 500."""
    return errors.HTTP_STATUS.get(err.kind, 500)


def consul_reply(err: ShoalError, index: int | None = None) -> web.Response:
    """Consul's error form: the status for the error's kind and the message as plain text."""
    headers = {"X-Consul-Index": str(index)} if index else {}
    return web.Response(status=consul_status(err), text=err.message, headers=headers)


def _dc_scoped(path: str) -> bool:
    """Endpoints Consul forwards to a datacenter given by ?dc= (the agent's own and status are local)."""
    return path.startswith("/v1/") and not path.startswith(
        ("/v1/agent/", "/v1/status/", "/v1/catalog/datacenters")
    )


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Consul's error replies (see `_answer`), and each request's latency and wake-up figures."""
    t0 = time.perf_counter()
    try:
        return await _answer(request, handler)
    finally:
        figures = request.app[METRICS]
        now = time.perf_counter()
        blocking = "index" in request.query
        figures.requests.observe(
            (prom.endpoint_class(request.path), request.method, "true" if blocking else "false"), now - t0
        )
        woke = request.get(WOKE)
        if woke is not None:
            at = request.app[REGISTRY].store.feed.published_at(woke)
            if at is not None:
                figures.wakeups.observe(max(0.0, time.monotonic() - at))


async def _answer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        if "dc" in request.query and _dc_scoped(request.path):
            request.app[REGISTRY].check_dc(request.query["dc"])
        return await handler(request)
    except ShoalError as e:
        index = None
        if request.method == "GET":
            try:
                index = await request.app[REGISTRY].index()
            except Exception:
                index = None
        return consul_reply(e, index)
    except web.HTTPMethodNotAllowed as e:  # Consul's MethodNotAllowedError: its words, and Allow
        allowed = ",".join(sorted(e.allowed_methods))
        return web.Response(
            status=405, text=f"method {request.method} not allowed", headers={"Allow": allowed}
        )
    except web.HTTPException:
        raise  # aiohttp's own answers (404 no such route, 413 body too large) are plain text already
    except Exception:
        kv(log, "request failed", logging.ERROR, exc_info=True, method=request.method, path=request.path)
        return web.Response(
            status=500, text=f"Internal error serving {request.method} {request.path}; see the registry log"
        )


def _dc(request: web.Request) -> str | None:
    return request.query.get("dc")


# --- status and agent self --------------------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text exposition of the registry's figures (shoal.metrics). Served without a token
    when ACLs are on (acl_http): scrapers hold no Consul token, and nothing here names a key, service or
    node, only counts and latencies by endpoint class."""
    body, ctype = prom.render(request.app[METRICS])
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = ctype
    return resp


async def root(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/ui/")


async def ui(request: web.Request) -> web.Response:
    return web.Response(
        text="<!doctype html><title>shoal registry</title><h1>shoal registry</h1>", content_type="text/html"
    )


async def _leader_addr(reg: Registry) -> str:
    """Consul's leader address (IP:server port): this registry's own when alone; over a shared store the
    elected one's, '' while nobody leads (Consul's answer during an election)."""
    c = reg.config
    if not reg.shared:
        return f"{c.address}:{c.server_port}"
    leader = await reg.leadership.leader()
    return f"{leader.get('address', '')}:{c.server_port}" if leader else ""


async def status_leader(request: web.Request) -> web.Response:
    return _json(await _leader_addr(request.app[REGISTRY]))


async def status_peers(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    c = reg.config
    if not reg.shared:
        return _json([f"{c.address}:{c.server_port}"])
    members = await reg.leadership.members()
    return _json([f"{v.get('address', '')}:{c.server_port}" for v in members])


async def agent_self(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    c = reg.config
    leader = await _leader_addr(reg)
    member = {
        "Name": c.node,
        "Addr": c.address,
        "Port": 8301,
        "Tags": {"role": "consul", "dc": c.datacenter, "build": CONSUL_VERSION, "vsn": "2"},
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }
    return _json(
        {
            "Config": {
                "Datacenter": c.datacenter,
                "PrimaryDatacenter": c.datacenter,
                "NodeName": c.node,
                "NodeID": reg.node_id,
                "Revision": "shoal",
                "Server": True,
                "Version": CONSUL_VERSION,
                "BuildDate": "",
                "Shoal": __version__,
            },
            "DebugConfig": {
                "DNSDomain": c.domain,
                "DNSPort": c.dns_port,
                "HTTPPort": c.http_port,
                "EnableScriptChecks": c.enable_script_checks,
            },
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": member,
            "Stats": {
                "consul": {
                    "leader": "true",
                    "leader_addr": leader,
                    "server": "true",
                    "known_datacenters": "1",
                },
                "agent": {"checks": "0", "services": "0"},
                "runtime": {"os": platform.system().lower(), "arch": platform.machine()},
            },
            "Meta": {"consul-network-segment": ""},
            "xDS": {"SupportedProxies": {}, "Port": -1, "Ports": {}},
        }
    )


async def agent_members(request: web.Request) -> web.Response:
    c = request.app[REGISTRY].config
    return _json(
        [
            {
                "Name": c.node,
                "Addr": c.address,
                "Port": 8301,
                "Tags": {"role": "consul", "dc": c.datacenter},
                "Status": 1,
            }
        ]
    )


# --- KV -----------------------------------------------------------------------------------------------


def _key(request: web.Request) -> str:
    return request.match_info["key"]


async def kv_get(request: web.Request) -> web.Response:
    """Consul's KV reads: one key answers with its own ModifyIndex in X-Consul-Index; ?recurse and
    ?keys with the highest index under the prefix; a missing key or an empty prefix with the index of
    the last KV deletion (views.py), which no write elsewhere in the catalog, the sessions or the KV's
    puts moves."""
    views = request.app[REGISTRY].views
    key = _key(request)
    if _flag(request, "keys"):
        sep = request.query.get("separator", request.query.get("seperator", ""))
        r = await _blocking(request, lambda: views.kv_list(key))
        listed: list[str] = []
        for e in r.data:
            k = e.key
            if sep:
                cut = k.find(sep, len(key))
                if cut >= 0:
                    k = k[: cut + len(sep)]
            if not listed or listed[-1] != k:
                listed.append(k)
        if not listed and key:
            return web.Response(status=404, headers=_index_headers(r.index))
        return _json(listed, r.index)
    if _flag(request, "recurse") and "since" in request.query:
        return await _kv_changes(request, key, _int_param(request, "since", "since index") or 0)
    if _flag(request, "recurse"):
        r = await _blocking(request, lambda: views.kv_list(key))
        entries = r.data
    else:
        r = await _blocking(request, lambda: views.kv_get(key))
        entries = [r.data] if r.data is not None else []
    if not entries:
        return web.Response(status=404, headers=_index_headers(r.index))
    if _flag(request, "raw"):
        return web.Response(
            body=entries[0].value, headers=_index_headers(r.index), content_type="application/octet-stream"
        )
    if _flag(request, "recurse"):
        return _read_json(r, "kv-list", lambda: [e.to_consul() for e in entries])
    return _read_json(r, "kv-one", lambda: [e.to_consul() for e in entries])


async def _kv_changes(request: web.Request, key: str, since: int) -> web.Response:
    """shoal's ?recurse&since=N (views.kv_changes): what changed under the prefix after index N, with
    X-Shoal-Since: N saying the body holds only that (an empty list: nothing did); without that header
    the body is the whole prefix, as ?recurse answers it, 404 when it is empty. Consul ignores a
    parameter it does not know, so a client that sends since= to Consul gets whole answers, which it
    must take as whole by the missing header: the extension degrades to Consul's behaviour."""
    r = await _blocking(request, lambda: request.app[REGISTRY].views.kv_changes(key, since))
    changes: KVChanges = r.data
    if changes.whole and not changes.entries:
        return web.Response(status=404, headers=_index_headers(r.index))
    resp = _read_json(r, "kv-changes", lambda: [e.to_consul() for e in changes.entries])
    if not changes.whole:
        resp.headers[SINCE_HEADER] = str(since)
    return resp


async def kv_put(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    key = _key(request)
    given = [f for f in ("cas", "acquire", "release") if f in request.query]
    if len(given) > 1:
        raise BadRequest(f"Conflicting flags: {'&'.join(given)}")
    flags = _int_param(request, "flags", "flags") or 0
    cas = _int_param(request, "cas", "cas index")
    if request.content_length is not None and request.content_length > m.MAX_VALUE:
        raise TooLarge(
            f"Request body({request.content_length} bytes) too large, max size: {m.MAX_VALUE} bytes."
        )
    value = await request.read()
    if "acquire" in request.query:
        ok = await reg.kv_acquire(key, value, request.query["acquire"], flags)
    elif "release" in request.query:
        ok = await reg.kv_release(key, value, request.query["release"], flags)
    else:
        ok = await reg.kv_put(key, value, flags, cas)
    return _json(ok)


async def kv_delete(request: web.Request) -> web.Response:
    cas = _int_param(request, "cas", "cas index")
    return _json(await request.app[REGISTRY].kv_delete(_key(request), _flag(request, "recurse"), cas))


# --- sessions -----------------------------------------------------------------------------------------


async def session_create(request: web.Request) -> web.Response:
    sid = await request.app[REGISTRY].session_create(await _body(request), _dc(request))
    return _json({"ID": sid})


async def session_destroy(request: web.Request) -> web.Response:
    return _json(await request.app[REGISTRY].session_destroy(request.match_info["id"], _dc(request)))


async def session_renew(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    s = await reg.session_renew(request.match_info["id"], _dc(request))
    return _json([s.to_consul()], await reg.index())


async def session_info(request: web.Request) -> web.Response:
    views, sid = request.app[REGISTRY].views, request.match_info["id"]
    r = await _blocking(request, lambda: views.session(sid))
    return _read_json(r, "data", lambda: r.data)


async def session_list(request: web.Request) -> web.Response:
    views, node = request.app[REGISTRY].views, request.match_info.get("node")
    r = await _blocking(request, lambda: views.sessions(node))
    return _read_json(r, "data", lambda: r.data)


# --- agent services and checks ------------------------------------------------------------------------


async def agent_services(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    f = _filters(request, bexpr.AGENT_SERVICE)
    svcs = [s.to_agent(reg.config.datacenter) for s in await reg.services(reg.config.node)]
    return _json({s["ID"]: s for s in svcs if f.expr is None or f.expr.keep(s)})


async def agent_service(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    sid = request.match_info["id"]
    if sid in ("register", "deregister") or sid.startswith("deregister/"):  # PUT only, as in Consul
        raise web.HTTPMethodNotAllowed(request.method, ["PUT"])
    r = await _blocking(request, lambda: reg.views.agent_service(reg.config.node, sid))
    if r.data is None:
        raise NotFound(f"unknown service ID: {sid}")
    return _json(r.data.to_agent(reg.config.datacenter), r.index)


async def agent_service_register(request: web.Request) -> web.Response:
    await request.app[REGISTRY].register_service(await _body(request))
    return web.Response(status=200)


async def agent_service_deregister(request: web.Request) -> web.Response:
    await request.app[REGISTRY].deregister_service(request.match_info["id"])
    return web.Response(status=200)


async def agent_checks(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    f = _filters(request, bexpr.CHECK)
    checks = [c.to_consul() for c in await reg.all_checks(reg.config.node) if c.id != "serfHealth"]
    return _json({c["CheckID"]: c for c in checks if f.expr is None or f.expr.keep(c)})


async def agent_check_register(request: web.Request) -> web.Response:
    await request.app[REGISTRY].register_check(await _body(request))
    return web.Response(status=200)


async def agent_check_deregister(request: web.Request) -> web.Response:
    await request.app[REGISTRY].deregister_check(request.match_info["id"])
    return web.Response(status=200)


_STATE = {"pass": m.PASSING, "warn": m.WARNING, "fail": m.CRITICAL}


async def agent_check_mark(request: web.Request) -> web.Response:
    status = _STATE[request.match_info["state"]]
    await request.app[REGISTRY].update_check(request.match_info["id"], status, request.query.get("note", ""))
    return web.Response(status=200)


async def agent_check_update(request: web.Request) -> web.Response:
    body = await _body(request)
    status = body.get("status") or ""
    status = status.lower() if isinstance(status, str) else status
    await request.app[REGISTRY].update_check(request.match_info["id"], status, body.get("output") or "")
    return web.Response(status=200)


async def txn_apply(request: web.Request) -> web.Response:
    """Consul's transaction API, KV operations: 200 with the results when applied, 409 with the errors
    (and nothing written) when an operation failed."""
    if request.content_length is not None and request.content_length > txn.MAX_BYTES:
        raise TooLarge(f"Request body too large, max size: {txn.MAX_BYTES} bytes")
    ops = txn.parse(await request.read())
    applied, reply = await request.app[REGISTRY].kv_txn(ops, _dc(request))
    return _json(reply, status=200 if applied else 409)


# --- catalog and health -------------------------------------------------------------------------------


async def catalog_datacenters(request: web.Request) -> web.Response:
    return _json([request.app[REGISTRY].config.datacenter])


async def catalog_services(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.CATALOG_SERVICE)
    r = await _blocking(request, lambda: views.catalog_services(f))
    return _read_json(r, "data", lambda: r.data)


async def catalog_service(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.CATALOG_SERVICE)
    name = request.match_info["name"]
    r = await _blocking(request, lambda: views.catalog_service(name, f))
    return _read_json(r, "data", lambda: r.data)


async def catalog_nodes(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.NODE)
    r = await _blocking(request, lambda: views.catalog_nodes(f))
    return _read_json(r, "data", lambda: r.data)


async def catalog_node(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.SERVICE)
    name = request.match_info["node"]
    r = await _blocking(request, lambda: views.catalog_node(name, f))
    return _read_json(r, "data", lambda: r.data)


async def health_service(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.HEALTH_ENTRY)
    name = request.match_info["name"]
    r = await _blocking(request, lambda: views.health_service(name, f))
    return _read_json(r, "data", lambda: r.data)


async def health_state(request: web.Request) -> web.Response:
    state = request.match_info["state"]
    if state not in ("any", *m.STATUSES):
        raise BadRequest(f"Invalid state {state!r}: must be any, passing, warning or critical")
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.CHECK)
    r = await _blocking(request, lambda: views.health_state(state, f))
    return _read_json(r, "data", lambda: r.data)


async def health_checks(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.CHECK)
    name = request.match_info["name"]
    r = await _blocking(request, lambda: views.health_checks(name, f))
    return _read_json(r, "data", lambda: r.data)


async def health_node(request: web.Request) -> web.Response:
    views, f = request.app[REGISTRY].views, _filters(request, bexpr.CHECK)
    name = request.match_info["node"]
    r = await _blocking(request, lambda: views.health_node(name, f))
    return _read_json(r, "data", lambda: r.data)


async def catalog_register(request: web.Request) -> web.Response:
    body = await _body(request)
    # py-consul sends node_meta as ?node-meta=KEY:VALUE on register; take it as NodeMeta
    for pair in request.query.getall("node-meta", []):
        k, sep, v = pair.partition(":")
        if not sep:
            raise BadRequest(f"Invalid node-meta {pair[:64]!r}: must be KEY:VALUE")
        meta = body["nodemeta"] = body.get("nodemeta") or {}
        if not isinstance(meta, dict):
            raise BadRequest("Request decode failed: NodeMeta must be an object of strings")
        meta[k] = v
    await request.app[REGISTRY].catalog_register(body)
    return _json(True)


async def catalog_deregister(request: web.Request) -> web.Response:
    await request.app[REGISTRY].catalog_deregister(await _body(request))
    return _json(True)


async def _stale_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A read the store answered without quorum (etcd's serializable read from a member still up) says
    so as Consul does for a stale read: no known leader, and for how long it has been out of touch."""
    store = request.app[REGISTRY].store
    if "X-Consul-Knownleader" in response.headers and getattr(store, "stale", False):
        response.headers["X-Consul-Knownleader"] = "false"
        response.headers["X-Consul-Lastcontact"] = str(int(getattr(store, "lost_for", 0.0) * 1000))


def make_app(registry: Registry, figures: prom.RegistryMetrics | None = None) -> web.Application:
    """The Consul API app. `_errors` is its first middleware: one appended to `app.middlewares` before
    the runner starts (acl_http.install does) runs inside it, after the ?dc= check, so a refusal raised
    there as a ShoalError gets Consul's status and plain-text form."""
    app = web.Application(middlewares=[_errors], client_max_size=decode.MAX_JSON)
    app[REGISTRY] = registry
    app[METRICS] = figures or prom.RegistryMetrics()
    app.on_response_prepare.append(_stale_headers)
    r = app.router
    r.add_get("/metrics", metrics)
    r.add_get("/", root)
    r.add_get("/ui/", ui)
    r.add_get("/v1/status/leader", status_leader)
    r.add_get("/v1/status/peers", status_peers)
    r.add_get("/v1/agent/self", agent_self)
    r.add_get("/v1/agent/members", agent_members)
    r.add_get("/v1/kv/{key:.*}", kv_get)
    r.add_put("/v1/kv/{key:.*}", kv_put)
    r.add_delete("/v1/kv/{key:.*}", kv_delete)
    r.add_put("/v1/session/create", session_create)
    r.add_put("/v1/session/destroy/{id}", session_destroy)
    r.add_put("/v1/session/renew/{id}", session_renew)
    r.add_get("/v1/session/info/{id}", session_info)
    r.add_get("/v1/session/list", session_list)
    r.add_get("/v1/session/node/{node}", session_list)
    r.add_get("/v1/agent/services", agent_services)
    # ids may hold "/" (Consul takes the rest of the path); register/deregister are PUT only there
    r.add_put("/v1/agent/service/register", agent_service_register)
    r.add_put("/v1/agent/service/deregister/{id:.+}", agent_service_deregister)
    r.add_get("/v1/agent/service/{id:.+}", agent_service)
    r.add_get("/v1/agent/checks", agent_checks)
    r.add_put("/v1/agent/check/register", agent_check_register)
    r.add_put("/v1/agent/check/deregister/{id:.+}", agent_check_deregister)
    r.add_put("/v1/agent/check/{state:pass|warn|fail}/{id:.+}", agent_check_mark)
    r.add_put("/v1/agent/check/update/{id:.+}", agent_check_update)
    r.add_get("/v1/catalog/datacenters", catalog_datacenters)
    r.add_get("/v1/catalog/services", catalog_services)
    r.add_get("/v1/catalog/service/{name}", catalog_service)
    r.add_get("/v1/catalog/nodes", catalog_nodes)
    r.add_put("/v1/catalog/register", catalog_register)
    r.add_put("/v1/catalog/deregister", catalog_deregister)
    r.add_get("/v1/catalog/node/{node}", catalog_node)
    r.add_get("/v1/health/service/{name}", health_service)
    r.add_get("/v1/health/state/{state}", health_state)
    r.add_get("/v1/health/checks/{name}", health_checks)
    r.add_get("/v1/health/node/{node}", health_node)
    r.add_put("/v1/txn", txn_apply)
    return app
