"""`shoal volume ls|inspect|snapshot|clone|rm|move`: the cluster's datasets, from the registry's records and
the nodes' reports (each dataset's replicas with their lag; a move under way with its bytes and rate).
Snapshots and clones are written as records and each node's agent makes them; `rm` writes a deletion
request, which only the dataset's node carries out (after asking its engine that no container uses it), and
waits for the outcome; `move` asks the manager, which moves the dataset with its containers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from shoal import keys
from shoal.cli.common import registry_option
from shoal.cli.node import manager_call
from shoal.data.model import Dataset, Deletion, check_remove, decide_clone, decide_snapshot, find
from shoal.data.records import Records, new_ids
from shoal.errors import Conflict, ShoalError
from shoal.registry.client import RegistryClient, with_registry


def _with_records(fn: Callable[[Records], Awaitable[Any]], registry: str) -> Any:
    return asyncio.run(with_registry(registry, lambda r: fn(Records(r))))


def state_of(d: Dataset, deletions: dict[str, Deletion]) -> str:
    """What `ls` says of a dataset beside its record, in a word (the details follow the table) (pure)."""
    req = deletions.get(d.id)
    if req is not None:
        return "rm refused" if req.refused else "deleting"
    if d.conflict:
        return "conflict"
    return "recovered" if d.recovered else "-"


def detail_lines(datasets: list[Dataset], deletions: dict[str, Deletion]) -> list[str]:
    """What the one-word states mean, one line each (pure)."""
    out = []
    for d in datasets:
        ref = f"{d.name or d.kind} ({d.id})"
        if d.conflict:
            out.append(
                f"{d.node}: conflict: {ref}: {d.conflict}; reach it by id (shoal volume clone ID NAME)"
            )
        if d.recovered:
            out.append(f"{d.node}: recovered: {ref} was re-published from the node's pool")
        if (req := deletions.get(d.id)) is not None and req.refused:
            out.append(f"{d.node}: rm refused: {ref}: {req.refused}")
    return out


def report_lines(reports: dict[str, dict[str, Any]]) -> list[str]:
    """The nodes' data reports as lines: what each refused or left, and the steps failing there (pure)."""
    out = []
    for node, doc in sorted(reports.items()):
        for r in doc.get("reports") or []:
            out.append(f"{node}: {r}")
        for f in doc.get("failing") or []:
            if isinstance(f, dict):
                out.append(
                    f"{node}: failing: {f.get('step')}: {f.get('error')} (attempt {f.get('attempts')}, "
                    f"next in {f.get('retry_in')}s)"
                )
    return out


@click.group()
def volume() -> None:
    """Datasets: list, inspect, snapshot, clone, remove."""


@volume.command("ls")
@registry_option
def ls(registry: str) -> None:
    """Every dataset and snapshot, with its profile, node, parent and state (recovered: re-published by
    its node after the registry lost it; conflict: its name is held by another dataset), then what the
    nodes report (refused records, failing steps)."""

    async def go(r: Records) -> tuple[Any, dict, dict, dict, dict]:
        return (
            await r.cluster(),
            await r.all_mounts(),
            await r.reports(),
            await _replica_rows(r),
            await r.all_moves(),
        )

    cluster, mounts, reports, replicas, moves = _with_records(go, registry)
    table = Table()
    for col in ("ID", "NAME", "KIND", "PROFILE", "NODE", "SIZE", "PARENT", "MOUNTS", "REPLICAS", "STATE"):
        table.add_column(col)
    deletions = dict(cluster.deletions)
    for d in sorted(cluster.records.values(), key=lambda d: (d.node, d.created)):
        size = f"{d.size >> 20}M" if d.size else "-"
        table.add_row(
            d.id[:8],
            d.name,
            d.kind,
            d.profile,
            d.node,
            size,
            d.parent[:8],
            str(mounts.get(d.id, 0)),
            replica_text(replicas.get(d.id, [])),
            f"moving to {moves[d.id][0].target}" if d.id in moves else state_of(d, deletions),
        )
    Console(width=140).print(table)
    ordered = sorted(cluster.records.values(), key=lambda d: (d.node, d.created))
    lines = detail_lines(ordered, deletions) + report_lines(reports)
    if lines:  # plain lines, never wrapped: each is something to grep for
        click.echo("Reported by the nodes:")
        for text in dict.fromkeys(lines):
            click.echo(f"  {text}")


