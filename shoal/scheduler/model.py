"""The scheduler's plain data: what a node looks like now, what a container asks for, and the decision:
why each node was left out (Reason) and how the rest ranked (Score, one Component per ranker)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.scheduler.expr import Expr

PASSING = "passing"
NO_RESOURCES = "no resources available to schedule container"  # classic Swarm's ErrNoResourcesAvailable


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
    """Why a filter left a node out, as data: the filter, the expression that failed (its text with its
    prefix, e.g. `constraint:system_overload_10min<25`; "" for filters without expressions) and the
    detail a person can act on (`system_overload_10min=83 (needs <25)`). `cause` names what failed where
    there is no expression (`critical`, `80/tcp`, `memory`), so `key` groups nodes for the counts."""

    filter: str
    expression: str
    detail: str
    cause: str = ""

    @property
    def key(self) -> str:
        """What Placement.by_reason counts under (Nomad's ConstraintFiltered key): `health:critical`."""
        return self.expression or f"{self.filter}:{self.cause}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One node left out, and the first reason why; `str()` is how the error lists it."""

    node: str
    reason: Reason

    @property
    def filter(self) -> str:
        return self.reason.filter

    @property
    def detail(self) -> str:
        return self.reason.detail

    @property
    def expression(self) -> str:
        return self.reason.expression

    def __str__(self) -> str:
        return f"{self.node} {self.reason.detail}"


@dataclass(frozen=True, slots=True)
class Component:
    """One ranker's part of a node's score: its normalised value (0..1, higher is better) and weight."""

    name: str
    value: float
    weight: float


@dataclass(frozen=True, slots=True)
class Score:
    """A candidate's rank: total = sum of value x weight over `components`, higher wins; equal totals are
    decided by `ties` in order (weight 0: they never add to the total), then by node position."""

    node: str
    total: float
    components: tuple[Component, ...]
    ties: tuple[Component, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "score": self.total,
            "components": [{"name": c.name, "value": c.value, "weight": c.weight} for c in self.components],
            "ties": [{"name": c.name, "value": c.value} for c in self.ties],
        }


@dataclass(frozen=True, slots=True)
class Placement:
    """A decision, as data: the log line, the API error and `shoal why` are all rendered from it."""

    node: str | None
    candidates: int
    steps: tuple[tuple[str, int], ...]  # (filter, nodes left after it)
    rejected: tuple[Rejection, ...]  # the first reason of each rejected node (capped on big clusters)
    rejected_total: int
    scores: tuple[Score, ...]  # the best few, best first
    strategy: str
    expressions: tuple[str, ...] = ()
    soft_dropped: tuple[str, ...] = ()
    filtered: tuple[tuple[str, int], ...] = ()  # (filter, nodes it removed), every filter that removed any
    by_reason: tuple[tuple[str, int], ...] = ()  # (Reason.key, nodes it removed), most first
    # how long each half took, in seconds ((filters, strategy)): what the manager's /metrics splits a
    # placement's latency into; not part of the decision, so two equal decisions compare equal
    took: tuple[float, float] = field(default=(0.0, 0.0), compare=False)

    @property
    def emptied_by(self) -> str:
        """The filter that left no node ("" when some node is left, or there were none to begin with)."""
        return next((f for f, left in self.steps if left == 0), "") if self.candidates else ""

    def error(self) -> str:
        """Classic Swarm's first line (tools look for it), then shoal's per-node reasons. As in Swarm, where
        every node passed the filters and none has the CPUs or memory asked for, the first line is the
        strategy's `no resources available to schedule container`."""
        first = (
            NO_RESOURCES
            if self.emptied_by == "resources"
            else "Unable to find a node that satisfies the following conditions"
        )
        lines = [first]
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
            "rejected": [
                {"node": r.node, "filter": r.filter, "reason": r.detail, "expression": r.expression}
                for r in self.rejected
            ],
            "rejected_total": self.rejected_total,
            "scores": [s.to_dict() for s in self.scores],
            "strategy": self.strategy,
            "expressions": list(self.expressions),
            "soft_dropped": list(self.soft_dropped),
            "filtered": dict(self.filtered),
            "by_reason": dict(self.by_reason),
        }
