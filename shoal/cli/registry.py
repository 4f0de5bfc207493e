"""`shoal registry`: the Consul-compatible registry (KV, sessions, locks, services, checks, DNS) alone."""

from __future__ import annotations

import socket

import click

from shoal import eventloop, gcpauses, logs, malloc
from shoal.errors import BadRequest
from shoal.registry.acl_http import AclConfig
from shoal.registry.core import Config
from shoal.registry.server import https_context, serve_forever


def _hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HOST:PORT") from None


def acl_config(enabled: bool, default_policy: str, initial_management: str) -> AclConfig:
    """The ACL flags checked whole (for `shoal registry` and for the registry a manager serves)."""
    if initial_management and not enabled:
        raise BadRequest("--acl-initial-management needs --acl (ACLs are off without it)")
    if initial_management and (
        len(initial_management) > 256 or not initial_management.isprintable() or " " in initial_management
    ):
        raise BadRequest(
            "--acl-initial-management must be one printable word of at most 256 characters (a UUID)"
        )
    return AclConfig(enabled, default_policy, initial_management)


leader_ttl_option = click.option(
    "--leader-ttl",
    type=click.FloatRange(1.0, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds of etcd lease behind the bid to lead when several registries share one etcd: a dead "
    "leader is replaced within about this long. Whole seconds (etcd's unit).",
)


@click.command()
@click.option(
    "--store",
    "store_url",
    default="sqlite:///var/lib/shoal/registry.db",
    show_default=True,
    envvar="SHOAL_STORE",
    help="sqlite:///PATH (embedded) or etcd://HOST:PORT[,HOST:PORT...].",
)
@click.option(
    "--http",
    "http_addr",
    default="127.0.0.1:8500",
    show_default=True,
    help="Consul HTTP API address (plain HTTP); '' turns it off.",
)
@click.option("--https", "https_addr", default="", help="Consul HTTPS API address (with --tlscert/--tlskey).")
@click.option("--tlscert", type=click.Path(exists=True, dir_okay=False), help="The HTTPS certificate (PEM).")
@click.option("--tlskey", type=click.Path(exists=True, dir_okay=False), help="Its key (PEM).")
@click.option(
    "--dns",
    "dns_addr",
    default="127.0.0.1:8600",
    show_default=True,
    help="DNS address (UDP and TCP); port 0 turns DNS off.",
)
@click.option(
    "--node", default=socket.gethostname(), show_default="this host's name", help="This agent's node name."
)
@click.option(
    "--advertise", default="127.0.0.1", show_default=True, help="The node's address in the catalog."
)
@click.option("--datacenter", default="dc1", show_default=True)
@click.option("--domain", default="shoal", show_default=True, help="DNS domain: NAME.service.DOMAIN.")
@click.option("--enable-script-checks", is_flag=True, help="Allow checks that run commands (Args).")
@click.option(
    "--acl",
    "acl_enabled",
    is_flag=True,
    help="Check Consul ACL tokens on every HTTP request (X-Consul-Token, Bearer, ?token=); DNS stays open.",
)
@click.option(
    "--acl-default-policy",
    type=click.Choice(["allow", "deny"]),
    default="deny",
    show_default=True,
    help="What a token may do where no rule says (Consul's acl.default_policy).",
)
@click.option(
    "--acl-initial-management",
    default="",
    envvar="CONSUL_ACL_INITIAL_MANAGEMENT",
    show_envvar=True,
    help="A management token's secret to create at start (Consul's acl.tokens.initial_management); "
    "prefer the environment variable, which no process listing shows.",
)
@leader_ttl_option
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="logfmt", show_default=True)
def registry(
    store_url: str,
    http_addr: str,
    dns_addr: str,
    node: str,
    advertise: str,
    datacenter: str,
    domain: str,
    enable_script_checks: bool,
    log_level: str,
    log_format: str,
    https_addr: str,
    tlscert: str | None,
    tlskey: str | None,
    acl_enabled: bool,
    acl_default_policy: str,
    acl_initial_management: str,
    leader_ttl: float,
) -> None:
    """Serve the Consul HTTP API and DNS over the chosen store."""
    logs.setup(log_level, log_format)
    http_host, http_port = _hostport(http_addr, 8500) if http_addr else ("", 0)
    https = None
    if https_addr:
        if not (tlscert and tlskey):
            raise BadRequest("--https needs --tlscert and --tlskey (the registry's certificate and key)")
        host, port = _hostport(https_addr, 8501)
        https = (host, port, https_context(tlscert, tlskey))
    elif not http_host:
        raise BadRequest("the registry needs a listener: --http HOST:PORT or --https HOST:PORT")
    dns_host, dns_port = _hostport(dns_addr, 8600)
    acl = acl_config(acl_enabled, acl_default_policy, acl_initial_management)
    config = Config(
        node=node,
        address=advertise,
        datacenter=datacenter,
        domain=domain,
        http_port=http_port,
        dns_port=dns_port,
        enable_script_checks=enable_script_checks,
    )
    gcpauses.tune()
    malloc.tune()
    eventloop.run(
        serve_forever(
            config,
            store_url,
            http_host,
            dns_host,
            ready=lambda: click.echo(
                f"registry ready: {f'https://{https_addr}' if https else f'http://{http_host}:{http_port}'} "
                f"dns {dns_host}:{dns_port} store {store_url}"
                + (f" acl on (default {acl_default_policy})" if acl_enabled else "")
            ),
            https=https,
            acl=acl,
            leader_ttl=leader_ttl,
        )
    )
