"""Running `shoal manager`: the cluster cache, the Docker API over mutual TLS (or, asked for explicitly,
plain TCP on loopback), a unix socket, and the join listener agents get their certificates from."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from shoal import pki
from shoal.api import tls_alerts
from shoal.api.docker.app import make_app
from shoal.api.public import make_public_app
from shoal.cluster.state import Cluster
from shoal.data.profiles import load_profiles
from shoal.errors import BadRequest
from shoal.logs import kv
from shoal.manager.join import Joins
from shoal.manager.service import Manager, Settings
from shoal.registry.acl_http import AclConfig
from shoal.registry.client import Access
from shoal.registry.core import Config
from shoal.registry.leader import DEFAULT_TTL
from shoal.registry.server import RegistryServer, https_context
from shoal.signals import serve_until_signal

log = logging.getLogger("shoal.manager")


@dataclass(frozen=True, slots=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Options:
    registry: Access
    host: str
    port: int
    unix: str | None = None
    strategy: str = "spread"
    fact_ttl: float = 30.0
    profiles_file: Path | None = None
    tls: TLSFiles | None = None  # the Docker API over mutual TLS, and the client certificate to engines
    insecure_tcp: bool = False  # plain TCP, loopback only
    join_host: str = ""
    join_port: int = 0
    join_tls: TLSFiles | None = None  # the join listener's certificate (node CA)
    node_ca_key: Path | None = None  # signs node certificates at join
    advertise_registry: str = ""  # the registry address joined agents are told
    registry_server: EmbeddedRegistry | None = None  # serve the registry too, over a shared store


@dataclass(frozen=True, slots=True)
class EmbeddedRegistry:
    """The registry a manager serves itself (`shoal manager --store etcd://...`): several managers over
    one etcd each serve the Consul API and DNS, and elect one leader for the cluster-wide loops."""

    store: str
    https_host: str
    https_port: int
    cert: Path
    key: Path
    dns_host: str
    dns_port: int
    node: str
    advertise: str
    acl: AclConfig
    leader_ttl: float = DEFAULT_TTL


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def check(o: Options) -> None:
    """dockerd's rule, kept: the Docker API is root on every node, so it is never plain on a network."""
    if o.tls is None:
        if not o.insecure_tcp:
            raise BadRequest(
                "refusing to serve the Docker API without TLS: give --tlsverify --tlscacert --tlscert "
                "--tlskey (as dockerd takes them), or --insecure-tcp for plain TCP on a loopback address"
            )
        if not is_loopback(o.host):
            raise BadRequest(
                f"refusing plain TCP on {o.host}: without TLS the Docker API is served on loopback only "
                "(--listen 127.0.0.1:2375), or use --tlsverify"
            )
    if o.join_port and (o.join_tls is None or o.node_ca_key is None):
        raise BadRequest(
            "--join-listen needs --join-cert, --join-key and --node-ca-key (to sign node certificates)"
        )


async def _start_registry(o: Options, r: EmbeddedRegistry) -> RegistryServer:
    ctx = https_context(str(r.cert), str(r.key))
    config = Config(node=r.node, address=r.advertise, http_port=0, dns_port=r.dns_port)
    me = {
        "docker": f"{r.advertise}:{o.port}",
        "consul": f"{r.advertise}:{r.https_port}",
        "dns": f"{r.advertise}:{r.dns_port}",
    }
    return await RegistryServer.start(
        config,
        r.store,
        "",
        r.dns_host,
        (r.https_host, r.https_port, ctx),
        r.acl,
        me=me,
        leader_ttl=r.leader_ttl,
    )


async def serve(o: Options, ready=None) -> None:
    check(o)
    profiles, default_profile = load_profiles(o.profiles_file)
    engine_tls = pki.client_context(o.tls.ca, o.tls.cert, o.tls.key) if o.tls else None
    registry = await _start_registry(o, o.registry_server) if o.registry_server else None
    try:
        await _serve(o, ready, profiles, default_profile, engine_tls, registry)
    finally:
        if registry is not None:
            await registry.close()


async def _serve(o: Options, ready, profiles, default_profile, engine_tls, registry) -> None:
    lead = registry.leadership if registry is not None else None
    # beside other managers, placements are held on the nodes' documents in the registry (cluster/holds.py)
    holder = str(lead.me.get("name", "")) if lead is not None and lead.shared else ""
    cluster = Cluster(o.registry, engine_tls, holder=holder)
    await cluster.start()
    settings = Settings(o.strategy, o.fact_ttl, "shoal", profiles, default_profile)
    manager = Manager(cluster, settings, lead)
    runners: list[web.AppRunner] = []
    runner = web.AppRunner(make_app(manager), access_log=None, handler_cancellation=True)
    await runner.setup()
    runners.append(runner)
    server_tls = pki.server_context(o.tls.ca, o.tls.cert, o.tls.key) if o.tls else None
    if server_tls is not None:
        tls_alerts.install()  # a client without a certificate hears why it was refused
    await web.TCPSite(runner, o.host, o.port, backlog=1024, ssl_context=server_tls).start()
    if o.unix:
        Path(o.unix).unlink(missing_ok=True)
        await web.UnixSite(runner, o.unix).start()
    if o.join_port and o.join_tls and o.node_ca_key:
        node_ca = pki.Pair(o.join_tls.ca.read_bytes(), o.node_ca_key.read_bytes())
        manager.joins = Joins(manager, node_ca, o.advertise_registry or o.registry.address)
        public = web.AppRunner(make_public_app(manager), access_log=None, handler_cancellation=True)
        await public.setup()
        runners.append(public)
        # a client certificate is optional here: joining agents have none yet, renewing ones show theirs
        ctx = pki.server_context(o.join_tls.ca, o.join_tls.cert, o.join_tls.key, clients="optional")
        await web.TCPSite(public, o.join_host, o.join_port, ssl_context=ctx).start()
    scheme = "tcp+tls" if o.tls else "tcp"
    join = f"https://{o.join_host}:{o.join_port}" if o.join_port else None
    api = f"{scheme}://{o.host}:{o.port}"
    kv(
        log,
        "manager ready",
        docker_api=api,
        unix=o.unix,
        nodes=len(cluster.index),
        strategy=o.strategy,
        join=join,
    )

    async def close() -> None:
        for r in runners:
            await r.cleanup()
        await cluster.close()

    await serve_until_signal(close, ready)
