"""`shoal why CONTAINER|DATASET`: the placement decision behind a container, or a dataset's latest move,
promotion (else replica assignment) with its reasons, as the manager recorded them."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Console

from shoal.cli.docker_api import call, default_host

KIND_WORDS = {
    "move": "move",
    "promote": "promotion",
    "replica": "replica assignment",
    "reschedule": "reschedule",
    "drain": "drain",
}


def decision_lines(d: dict[str, Any]) -> list[str]:
    """A recorded decision as lines a person reads top to bottom (pure: the dashboard shows the same). A
    placement that comes with its dataset's latest decision (a container and a dataset of one name) is
    followed by that one."""
    if d.get("kind") in KIND_WORDS:
        return event_lines(d)
    lines = placement_lines(d)
    if isinstance(d.get("dataset_decision"), dict):
        lines += ["", *event_lines(d["dataset_decision"])]
    return lines


def event_lines(d: dict[str, Any]) -> list[str]:
    """A move, promotion, replica assignment, reschedule or drain: which decision it is and when, what it
    did (from which node to which), and its reasons (pure)."""
    kind, name = str(d.get("kind", "")), str(d.get("name") or "?")
    word = KIND_WORDS.get(kind, kind)
    source, target = _ends(d)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(d.get("time") or 0.0)))
    if d.get("dataset"):
        head = f"dataset {name} ({str(d['dataset'])[:8]}): its latest {word}, {when}"
    else:
        head = f"{name}: {word}, {when}"
    lines = [head, "  " + _what(kind, name, source, target)]
    reasons = [str(r) for r in d.get("reasons") or []]
    if reasons:
        lines.append("  because:")
        lines += [f"    {r}" for r in reasons]
    return lines


def _ends(d: dict[str, Any]) -> tuple[str, str | None]:
    """The source and target nodes (records logged before they carried them: from the placement shape)."""
    p = d.get("placement") or {}
    source = d.get("source") or next((r.get("node") for r in p.get("rejected") or []), "") or ""
    target = d["target"] if "target" in d else p.get("node")
    return ("" if source == "-" else str(source)), target


def _what(kind: str, name: str, source: str, target: str | None) -> str:
    if kind == "move":
        return f"moved {source} → {target}" if target else f"undone: it stays on {source}"
    if kind == "promote":
        return f"promoted: {source} → {target} (the replica on {target} holds the writable copy now)"
    if kind == "replica":
        return (
            f"a read-only replica on {target} (the writable copy is on {source})"
            if target
            else f"no node fits a replica (the writable copy is on {source})"
        )
    if kind == "reschedule":
        if name == source:
            return f"{source} is back: its stale copies removed"
        return f"created again: {source} → {target}" if target else f"not rescheduled from {source}"
    if kind == "drain":
        return f"node {name} undrained" if target else f"node {name} drained"
    return f"{source} → {target}"


def placement_lines(d: dict[str, Any]) -> list[str]:
    """A placement: the node chosen, what was asked, each filter's survivors, the rejected, the ranks."""
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
@click.argument("ref", metavar="CONTAINER|DATASET")
@click.option("--host", "-H", default=default_host, help="The shoal manager (default: $DOCKER_HOST).")
def why(ref: str, host: str) -> None:
    """Why CONTAINER is on its node: each filter's survivors, the reasons for the rest, the ranks. For a
    DATASET (name or id): its latest move or promotion (else replica assignment), from which node to which,
    and why. A name that is both shows the container's placement, then the dataset's latest decision."""
    decision = call("GET", f"/shoal/v1/decisions/{ref}", host)
    Console(highlight=False, soft_wrap=True).print("\n".join(decision_lines(decision)), markup=False)
