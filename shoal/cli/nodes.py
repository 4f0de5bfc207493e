"""`shoal nodes` and `shoal facts [NODE]`: what the registry knows about the cluster's nodes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from shoal import keys
from shoal.cli.common import registry_option
from shoal.errors import BadRequest, NotFound, RegistryUnreachable
from shoal.registry.client import RegistryClient, with_registry


async def _node_docs(reg: RegistryClient) -> dict[str, dict[str, Any]]:
    pairs, _ = await reg.list_prefix(keys.NODES)
    by_node: dict[str, dict[str, Any]] = {}
    for p in pairs:
        node, kind = keys.split_node_key(p.key)
        if kind in keys.NODE_DOCS and isinstance(doc := p.json(), dict):
            by_node.setdefault(node, {})[kind] = doc
    return by_node


async def _rows(reg: RegistryClient) -> list[dict[str, Any]]:
    by_node = await _node_docs(reg)
    checks = await asyncio.gather(*(reg.health_node(n) for n in sorted(by_node)))
    return node_rows(by_node, dict(zip(sorted(by_node), checks, strict=True)), time.time())


def node_rows(
    by_node: dict[str, dict[str, Any]], checks: dict[str, list[dict[str, Any]]], now: float
) -> list[dict[str, Any]]:
    """One row per node that ever ran an agent: health, age of facts, engine (pure)."""
    rows = []
    for node in sorted(by_node):
        check = next((c for c in checks.get(node, []) if c["CheckID"] == keys.AGENT_SERVICE), None)
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


def _ask(registry: str, call):
    try:
        return asyncio.run(with_registry(registry, call))
    except RegistryUnreachable as e:
        raise RegistryUnreachable(
            f'{e.message}; is the cluster up? (eval "$(shoal dev env)" sets CONSUL_HTTP_ADDR)'
        ) from None


@click.command()
@registry_option
def nodes(registry: str) -> None:
    """The cluster's nodes: health, age of their facts, engine."""
    rows = _ask(registry, _rows)
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
@registry_option
def facts(node: str | None, key: str | None, registry: str) -> None:
    """Every fact of NODE, or of all nodes side by side."""
    if key:
        if not node:
            raise BadRequest("--get needs a NODE: shoal facts node1 --get virtual")
        got = _ask(registry, lambda r: r.get_json(keys.node_facts(node)))
        if got is None:
            raise NotFound(f"no facts for node {node!r}; `shoal nodes` lists the nodes that have an agent")
        if key not in got["facts"]:
            raise NotFound(f"node {node} has no fact {key!r}; `shoal facts {node}` lists them")
        value = got["facts"][key]
        click.echo(str(value).lower() if isinstance(value, bool) else value)
        return
    by_node = _ask(registry, _node_docs)
    names = [node] if node else sorted(by_node)
    docs = {}
    for n in names:
        got = by_node.get(n, {}).get("facts")
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
