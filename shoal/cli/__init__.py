"""The `shoal` command: one module per command group, errors rendered once, here."""

from __future__ import annotations

import sys

import click

from shoal import __version__
from shoal.cli.agent import agent
from shoal.cli.dev import dev
from shoal.cli.init import init
from shoal.cli.manager import manager
from shoal.cli.node import node
from shoal.cli.nodes import facts, nodes
from shoal.cli.registry import registry
from shoal.cli.token import token
from shoal.cli.volume import volume
from shoal.cli.why import why
from shoal.errors import ShoalError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """shoal: one Docker API over many engines, placement on live node facts."""


cli.add_command(dev)
cli.add_command(registry)
cli.add_command(volume)
cli.add_command(token)
for command in (agent, nodes, node, facts, manager, why, init):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except ShoalError as e:
        click.echo(f"shoal: {e.message}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("shoal: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
