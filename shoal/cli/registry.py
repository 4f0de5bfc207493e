"""`shoal registry`: the Consul-compatible registry (KV, sessions, locks, services, checks, DNS) alone."""

from __future__ import annotations

import asyncio
import socket

import click

from shoal import logs
from shoal.registry.core import Config
from shoal.registry.server import serve_forever


def _hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HOST:PORT") from None


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
    "--http", "http_addr", default="127.0.0.1:8500", show_default=True, help="Consul HTTP API address."
)
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
) -> None:
    """Serve the Consul HTTP API and DNS over the chosen store."""
    logs.setup(log_level, log_format)
    http_host, http_port = _hostport(http_addr, 8500)
    dns_host, dns_port = _hostport(dns_addr, 8600)
    config = Config(
        node=node,
        address=advertise,
        datacenter=datacenter,
        domain=domain,
        http_port=http_port,
        dns_port=dns_port,
        enable_script_checks=enable_script_checks,
    )
    asyncio.run(
        serve_forever(
            config,
            store_url,
            http_host,
            dns_host,
            ready=lambda: click.echo(
                f"registry ready: http://{http_host}:{http_port} "
                f"dns {dns_host}:{dns_port} store {store_url}"
            ),
        )
    )
