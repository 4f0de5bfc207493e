"""`shoal volume ls|inspect|snapshot|clone|rm`: the cluster's datasets, from the registry's records.
Changes are written as records; each node's agent converges its pool to them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from shoal.cli.common import registry_option
from shoal.data.model import check_remove, decide_clone, decide_snapshot, find
from shoal.data.records import Records, new_ids
from shoal.registry.client import with_registry


def _with_records(fn: Callable[[Records], Awaitable[Any]], registry: str) -> Any:
    return asyncio.run(with_registry(registry, lambda r: fn(Records(r))))


@click.group()
def volume() -> None:
    """Datasets: list, inspect, snapshot, clone, remove."""


@volume.command("ls")
@registry_option
def ls(registry: str) -> None:
    """Every dataset and snapshot, with its profile, node and parent."""

    async def go(r: Records) -> tuple[list, dict]:
        return (await r.all())[0], await r.all_mounts()

    datasets, mounts = _with_records(go, registry)
    table = Table()
    for col in ("ID", "NAME", "KIND", "PROFILE", "NODE", "SIZE", "PARENT", "MOUNTS"):
        table.add_column(col)
    for d in sorted(datasets, key=lambda d: (d.node, d.created)):
        size = f"{d.size >> 20}M" if d.size else "-"
        table.add_row(
            d.id[:8], d.name, d.kind, d.profile, d.node, size, d.parent[:8], str(mounts.get(d.id, 0))
        )
    Console(width=140).print(table)


@volume.command()
@click.argument("ref")
@registry_option
def inspect(ref: str, registry: str) -> None:
    """One dataset or snapshot (by name, id or id prefix) as JSON."""

    async def go(r: Records) -> dict:
        datasets, _ = await r.all()
        d = find(datasets, ref)
        return {
            **d.to_dict(),
            "mounts": (await r.all_mounts()).get(d.id, 0),
            "children": [x.id for x in datasets if x.parent == d.id],
        }

    click.echo(json.dumps(_with_records(go, registry), indent=2))


@volume.command()
@click.argument("ref")
@registry_option
def snapshot(ref: str, registry: str) -> None:
    """A read-only snapshot of dataset REF, on its node; prints the snapshot's id."""

    async def go(r: Records) -> str:
        d = decide_snapshot(find((await r.all())[0], ref), next(new_ids()), time.time())
        await r.commit((d,))
        return d.id

    click.echo(_with_records(go, registry))


@volume.command()
@click.argument("ref")
@click.argument("name")
@registry_option
def clone(ref: str, name: str, registry: str) -> None:
    """A writable dataset NAME from snapshot REF (or from a new snapshot of dataset REF)."""

    async def go(r: Records) -> str:
        datasets, _ = await r.all()
        made = decide_clone(find(datasets, ref), name, datasets, new_ids(), time.time())
        await r.commit(made)
        return made[-1].id

    click.echo(_with_records(go, registry))


@volume.command()
@click.argument("ref")
@registry_option
def rm(ref: str, registry: str) -> None:
    """Remove dataset or snapshot REF (refused while mounted or with snapshots/clones made from it)."""

    async def go(r: Records) -> str:
        datasets, _ = await r.all()
        d = find(datasets, ref)
        check_remove(d, datasets, (await r.all_mounts()).get(d.id, 0))
        await r.remove(d)
        return d.id

    click.echo(_with_records(go, registry))
