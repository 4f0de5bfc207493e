"""Constraints: every `constraint:` expression must hold on the node (its name, labels and facts)."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.expr import NUMERIC, Expr
from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex, candidates, number
from shoal.scheduler.model import ContainerSpec, NodeState


def _active(exprs: tuple[Expr, ...], ctx: Context) -> list[Expr]:
    return [e for e in exprs if ctx.soft or not e.soft]


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

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        exprs = _active(spec.constraints, ctx)
        if not exprs:
            return None
        m = ix.expr_mask(exprs[0])
        for e in exprs[1:]:
            m = m & ix.expr_mask(e)
        return m

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        node = ix.nodes[j]
        for e in _active(spec.constraints, ctx):
            if not ix.expr_mask(e)[j]:
                return describe(node, e)
        return "fails a constraint"
