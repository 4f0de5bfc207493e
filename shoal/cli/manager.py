"""`shoal manager`: the Docker Engine API for the whole cluster, placing each container on live facts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from shoal import logs
from shoal.api.docker.server import serve
from shoal.cli.registry import _hostport
from shoal.registry.client import base_url
from shoal.scheduler.strategy import STRATEGIES


@click.command()
@click.option(
    "--registry",
    default="127.0.0.1:8500",
    show_default=True,
    envvar="CONSUL_HTTP_ADDR",
    help="The registry (Consul API) the agents publish to: HOST:PORT or URL.",
)
@click.option("--listen", default="127.0.0.1:2375", show_default=True, help="Docker API address (TCP).")
@click.option("--unix", "unix_socket", default=None, help="Also serve the Docker API on this unix socket.")
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
    listen: str,
    unix_socket: str | None,
    strategy: str,
    fact_ttl: float,
    profiles_file: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the Docker Engine API over every node of the cluster."""
    logs.setup(log_level, log_format)
    host, port = _hostport(listen, 2375)
    asyncio.run(
        serve(
            base_url(registry),
            host,
            port,
            unix_socket,
            strategy,
            fact_ttl,
            profiles_file,
            ready=lambda: click.echo(f"manager ready: tcp://{host}:{port}"),
        )
    )
