"""`shoal token create`: a join token for `shoal agent --join`, from the manager (admin certificate)."""

from __future__ import annotations

import time

import click

from shoal.cli.docker_api import call, default_host
from shoal.manager.join import DEFAULT_TTL


@click.group()
def token() -> None:
    """Join tokens: what a new node presents once to get its certificate (create, ls, rm)."""


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


@token.command("ls")
@click.option("--host", "-H", default=default_host, help="The shoal manager (default: $DOCKER_HOST).")
def ls(host: str) -> None:
    """Every join token: its id, when it was made and when it expires (never its secret)."""
    rows = call("GET", "/shoal/v1/join-tokens", host)
    click.echo(f"{'ID':<18}{'CREATED':<22}EXPIRES")
    for t in rows:
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["Created"]))
        ends = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["Expires"]))
        click.echo(f"{t['ID']:<18}{made:<22}{ends}{' (expired)' if t['Expired'] else ''}")


@token.command("rm")
@click.argument("token_ids", nargs=-1, required=True)
@click.option("--host", "-H", default=default_host, help="The shoal manager (default: $DOCKER_HOST).")
def rm(token_ids: tuple[str, ...], host: str) -> None:
    """Revoke join tokens (by the id `shoal token ls` shows): no new node can join with them; nodes that
    joined with them keep their certificates."""
    for token_id in token_ids:
        call("DELETE", f"/shoal/v1/join-tokens/{token_id}", host)
        click.echo(token_id)
