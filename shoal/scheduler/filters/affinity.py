"""Affinities: `container==NAME` (be where that container is), `image==NAME` (where the image is),
any other key a container label (be where a container with that label is); `!=` keeps away."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.expr import EQ, Expr
from shoal.scheduler.filters import Context
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, NodeState


def _strings(node: NodeState, key: str) -> list[str]:
    if key == "container":
        return [s for c in node.containers for s in (c.name, c.id)]
    if key == "image":
        return sorted(node.images)
    return [c.labels[key] for c in node.containers if key in c.labels]


def holds(node: NodeState, e: Expr) -> bool:
    hit = any(e.matches(s) for s in _strings(node, e.key))
    return hit if e.op == EQ else not hit


class AffinityFilter:
    name = "affinity"

    def mask(self, ix: ClusterIndex, spec: ContainerSpec, ctx: Context) -> np.ndarray | None:
        exprs = [e for e in spec.affinities if ctx.soft or not e.soft]
        if not exprs:
            return None
        m = ix.all()
        for e in exprs:
            if e.key == "container" and e.op == EQ and not e.is_regex and "*" not in e.value:
                j = ix.container_node.get(e.value)  # the common case, by name or id: no scan
                m &= ix.mask_of([j] if j is not None else [])
            else:
                m &= np.fromiter((holds(node, e) for node in ix.nodes), dtype=bool, count=len(ix))
        return m

    def explain(self, ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context) -> str:
        node = ix.nodes[j]
        for e in spec.affinities:
            if (ctx.soft or not e.soft) and not holds(node, e):
                what = {"container": "container", "image": "image"}.get(e.key, f"container labelled {e.key}")
                return f"{'has no' if e.op == EQ else 'has a'} {what} {e.value} (affinity {e})"
        return "fails an affinity"
