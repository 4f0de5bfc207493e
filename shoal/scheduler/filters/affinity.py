"""Affinities: `container==NAME` (be where that container is), `image==NAME` (where the image is),
any other key a container label (be where a container with that label is); `!=` keeps away.

The index holds every node's container names and ids, images and label values by value, so a literal
name is one lookup and a `/regex/` one RE2 call per block of 32 nodes (plus one per node that matches),
whatever the number of containers."""

from __future__ import annotations

from shoal.scheduler.expr import EQ, Expr
from shoal.scheduler.filters import Clause, Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState, Reason
from shoal.scheduler.values import affinity_strings


def holds(node: NodeState, e: Expr) -> bool:
    return e.holds(affinity_strings(node, e.key))


class AffinityFilter:
    name = "affinity"

    def check(self, node: NodeState, spec: ContainerSpec, ctx: Context) -> Reason | None:
        for e in spec.affinities:
            if ctx.counts(e.soft) and not holds(node, e):
                what = {"container": "container", "image": "image"}.get(e.key, f"container labelled {e.key}")
                detail = f"{'has no' if e.op == EQ else 'has a'} {what} {e.value} (affinity {e})"
                return Reason(self.name, e.text, detail)
        return None

    def clauses(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> list[Clause]:
        return [(e.text, ix.expr_mask(e)) for e in spec.affinities if ctx.counts(e.soft)]
