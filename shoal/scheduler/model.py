"""The scheduler's plain data: what a node looks like now, what a container asks for, what was decided."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.scheduler.expr import Expr

PASSING = "passing"


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container as the filters see it: enough for affinity, dependency and port checks."""

    id: str
    name: str
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[int, str], ...] = ()  # published host ports (port, proto)
    running: bool = True


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    id: str = ""
    address: str = ""
    engine: str = ""
    health: str = PASSING  # the agent's check: passing | warning | critical | unknown
    gathered_at: float = 0.0  # when its facts were gathered (epoch seconds)
    facts: Mapping[str, Any] = field(default_factory=dict)
    # engine labels, agent labels, and the engine's own storagedriver/kernelversion/operatingsystem/ostype
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float = 0.0
    memory: int = 0  # bytes
    reserved_cpus: float = 0.0
    reserved_memory: int = 0
    containers: tuple[ContainerRef, ...] = ()
    images: frozenset[str] = frozenset()  # repo:tag names and ids present
    volume_drivers: frozenset[str] = frozenset({"local"})
    volumes: frozenset[str] = frozenset()  # local named volumes on the engine
    networks: frozenset[str] = frozenset()  # user-defined networks on the engine, by name


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What one container create asks of the scheduler (parsed once, at the API edge)."""

    name: str = ""
    image: str = ""
    constraints: tuple[Expr, ...] = ()
    affinities: tuple[Expr, ...] = ()
    ports: tuple[tuple[int, str], ...] = ()  # host ports it publishes
    memory: int = 0
    cpus: float = 0.0
    depends_on: tuple[str, ...] = ()  # containers it must share a node with (links, volumes-from, net)
    volume_driver: str = ""
    volumes: tuple[str, ...] = ()  # named local volumes it mounts
    networks: tuple[str, ...] = ()  # user-defined networks it joins, by name

    @property
    def expressions(self) -> tuple[Expr, ...]:
        return self.constraints + self.affinities


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one node was left out: which filter, and the detail a person can act on."""

    filter: str
    node: str
    detail: str

    def __str__(self) -> str:
        return f"{self.node} {self.detail}"


@dataclass(frozen=True, slots=True)
class Placement:
    """A decision, as data: the log line, the API error and `shoal why` are all rendered from it."""

    node: str | None
    candidates: int
    steps: tuple[tuple[str, int], ...]  # (filter, nodes left after it)
    rejected: tuple[Reason, ...]  # the first reason of each rejected node (capped on big clusters)
    rejected_total: int
    scores: tuple[tuple[str, float], ...]  # the best few, best first
    strategy: str
    expressions: tuple[str, ...] = ()
    soft_dropped: tuple[str, ...] = ()

    def error(self) -> str:
        """Classic Swarm's first line (tools look for it), then shoal's per-node reasons."""
        lines = ["Unable to find a node that satisfies the following conditions"]
        lines += [f"[{e}]" for e in self.expressions]
        shown = "; ".join(str(r) for r in self.rejected)
        more = self.rejected_total - len(self.rejected)
        lines.append(
            f"no node fits: {shown or 'the cluster has no nodes'}"
            + (f"; and {more} more" if more > 0 else "")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "candidates": self.candidates,
            "steps": [{"filter": f, "left": n} for f, n in self.steps],
            "rejected": [{"node": r.node, "filter": r.filter, "reason": r.detail} for r in self.rejected],
            "rejected_total": self.rejected_total,
            "scores": [{"node": n, "score": s} for n, s in self.scores],
            "strategy": self.strategy,
            "expressions": list(self.expressions),
            "soft_dropped": list(self.soft_dropped),
        }
