"""`shoal nodes` and `shoal facts [NODE]`: what the registry knows about the cluster's nodes."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import click
import requests
from rich.console import Console
from rich.table import Table

from shoal.agent.publish import PREFIX, SERVICE
from shoal.cli.agent import manager_url
from shoal.errors import BadRequest, NotFound, ShoalError

_registry = click.option(
    "--registry",
    default="127.0.0.1:8500",
    show_default=True,
    envvar="CONSUL_HTTP_ADDR",
    help="The registry (Consul API): HOST:PORT or URL.",
)


def _get(base: str, path: str) -> Any:
    try:
        r = requests.get(f"{base}{path}", timeout=10)
    except requests.RequestException as e:
        raise ShoalError(
            f"registry at {base} unreachable ({e.__class__.__name__}); is the cluster up? "
            '(eval "$(shoal dev env)" sets CONSUL_HTTP_ADDR)'
        ) from e
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def node_rows(base: str) -> list[dict[str, Any]]:
    """One row per node that ever ran an agent: health, age of facts, engine (plain data)."""
    docs = _get(base, f"/v1/kv/{PREFIX}/?recurse") or []
    by_node: dict[str, dict[str, Any]] = {}
    for e in docs:
        _, _, rest = e["Key"].partition(f"{PREFIX}/")
        node, _, kind = rest.partition("/")
        if kind in ("facts", "info") and e.get("Value"):
            by_node.setdefault(node, {})[kind] = json.loads(base64.b64decode(e["Value"]))
    rows = []
    now = time.time()
    for node in sorted(by_node):
        checks = _get(base, f"/v1/health/node/{node}") or []
        check = next((c for c in checks if c["CheckID"] == SERVICE), None)
        facts, info = by_node[node].get("facts", {}), by_node[node].get("info", {})
        rows.append(
            {
                "node": node,
                "health": check["Status"] if check else "unknown",
                "output": check["Output"] if check else "",
                "facts_age": now - facts["gathered_at"] if "gathered_at" in facts else None,
                "facts": len(facts.get("facts", {})),
                "engine": info.get("engine", ""),
                "cpus": info.get("cpus", ""),
                "memory_mb": info.get("memory_mb", 0),
                "failed": facts.get("facts", {}).get("shoal_failed_sources", ""),
            }
        )
    return rows


@click.command()
@_registry
def nodes(registry: str) -> None:
    """The cluster's nodes: health, age of their facts, engine."""
    rows = node_rows(manager_url(registry))
    table = Table()
    for col in ("NODE", "HEALTH", "FACTS AGE", "FACTS", "ENGINE", "CPUS", "MEMORY", "SKIPPED SOURCES"):
        table.add_column(col)
    colour = {"passing": "green", "warning": "yellow", "critical": "red"}
    for r in rows:
        age = f"{r['facts_age']:.1f}s" if r["facts_age"] is not None else "-"
        health = f"[{colour.get(r['health'], 'white')}]{r['health']}[/]"
        table.add_row(
            r["node"],
            health,
            age,
            str(r["facts"]),
            r["engine"],
            str(r["cpus"]),
            f"{r['memory_mb'] / 1024:.1f} GiB",
            r["failed"],
        )
    Console(width=160).print(table)


@click.command()
@click.argument("node", required=False)
@click.option("--get", "key", metavar="FACT", help="Print only this fact's value (for scripts).")
@_registry
def facts(node: str | None, key: str | None, registry: str) -> None:
    """Every fact of NODE, or of all nodes side by side."""
    base = manager_url(registry)
    if key:
        if not node:
            raise BadRequest("--get needs a NODE: shoal facts node1 --get virtual")
        got = _get(base, f"/v1/kv/{PREFIX}/{node}/facts?raw")
        if got is None:
            raise NotFound(f"no facts for node {node!r}; `shoal nodes` lists the nodes that have an agent")
        if key not in got["facts"]:
            raise NotFound(f"node {node} has no fact {key!r}; `shoal facts {node}` lists them")
        value = got["facts"][key]
        click.echo(str(value).lower() if isinstance(value, bool) else value)
        return
    names = [node] if node else [r["node"] for r in node_rows(base)]
    docs = {}
    for n in names:
        got = _get(base, f"/v1/kv/{PREFIX}/{n}/facts?raw")
        if got is None:
            raise NotFound(f"no facts for node {n!r}; `shoal nodes` lists the nodes that have an agent")
        docs[n] = got["facts"]
    table = Table()
    table.add_column("FACT")
    for n in names:
        table.add_column(n)
    for key in sorted({k for d in docs.values() for k in d}):
        table.add_row(key, *(str(docs[n].get(key, "")) for n in names))
    Console(width=200).print(table)
