"""`shoal manager`: the Docker Engine API for the whole cluster, placing each container on live facts.

TLS flags are dockerd's (and classic Swarm's): `--tlsverify --tlscacert --tlscert --tlskey`; the same
certificate is the manager's client certificate to the engines' own --tlsverify. The registry is reached as
Consul's clients reach it (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from pathlib import Path

import click

from shoal import gcpauses, logs, malloc
from shoal.api.docker.server import EmbeddedRegistry, Options, TLSFiles, serve
from shoal.cli.registry import _hostport, acl_config, leader_ttl_option
from shoal.errors import BadRequest
from shoal.registry.acl_http import AclConfig
from shoal.registry.client import Access
from shoal.scheduler.strategy import STRATEGIES

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def raise_open_files() -> None:
    """The soft limit on open files up to the hard one: the manager holds an event stream and a few
    connections per engine, and 1,000 engines pass the usual soft limit of 1,024 (each call past it
    would fail as if the engine were down)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _embedded(
    store_url: str,
    https: str,
    cert: Path | None,
    key: Path | None,
    dns: str,
    node: str,
    advertise: str,
    acl: AclConfig,
    leader_ttl: float,
) -> EmbeddedRegistry:
    """The registry `--store` asks the manager to serve, checked whole before anything starts."""
    if not store_url.startswith("etcd://"):
        raise BadRequest(
            f"--store {store_url!r}: a manager serves the registry only over a store several managers "
            "share (etcd://HOST:PORT,...); for one manager over SQLite run `shoal registry` beside it"
        )
    if not advertise:
        raise BadRequest(
            "--store needs --advertise IP: the address other managers and agents reach this one at"
        )
    if not (cert and key):
        raise BadRequest("--store needs --registry-tlscert and --registry-tlskey (the registry serves HTTPS)")
    https_host, https_port = _hostport(https or f"{advertise}:8501", 8501)
    dns_host, dns_port = _hostport(dns or f"{advertise}:8600", 8600)
    return EmbeddedRegistry(
        store=store_url,
        https_host=https_host,
        https_port=https_port,
        cert=cert,
        key=key,
        dns_host=dns_host,
        dns_port=dns_port,
        node=node or socket.gethostname(),
        advertise=advertise,
        acl=acl,
        leader_ttl=leader_ttl,
    )


