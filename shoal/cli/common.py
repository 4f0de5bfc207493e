"""What the CLI's command groups share: how they find the registry."""

from __future__ import annotations

import click

registry_option = click.option(
    "--registry",
    default="127.0.0.1:8500",
    show_default=True,
    envvar="CONSUL_HTTP_ADDR",
    help="The registry (Consul API): HOST:PORT or URL.",
)
