"""`shoal why CONTAINER`: the placement decision behind a container, as the manager recorded it."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from shoal.cli.docker_api import call, default_host


def decision_lines(d: dict[str, Any]) -> list[str]:
    """A recorded decision as lines a person reads top to bottom (pure: the dashboard shows the same)."""
    req, p = d.get("request", {}), d.get("placement", {})
    who = d.get("name") or req.get("name") or (d.get("container") or "")[:12] or "(not created)"
    lines = [
        f"{who} → {p.get('node')}" if p.get("node") else f"{who}: no node fits",
        f"  image {req.get('image')}, strategy {p.get('strategy')}",
    ]
    if req.get("expressions"):
        lines.append("  asks " + ", ".join(req["expressions"]))
    extras = []
    if req.get("cpus"):
        extras.append(f"cpus {req['cpus']:g}")
    if req.get("memory"):
        extras.append(f"memory {req['memory'] >> 20}M")
    for key in ("ports", "volumes", "networks"):
        if req.get(key):
            extras.append(f"{key} {', '.join(req[key])}")
    if extras:
        lines.append("  reserves/needs " + "; ".join(extras))
    steps = " → ".join(f"{s['filter']} {s['left']}" for s in p.get("steps", []))
    lines.append(f"  filters: {p.get('candidates', 0)} nodes → {steps}")
    if p.get("by_reason"):
        lines.append("  removed: " + ", ".join(f"{k} {n}" for k, n in p["by_reason"].items()))
    for r in p.get("rejected", []):
        lines.append(f"  ✗ {r['node']}  [{r['filter']}] {r['reason']}")
    if (more := p.get("rejected_total", 0) - len(p.get("rejected", []))) > 0:
        lines.append(f"  ✗ ... and {more} more nodes")
    if p.get("soft_dropped"):
        lines.append("  soft expressions dropped to find a node: " + ", ".join(p["soft_dropped"]))
    if p.get("scores"):
        lines.append(f"  ranks ({p.get('strategy')}, higher wins):")
        lines += ["    " + row for row in score_rows(p["scores"])]
    return lines


def score_rows(scores: list[dict[str, Any]]) -> list[str]:
    """One row per ranked node: `node2  load 0.12 ×1 + spread 0.33 ×1 → 0.45  (ties: containers 0.50)`."""
    width = max(len(str(s["node"])) for s in scores)
    rows = []
    for s in scores:
        parts = " + ".join(f"{c['name']} {c['value']:.2f} ×{c['weight']:g}" for c in s.get("components", []))
        row = f"{s['node']:<{width}}  " + (f"{parts} → {s['score']:.2f}" if parts else f"{s['score']:.3g}")
        if s.get("ties"):
            row += "  (ties: " + ", ".join(f"{t['name']} {t['value']:.2f}" for t in s["ties"]) + ")"
        rows.append(row)
    return rows


@click.command()
@click.argument("container")
@click.option("--host", "-H", default=default_host, help="The shoal manager (default: $DOCKER_HOST).")
def why(container: str, host: str) -> None:
    """Why CONTAINER is on its node: each filter's survivors, the reasons for the rest, the ranks."""
    decision = call("GET", f"/shoal/v1/decisions/{container}", host)
    Console(highlight=False, soft_wrap=True).print("\n".join(decision_lines(decision)), markup=False)