@click.command()
@click.option(
    "--registry",
    default="127.0.0.1:8500",
    show_default=True,
    envvar="CONSUL_HTTP_ADDR",
    help="The registry (Consul API) the agents publish to: HOST:PORT or URL.",
)
@click.option("--registry-token", envvar="CONSUL_HTTP_TOKEN", default="", help="Its ACL token.")
@click.option(
    "--registry-cacert", envvar="CONSUL_CACERT", default="", help="The CA of its HTTPS certificate."
)
@click.option("--listen", default="", help="Docker API address [127.0.0.1:2375, or :2376 with --tlsverify].")
@click.option("--unix", "unix_socket", default=None, help="Also serve the Docker API on this unix socket.")
@click.option(
    "--tlsverify", is_flag=True, help="Serve the Docker API over mutual TLS (as dockerd --tlsverify)."
)
@click.option(
    "--tlscacert", type=_file, help="Trust client (and engine) certificates signed only by this CA."
)
@click.option("--tlscert", type=_file, help="The manager's certificate (server, and client to the engines).")
@click.option("--tlskey", type=_file, help="Its key.")
@click.option("--insecure-tcp", is_flag=True, help="Plain TCP without TLS, on a loopback address only.")
@click.option("--join-listen", default="", help="Where agents join with a token (HTTPS), e.g. 10.0.0.1:2377.")
@click.option("--join-cert", type=_file, help="The join listener's certificate (signed by the node CA).")
@click.option("--join-key", type=_file, help="Its key.")
@click.option("--node-ca", type=_file, help="The node CA's certificate.")
@click.option("--node-ca-key", type=_file, help="The node CA's key: signs node certificates at join.")
@click.option("--advertise-registry", default="", help="The registry address joined agents are told.")
@click.option(
    "--store",
    "store_url",
    default="",
    envvar="SHOAL_STORE",
    help="Serve the registry too, over this shared store (etcd://HOST:PORT[,HOST:PORT...]): several "
    "managers over one etcd, one elected leader. Without it the registry is --registry's.",
)
@click.option(
    "--registry-https", default="", help="With --store: the registry's HTTPS address [ADVERTISE:8501]."
)
@click.option("--registry-tlscert", type=_file, help="With --store: the registry's HTTPS certificate.")
@click.option("--registry-tlskey", type=_file, help="Its key.")
@click.option(
    "--dns", "dns_addr", default="", help="With --store: the registry's DNS address [ADVERTISE:8600]."
)
@click.option(
    "--node", default="", help="With --store: this manager's node name in the catalog [its hostname]."
)
@click.option("--advertise", default="", help="With --store: this manager's address, as others reach it.")
@click.option(
    "--acl", "acl_enabled", is_flag=True, help="With --store: check Consul ACL tokens (as shoal registry)."
)
@click.option("--acl-default-policy", type=click.Choice(["allow", "deny"]), default="deny", show_default=True)
@click.option(
    "--acl-initial-management",
    default="",
    envvar="CONSUL_ACL_INITIAL_MANAGEMENT",
    show_envvar=True,
    help="With --store --acl: the management token to create at start (every manager needs the same).",
)
@leader_ttl_option
@click.option("--strategy", type=click.Choice(STRATEGIES), default="spread", show_default=True)
@click.option(
    "--fact-ttl",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds after which a node's facts count as absent (the node is left out).",
)
@click.option("--profiles", "profiles_file", type=click.Path(path_type=Path), help="Storage profiles (YAML).")
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="logfmt", show_default=True)
def manager(
    registry: str,
    registry_token: str,
    registry_cacert: str,
    listen: str,
    unix_socket: str | None,
    tlsverify: bool,
    tlscacert: Path | None,
    tlscert: Path | None,
    tlskey: Path | None,
    insecure_tcp: bool,
    join_listen: str,
    join_cert: Path | None,
    join_key: Path | None,
    node_ca: Path | None,
    node_ca_key: Path | None,
    advertise_registry: str,
    store_url: str,
    registry_https: str,
    registry_tlscert: Path | None,
    registry_tlskey: Path | None,
    dns_addr: str,
    node: str,
    advertise: str,
    acl_enabled: bool,
    acl_default_policy: str,
    acl_initial_management: str,
    leader_ttl: float,
    strategy: str,
    fact_ttl: float,
    profiles_file: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the Docker Engine API over every node of the cluster."""
    logs.setup(log_level, log_format)
    raise_open_files()
    tls = None
    if tlsverify:
        if not (tlscacert and tlscert and tlskey):
            raise BadRequest("--tlsverify needs --tlscacert, --tlscert and --tlskey")
        tls = TLSFiles(tlscacert, tlscert, tlskey)
    host, port = _hostport(listen or ("0.0.0.0:2376" if tls else "127.0.0.1:2375"), 2376 if tls else 2375)
    join_host, join_port = _hostport(join_listen, 2377) if join_listen else ("", 0)
    join_tls = TLSFiles(node_ca, join_cert, join_key) if node_ca and join_cert and join_key else None
    embedded = None
    if store_url:
        embedded = _embedded(
            store_url,
            registry_https,
            registry_tlscert,
            registry_tlskey,
            dns_addr,
            node,
            advertise or (host if host not in ("", "0.0.0.0") else ""),
            acl_config(acl_enabled, acl_default_policy, acl_initial_management),
            leader_ttl,
        )
        # its own registry (in this process: it lives and dies with it), unless --registry names
        # another on the command line; CONSUL_HTTP_ADDR in the environment (a user's shell, `dev env`)
        # names the registry the user talks to, not the one a manager serving its own should watch
        source = click.get_current_context().get_parameter_source("registry")
        if source is not click.core.ParameterSource.COMMANDLINE:
            registry = f"https://{embedded.advertise}:{embedded.https_port}"
    elif registry_https or dns_addr or acl_enabled:
        raise BadRequest("--registry-https, --dns and --acl serve an embedded registry: they need --store")
    options = Options(
        registry=Access(registry, registry_token, registry_cacert),
        host=host,
        port=port,
        unix=unix_socket,
        strategy=strategy,
        fact_ttl=fact_ttl,
        profiles_file=profiles_file,
        tls=tls,
        insecure_tcp=insecure_tcp,
        join_host=join_host,
        join_port=join_port,
        join_tls=join_tls,
        node_ca_key=node_ca_key,
        advertise_registry=advertise_registry,
        registry_server=embedded,
    )
    where = f"tcp://{host}:{port}" + (" (TLS)" if tls else "")
    gcpauses.tune()
    malloc.tune()
    asyncio.run(serve(options, ready=lambda: click.echo(f"manager ready: {where}")))
