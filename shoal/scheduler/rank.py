"""rank(): the nodes that passed every filter, ordered by a Strategy, best first, with each one's
named components (Nomad's ScoreMetaData): sum of weight x score, higher wins; equal totals go to the
tie rankers in order, then to the node's position (deterministic)."""

from __future__ import annotations

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import Component, ContainerSpec, Score
from shoal.scheduler.strategy import Strategy


def rank(
    ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray, strategy: Strategy, top: int
) -> tuple[Score, ...]:
    idx = np.flatnonzero(mask)
    if not len(idx):
        return ()
    parts = [(w.ranker.name, w.weight, w.ranker.score(ix, spec, idx)) for w in strategy.rankers]
    if len(parts) == 1 and parts[0][1] == 1.0:  # the built-in strategies: the one score is the total
        total = parts[0][2]
    else:
        total = np.zeros(len(idx))
        for _, weight, value in parts:
            total += weight * value
    if len(idx) > top:  # only the nodes that can be in the top few are sorted (and asked about ties)
        kth = np.partition(total, len(total) - top)[len(total) - top]
        sel = np.flatnonzero(total >= kth)
    else:
        sel = np.arange(len(idx))
    cand = idx[sel]
    ties = [(r.name, r.score(ix, spec, cand)) for r in strategy.ties]
    order = np.lexsort((cand, *(-t for _, t in reversed(ties)), -total[sel]))[:top]
    best = sel[order]
    values = [(name, weight, v[best].tolist()) for name, weight, v in parts]
    tie_values = [(name, t[order].tolist()) for name, t in ties]
    nodes = ix.nodes
    return tuple(
        Score(
            nodes[j].name,
            t,
            tuple(Component(name, v[k], weight) for name, weight, v in values),
            tuple(Component(name, v[k], 0.0) for name, v in tie_values),
        )
        for k, (j, t) in enumerate(zip(idx[best].tolist(), total[best].tolist(), strict=True))
    )
