"""`shoal dev ...`: bring a real multi-node cluster up on this host, inspect it, take it down."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shoal.dev import cluster, controls
from shoal.dev.layout import DEFAULT_NAME, DEFAULT_ROOT, DEFAULT_SUBNET, ClusterSpec, parse_node_labels
from shoal.scheduler.strategy import STRATEGIES

_name = click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    envvar="SHOAL_DEV_NAME",
    help="Cluster name; prefixes its bridge, namespaces and interfaces.",
)
_root = click.option(
    "--root",
    default=str(DEFAULT_ROOT),
    show_default=True,
    envvar="SHOAL_DEV_ROOT",
    help="Where node data and the state file live.",
)


@click.group()
def dev() -> None:
    """A real multi-node cluster on this host: one dockerd per network namespace."""


@dev.command()
@click.option("--nodes", "-n", default=3, show_default=True, type=int, help="How many nodes.")
@click.option(
    "--managers",
    default=1,
    show_default=True,
    type=int,
    help="How many managers: 1 (over SQLite), or 3 or 5, each in its own namespace beside an etcd member.",
)
@click.option(
    "--subnet",
    default=DEFAULT_SUBNET,
    show_default=True,
    envvar="SHOAL_DEV_SUBNET",
    help="The nodes' network; the host bridge takes its first address.",
)
@click.option(
    "--strategy",
    type=click.Choice(["spread", "binpack", "random"]),
    default="spread",
    show_default=True,
    help="The manager's placement strategy.",
)
@click.option(
    "--agent-interval",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between each node agent's fact publishes.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="NODE=KEY=VALUE",
    help="An engine label for one node (as dockerd --label), e.g. node1=disk=ssd. Repeatable.",
)
@click.option(
    "--agent-label",
    "agent_labels",
    multiple=True,
    metavar="NODE=KEY=VALUE",
    help="A label the node's agent publishes (as shoal agent --label), e.g. node3=zone=b. Repeatable.",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="SHOAL_DEV_INSECURE",
    help="No TLS and no tokens (today's plain mode, for debugging): anyone who reaches the ports is root.",
)
@_name
@_root
def up(
    nodes: int,
    managers: int,
    subnet: str,
    strategy: str,
    agent_interval: float,
    labels: tuple[str, ...],
    agent_labels: tuple[str, ...],
    insecure: bool,
    name: str,
    root: str,
) -> None:
    """Bring the cluster up (a no-op if it already is): secure by default, mutual TLS and tokens."""
    if insecure:
        click.secho(
            "WARNING: --insecure: no TLS, no tokens. Anyone who reaches this host's bridge is root on every "
            "node. For debugging only.",
            fg="red",
            bold=True,
            err=True,
        )
    spec = ClusterSpec(
        name=name,
        nodes=nodes,
        subnet=subnet,
        root=Path(root),
        labels=parse_node_labels(labels),
        agent_labels=parse_node_labels(agent_labels),
        agent_interval=agent_interval,
        strategy=strategy,
        secure=not insecure,
        managers=managers,
    )
    t = cluster.up(spec, out=click.echo)
    if t.total:
        click.echo(f"up in {t.total:.1f}s")


@dev.command()
@_name
@_root
def down(name: str, root: str) -> None:
    """Remove everything the cluster made: processes, mounts, loop devices, namespaces, links, rules, data."""
    cluster.down(name, Path(root), out=click.echo)


@dev.command()
@_name
@_root
def status(name: str, root: str) -> None:
    """Each node, its engine and its health; exits 1 if any node is unhealthy."""
    rows = cluster.status(name, Path(root))
    table = Table(title=f"dev cluster {name}")
    for col in ("node", "address", "engine", "health", "version", "containers", "images", "pool"):
        table.add_column(col)
    for r in rows:
        health = "[green]healthy[/]" if r.healthy else f"[red]{'down' if not r.running else 'unhealthy'}[/]"
        if r.error:
            health += f" ({r.error})"
        table.add_row(
            r.name,
            r.address,
            f"{r.engine_url} pid {r.engine_pid}",
            health,
            r.version,
            f"{r.containers} ({r.running_containers} running)",
            str(r.images),
            r.pool,
        )
    console = Console(width=160)
    console.print(table)
    services = cluster.service_status(name, Path(root))
    for svc, pid, ok, where in services:
        console.print(f"{svc}: {'[green]healthy[/]' if ok else '[red]down[/]'} {where} pid {pid}")
    if not all(r.healthy for r in rows) or not all(ok for _, _, ok, _ in services):
        raise SystemExit(1)


@dev.command()
@_name
@_root
def env(name: str, root: str) -> None:
    """Shell exports for the cluster: eval "$(shoal dev env)"."""
    for line in cluster.env_lines(name, Path(root)):
        click.echo(line)


@dev.group()
def node() -> None:
    """Stop, kill or start one node's engine and agent while the rest of the cluster stays up."""


@node.command("stop")
@click.argument("node_name", metavar="NODE")
@_name
@_root
def node_stop(node_name: str, name: str, root: str) -> None:
    """Stop NODE's agent, then its engine (its containers stop as dockerd stops them)."""
    controls.node_stop(name, Path(root), node_name, out=click.echo)


@node.command("kill")
@click.argument("node_name", metavar="NODE")
@_name
@_root
def node_kill(node_name: str, name: str, root: str) -> None:
    """Kill every process on NODE at once (engine, agent, containers), as a power cut would."""
    controls.node_stop(name, Path(root), node_name, kill=True, out=click.echo)


@node.command("start")
@click.argument("node_name", metavar="NODE")
@_name
@_root
def node_start(node_name: str, name: str, root: str) -> None:
    """Start NODE's engine and agent again."""
    controls.node_start(name, Path(root), node_name, out=click.echo)


@dev.group()
def manager() -> None:
    """The cluster's manager(s): restart, and with several (--managers 3), kill or start one."""


@manager.command("restart")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help="Restart with this strategy.")
@_name
@_root
def manager_restart(strategy: str | None, name: str, root: str) -> None:
    """Restart the manager (e.g. with --strategy binpack); its cache is rebuilt from engines and registry.
    With several managers, each in turn (their etcd members keep running)."""
    controls.manager_restart(name, Path(root), strategy, out=click.echo)


@manager.command("kill")
@click.argument("indexes", metavar="N...", nargs=-1, required=True, type=click.IntRange(min=1))
@_name
@_root
def manager_kill(indexes: tuple[int, ...], name: str, root: str) -> None:
    """Kill manager N's host at once: every process in its namespace (its etcd member and its manager)."""
    controls.manager_kill(name, Path(root), indexes, out=click.echo)


@manager.command("start")
@click.argument("indexes", metavar="N...", nargs=-1, required=True, type=click.IntRange(min=1))
@_name
@_root
def manager_start(indexes: tuple[int, ...], name: str, root: str) -> None:
    """Start manager N again: its etcd member on its data, then (once etcd is healthy) its manager.
    Give several to start them together, as a quorum needs when most members are down."""
    controls.manager_start(name, Path(root), indexes, out=click.echo)
