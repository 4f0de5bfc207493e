"""`shoal token create`: a join token for `shoal agent --join`, from the manager (admin certificate)."""

from __future__ import annotations

import time

import click

from shoal.cli.docker_api import call, default_host
from shoal.manager.join import DEFAULT_TTL


@click.group()
def token() -> None:
    """Join tokens: what a new node presents once to get its certificate."""


@token.command()
@click.option("--ttl", type=float, default=DEFAULT_TTL, show_default=True, help="Seconds the token is valid.")
@click.option("--host", "-H", default=default_host, help="The shoal manager (default: $DOCKER_HOST).")
@click.option("--quiet", "-q", is_flag=True, help="Print the token only.")
def create(ttl: float, host: str, quiet: bool) -> None:
    """A new join token; `shoal agent --join TOKEN --manager https://MANAGER:2377` uses it."""
    got = call("POST", "/shoal/v1/join-tokens", host, params={"ttl": f"{ttl:g}"})
    if quiet:
        click.echo(got["Token"])
        return
    left = (got["Expires"] - time.time()) / 3600
    click.echo(got["Token"])
    click.echo(
        f"valid for {left:.1f} h; on the new node: shoal agent --join <token> --manager https://MANAGER:2377"
    )
