"""place(): one container create in, one Placement out — filters, then the strategy's rankers, as data.

Each filter's vectorised clauses (filters/__init__.py) give, on any cluster size, which nodes it removed
and under which reason (Placement.filtered, .by_reason: Nomad's ConstraintFiltered); the per-node
`check` gives the words, for the first few removed nodes only (on clusters over 100 nodes, only when
nothing fits). Soft expressions count as hard first; only when that leaves no node are they dropped
and the filters run again (classic Swarm's SelectNodesForContainer). The survivors are ranked by the
strategy (rank.py), and the best few keep their named score components.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from shoal.scheduler.filters import FACT_TTL, Context, Filter, default_filters
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.memo import full_run
from shoal.scheduler.memo import run as filter_run
from shoal.scheduler.model import ContainerSpec, Placement, Reason, Rejection
from shoal.scheduler.rank import kept_rank, rank
from shoal.scheduler.strategy import Strategy, spread

MAX_REASONS = 20
TOP_SCORES = 5
# on clusters larger than this a successful placement keeps the counts, not per-node reasons
EXPLAIN_ALWAYS_UP_TO = 100
_DEFAULT_FILTERS = default_filters()


def _by_name(ix: ClusterIndex, idx: np.ndarray) -> list[int]:
    """The first MAX_REASONS of `idx` in node-name order: the same error for the same cluster, whatever
    order the nodes' facts arrived in."""
    if len(idx) <= MAX_REASONS:
        return sorted(idx.tolist(), key=lambda j: ix.nodes[j].name)
    names = np.array([ix.nodes[j].name for j in idx.tolist()])
    return idx[np.argsort(names, kind="stable")[:MAX_REASONS]].tolist()


def place(
    spec: ContainerSpec,
    ix: ClusterIndex,
    now: float,
    *,
    strategy: Strategy = spread,
    strategy_name: str | None = None,
    filters: Sequence[Filter] | None = None,
    fact_ttl: float = FACT_TTL,
    memo: bool = True,
) -> Placement:
    """`memo`: reuse the filters' run kept for this request, patched for the nodes changed since
    (shoal.scheduler.memo: the same result, a fraction of the cost); False runs them whole."""
    t0 = time.perf_counter()
    filters = _DEFAULT_FILTERS if filters is None else filters
    _filter = filter_run if memo else full_run
    exprs = tuple(e.text for e in spec.expressions)
    ctx = Context(now=now, fact_ttl=fact_ttl, soft=True, cluster=ix)
    run = _filter(spec, ix, filters, ctx)
    dropped: tuple[str, ...] = ()
    if not run.mask.any() and any(e.soft for e in spec.expressions):
        dropped = tuple(e.text for e in spec.expressions if e.soft)
        ctx = Context(now=now, fact_ttl=fact_ttl, soft=False, cluster=ix)
        run = _filter(spec, ix, filters, ctx)
    mask = run.mask
    rejected_total = len(mask) - int(np.count_nonzero(mask))
    explain = len(ix) <= EXPLAIN_ALWAYS_UP_TO or rejected_total == len(mask)
    reasons = (
        tuple(
            _rejection(ix, j, spec, ctx, filters[run.removed_by(j)])
            for j in _by_name(ix, np.flatnonzero(~mask))
        )
        if explain and rejected_total
        else ()
    )
    t1 = time.perf_counter()
    scores = (
        rank(ix, spec, mask, strategy, TOP_SCORES)
        if run.ranks is None
        else kept_rank(run.ranks, ix, spec, mask, strategy, TOP_SCORES)
    )
    return Placement(
        node=scores[0].node if scores else None,
        candidates=len(ix),
        steps=run.steps,
        rejected=reasons,
        rejected_total=rejected_total,
        scores=scores,
        strategy=strategy_name or strategy.name,
        expressions=exprs,
        soft_dropped=dropped,
        filtered=run.filtered,
        by_reason=run.by_reason,
        took=(t1 - t0, time.perf_counter() - t1),
    )


def _rejection(ix: ClusterIndex, j: int, spec: ContainerSpec, ctx: Context, f: Filter) -> Rejection:
    node = ix.nodes[j]
    reason = f.check(node, spec, ctx)
    if reason is None:  # mask and check disagree: a bug the property test exists to catch; say so, not crash
        reason = Reason(f.name, "", f"fails {f.name} (the scheduler's index disagrees with its check)")
    return Rejection(node.name, reason)
