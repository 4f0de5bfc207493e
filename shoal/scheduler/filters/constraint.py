"""Constraints: every `constraint:` expression must hold on the node (its name, labels and facts)."""

from __future__ import annotations

from shoal.scheduler.expr import NUMERIC, Expr
from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason
from shoal.scheduler.values import candidates, number


def holds(node: NodeState, e: Expr) -> bool:
    if e.op in NUMERIC:
        v = number(node, e.key)
        return v is not None and e.compare(v)
    return e.holds(candidates(node, e.key))


def describe(node: NodeState, e: Expr) -> str:
    """What the node has for e.key, and what e needs: `system_overload_10min=83 (needs <25)`."""
    if e.op in NUMERIC:
        v = number(node, e.key)
        if v is None:
            raw = candidates(node, e.key)
            return (
                f"{e.key}={raw[0]} is not a number (needs {e.op}{e.value})"
                if raw
                else f"has no {e.key} (needs {e.op}{e.value})"
            )
        return f"{e.key}={v:g} (needs {e.op}{e.value})"
    have = candidates(node, e.key)
    if not have:
        return f"has no {e.key} (needs {e.op}{e.value})"
    return f"{e.key}={'|'.join(dict.fromkeys(have))} (needs {e.op}{e.value})"


class ConstraintFilter:
    name = "constraint"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        for e in spec.constraints:
            if ctx.counts(e.soft) and not holds(node, e):
                return Reason(self.name, e.text, describe(node, e))
        return None

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        return [(e.text, ix.expr_mask(e)) for e in spec.constraints if ctx.counts(e.soft)]