@volume.command()
@click.argument("ref")
@registry_option
def inspect(ref: str, registry: str) -> None:
    """One dataset or snapshot (by name, id or id prefix) as JSON."""

    async def go(r: Records) -> dict:
        cluster = await r.cluster()
        datasets = list(cluster.records.values())
        d = find(datasets, ref)
        move, _ = await r.move(d.id)
        return {
            **d.to_dict(),
            "mounts": (await r.all_mounts()).get(d.id, 0),
            "children": [x.id for x in datasets if x.parent == d.id],
            "state": state_of(d, dict(cluster.deletions)),
            "replicas": (await _replica_rows(r)).get(d.id, []),
            "move": move.to_dict() if move is not None else None,
            "receiving": [
                {k: p.get(k) for k in ("node", "copy", "bytes", "rate", "started")}
                for p in await r.receiving(d.id)
            ],
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
@click.option(
    "--wait", type=float, default=60.0, show_default=True, help="Seconds to wait for the node to delete it."
)
@registry_option
def rm(ref: str, wait: float, registry: str) -> None:
    """Delete dataset or snapshot REF: refused while a container uses it or with snapshots/clones made
    from it. The request is durable: a node that is down deletes it when it comes back."""

    async def go(r: Records) -> str:
        datasets, _ = await r.all()
        d = find(datasets, ref)
        check_remove(d, datasets, (await r.all_mounts()).get(d.id, 0))
        await r.request_deletion(Deletion(d.id, d.node, d.name, "shoal volume rm", time.time()))
        deadline = time.monotonic() + wait
        index = 0
        while (left := deadline - time.monotonic()) > 0:
            req, index = await r.deletion(d.id, index, min(left, 30.0))
            if req is None:
                return d.id
            if req.refused:
                await r.withdraw_deletion(d.id)
                raise Conflict(req.refused)
        click.echo(
            f"shoal: deletion of {d.name or d.id} requested; {d.node} has not done it within {wait:g}s "
            "(is its agent up? `shoal nodes`): it will when it next converges",
            err=True,
        )
        return d.id

    click.echo(_with_records(go, registry))


async def _replica_rows(r: Records) -> dict[str, list[dict[str, Any]]]:
    """dataset id -> each replica's node, lag (seconds of writes it does not hold) and newest copy."""
    return await r.replica_rows(time.time())


def replica_text(rows: list[dict[str, Any]]) -> str:
    """`node1 (lag 1.2s)` per replica (pure)."""
    parts = []
    for x in rows:
        lag = "no copy yet" if x["lag"] is None else f"lag {x['lag']:g}s"
        parts.append(f"{x['node']} ({lag})")
    return ", ".join(parts) or "-"


PROGRESS_READ = 2.0  # seconds one progress read may take: the bar skips a beat, the move goes on


async def _progress_json(reg: RegistryClient, key: str) -> dict[str, Any]:
    """A registry key's JSON for the progress bar, best effort: {} when it is absent, not a JSON object, or
    the registry does not answer in time (the move itself is the manager's; only the bar waits on this).
    Through the one client, so a comma list of registries, CONSUL_HTTP_TOKEN and CONSUL_CACERT hold here as
    in every other command."""
    try:
        async with asyncio.timeout(PROGRESS_READ):
            got = await reg.get_json(key)
    except (ShoalError, TimeoutError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


@volume.command()
@click.argument("ref")
@click.argument("node")
@click.option(
    "--host",
    "-H",
    default=lambda: os.environ.get("DOCKER_HOST", "tcp://127.0.0.1:2375"),
    help="The shoal manager (default: $DOCKER_HOST).",
)
@registry_option
def move(ref: str, node: str, host: str, registry: str) -> None:
    """Move dataset REF (and the containers that use it) to NODE: a full copy while they run, then they
    stop, the last increment is sent, the copy on NODE becomes the writable one (fenced) and they start
    there. Shows the transfer's progress; prints what was moved and the downtime."""

    async def go(reg: RegistryClient) -> dict:
        d = find((await Records(reg).all())[0], ref)
        path = f"/shoal/v1/volumes/{d.id}/move"
        # the manager does the move (up to an hour); the registry says how far it got while it runs
        call = asyncio.ensure_future(
            asyncio.to_thread(manager_call, "POST", host, path, 3700, json={"node": node})
        )
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(f"{d.name} {d.node} → {node}", total=None)
            done_before = 0
            while not call.done():
                mv = await _progress_json(reg, keys.move(d.id))
                live = await _progress_json(reg, keys.receiving(d.id, node))
                done_before = max(done_before, int(mv.get("bytes", 0)))
                phase = mv.get("phase", "starting")
                bar.update(
                    task,
                    completed=done_before + int(live.get("bytes", 0) or 0),
                    description=f"{d.name} {d.node} → {node} [{phase}]",
                )
                await asyncio.wait({call}, timeout=0.2)
        return call.result()

    got = asyncio.run(with_registry(registry, go))
    line = (
        f"moved {got['name']} from {got['from']} to {got['to']}: {got.get('bytes', 0) / (1 << 20):.1f} MiB "
        f"in {got.get('pulls', 0)} pulls, {got.get('total', 0):.2f}s"
    )
    if got.get("containers"):
        line += f"; containers {', '.join(got['containers'])} down {got.get('downtime', 0):.2f}s"
    click.echo(line)
    if got.get("not_started"):
        click.echo(
            f"warning: {', '.join(got['not_started'])} did not start on {got['to']} (its volume plugin, the"
            " node's agent, may be away); the manager starts it again as soon as it can",
            err=True,
        )
