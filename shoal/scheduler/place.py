"""place(): one container create in, one Placement out — filters, then the strategy, as pure data.

Soft expressions count as hard first; only when that leaves no node are they dropped and the
filters run again (classic Swarm's SelectNodesForContainer). Reasons are computed only for nodes
that were left out, and only as many as a person can read; every filter's survivor count is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shoal.scheduler.filters import FACT_TTL, Context, Filter, default_filters
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec, Placement, Reason
from shoal.scheduler.strategy import Strategy, spread

MAX_REASONS = 20
TOP_SCORES = 5
# on clusters larger than this a successful placement keeps per-filter counts, not per-node reasons
EXPLAIN_ALWAYS_UP_TO = 100
_DEFAULT_FILTERS = default_filters()


def place(
    spec: ContainerSpec,
    ix: ClusterIndex,
    now: float,
    *,
    strategy: Strategy = spread,
    strategy_name: str = "spread",
    filters: Sequence[Filter] | None = None,
    fact_ttl: float = FACT_TTL,
) -> Placement:
    filters = _DEFAULT_FILTERS if filters is None else filters
    exprs = tuple(f"{e.kind}:{e}" for e in spec.expressions)
    ctx = Context(now=now, fact_ttl=fact_ttl, soft=True)
    mask, steps, fail_at = _filter(spec, ix, filters, ctx)
    dropped: tuple[str, ...] = ()
    if not mask.any() and any(e.soft for e in spec.expressions):
        dropped = tuple(f"{e.kind}:{e}" for e in spec.expressions if e.soft)
        ctx = Context(now=now, fact_ttl=fact_ttl, soft=False)
        mask, steps, fail_at = _filter(spec, ix, filters, ctx)
    rejected_idx = np.flatnonzero(~mask)
    explain = len(ix) <= EXPLAIN_ALWAYS_UP_TO or not mask.any()
    reasons = (
        ()
        if not explain
        else tuple(
            Reason(
                filters[fail_at[j]].name, ix.nodes[j].name, filters[fail_at[j]].explain(ix, int(j), spec, ctx)
            )
            for j in rejected_idx[:MAX_REASONS]
        )
    )
    if not mask.any():
        return Placement(
            None, len(ix), tuple(steps), reasons, len(rejected_idx), (), strategy_name, exprs, dropped
        )
    scores = np.where(mask, strategy(ix, spec, mask), np.inf)
    k = min(TOP_SCORES, int(mask.sum()))
    best = np.argpartition(scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.argsort(scores[best])]
    top = tuple((ix.nodes[int(j)].name, float(scores[j])) for j in best if np.isfinite(scores[j]))
    return Placement(
        top[0][0], len(ix), tuple(steps), reasons, len(rejected_idx), top, strategy_name, exprs, dropped
    )


def _filter(
    spec: ContainerSpec, ix: ClusterIndex, filters: Sequence[Filter], ctx: Context
) -> tuple[np.ndarray, list[tuple[str, int]], np.ndarray]:
    """The surviving nodes, the count after each filter, and for each node the filter that removed it."""
    n = len(ix)
    mask = np.ones(n, dtype=bool)
    fail_at = np.full(n, -1)
    steps = []
    for i, f in enumerate(filters):
        m = f.mask(ix, spec, ctx)
        if m is not None:
            newly = mask & ~m
            fail_at[newly] = i
            mask &= m
        steps.append((f.name, int(mask.sum())))
    return mask, steps, fail_at
