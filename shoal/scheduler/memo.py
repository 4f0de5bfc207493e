"""The filters' pass over the index, kept per request and patched node by node (place()'s optimisation).

At 1,000 nodes the filters are most of a decision's cost, while between two decisions the cluster has
usually changed on a node or two: the one the last placement consumed, the ones whose facts came in. So a
run is kept per request (on the index, under the request's filter-relevant shape), with each node's first
failing filter and Reason.key; the next decision with the same request asks the per-node `check` again for
the nodes upserted since, and only those (a full run when that is most of the cluster).

This is sound because every filter decides a node from that node alone, the request and the clock (the
cluster-wide lookups only word a reason), with one exception: a named volume that exists nowhere lets every
node pass and one that exists somewhere pins its container there, so a request naming volumes always runs
whole. The clock's one effect is staleness, which no upsert announces: a kept run is used only until the
first node's facts would go stale (then a full run). A reason key no earlier run produced has no known
place in the order the counts are listed in: a full run. tests/unit/scheduler/test_memo.py holds the
patched runs to full runs over generated clusters, requests, changes and clocks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

import numpy as np

from shoal.scheduler.filters import Context, Filter
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec

MAX_KEPT = 256  # request shapes kept per index
PATCH_UP_TO = 1 / 8  # past this share of the nodes changed, a full run is cheaper than checking each
# what a filter reads of a request: every field but the container's name and image (one C call per decision)
_SHAPE = attrgetter(*(f.name for f in fields(ContainerSpec) if f.name not in ("name", "image")))


@dataclass(slots=True)
class Run:
    """One pass of the filters: the survivors, the counts, and which filter removed each node."""

    mask: np.ndarray
    steps: tuple[tuple[str, int], ...]  # (filter, nodes left after it), every filter
    filtered: tuple[tuple[str, int], ...]  # (filter, nodes it removed), in filter order, where any
    by_reason: tuple[tuple[str, int], ...]  # (Reason.key, nodes counted under it), most first, then in the
    # order the filters try them (Counter.most_common)
    fail: np.ndarray  # per node: the index of the filter that removed it (-1: it passed)
    # the rankings kept beside this run, by strategy (rank.kept_rank; None: a whole run, nothing kept)
    ranks: dict[Any, Any] | None = None

    def removed_by(self, j: int) -> int:
        return int(self.fail[j])


@dataclass(slots=True)
class _Kept:
    seen: int  # entries of ix.changes covered
    epoch: int  # ix.change_epoch they belong to
    now: float
    valid_until: float  # the first moment a node counted fresh would be stale
    fail: np.ndarray  # int32 per node: filter index, -1 passes
    key: np.ndarray  # int32 per node: index into keys, -1 passes
    keys: list[str]  # every clause key, in the order the filters try them
    order: dict[str, int]
    per_filter: np.ndarray
    per_key: np.ndarray
    # the counts as a Run shows them, kept until a patch changes a count (most patches change none: the
    # consumed node passed before and passes after)
    counts: tuple[tuple[tuple[str, int], ...], ...] | None = None
    counts_n: int = 0  # the number of nodes they were counted over
    # rank.KeptRank by strategy (None: seen once, not kept yet), patched along with this run
    ranks: dict[Any, Any] = field(default_factory=dict)


def full_run(spec: ContainerSpec, ix: ClusterIndex, filters: Sequence[Filter], ctx: Context) -> Run:
    """Each filter's clauses, in order, narrow the survivors; a node counts under the first clause it
    fails (the reason its `check` gives), which costs an AND and a count per clause."""
    return _as_run(_seed(spec, ix, filters, ctx), filters, len(ix), keep=False)


def run(spec: ContainerSpec, ix: ClusterIndex, filters: Sequence[Filter], ctx: Context) -> Run:
    """The same result as full_run, from the run kept for this request where one can be patched."""
    if spec.volumes:
        return full_run(spec, ix, filters, ctx)
    filters = tuple(filters)
    shape = (_SHAPE(spec), ctx.soft, ctx.fact_ttl, filters)
    kept = ix.memo.get(shape)
    if not isinstance(kept, _Kept) or not _patch(kept, spec, ix, filters, ctx):
        if len(ix.memo) >= MAX_KEPT:
            ix.memo.clear()
        kept = ix.memo[shape] = _seed(spec, ix, filters, ctx)
    return _as_run(kept, filters, len(ix))


def _seed(spec: ContainerSpec, ix: ClusterIndex, filters: Sequence[Filter], ctx: Context) -> _Kept:
    n = len(ix)
    survivors = np.ones(n, dtype=bool)
    fail = np.full(n, -1, dtype=np.int32)
    key = np.full(n, -1, dtype=np.int32)
    order: dict[str, int] = {}
    left = n
    for i, f in enumerate(filters):
        clauses = f.clauses(ix, spec, ctx)
        if not clauses or not left:
            continue
        for k, passes in clauses:
            ki = order.setdefault(k, len(order))
            after = survivors & passes
            if (still := int(np.count_nonzero(after))) < left:
                out = survivors & ~passes
                fail[out] = i
                key[out] = ki
                left, survivors = still, after
    g = ix.gathered_at[:n] + ctx.fact_ttl
    fresh = g >= ctx.now
    per_filter = np.bincount(fail[fail >= 0], minlength=len(filters))
    per_key = np.bincount(key[key >= 0], minlength=len(order))
    return _Kept(
        len(ix.changes), ix.change_epoch, ctx.now, float(g[fresh].min()) if fresh.any() else np.inf,
        fail, key, list(order), order, per_filter, per_key,
    )  # fmt: skip


def _patch(
    kept: _Kept, spec: ContainerSpec, ix: ClusterIndex, filters: Sequence[Filter], ctx: Context
) -> bool:
    """Brings a kept run up to date by asking `check` about the nodes upserted since; False when it cannot
    be (a new epoch of the change log, the clock moved back or past a node's staleness, too many changes,
    a reason key it has not seen): the caller runs whole."""
    now = ctx.now
    if kept.epoch != ix.change_epoch or now < kept.now or now > kept.valid_until:
        return False
    changed = set(ix.changes[kept.seen :])
    n = len(ix)
    if len(changed) > max(8, n * PATCH_UP_TO):
        return False
    if n > len(kept.fail):  # nodes that joined are among the changed: room for them (as passing, uncounted)
        grow = n - len(kept.fail)
        kept.fail = np.concatenate([kept.fail, np.full(grow, -1, dtype=np.int32)])
        kept.key = np.concatenate([kept.key, np.full(grow, -1, dtype=np.int32)])
    valid_until = kept.valid_until
    for j in changed:
        node = ix.nodes[j]
        fi = ki = -1
        for i, f in enumerate(filters):
            r = f.check(node, spec, ctx)
            if r is not None:
                got = kept.order.get(r.key)
                if got is None:
                    return False
                fi, ki = i, got
                break
        old_fi, old_ki = int(kept.fail[j]), int(kept.key[j])
        if (fi, ki) != (old_fi, old_ki):
            kept.counts = None
            if old_fi >= 0:
                kept.per_filter[old_fi] -= 1
                kept.per_key[old_ki] -= 1
            if fi >= 0:
                kept.per_filter[fi] += 1
                kept.per_key[ki] += 1
            kept.fail[j], kept.key[j] = fi, ki
        if (g := node.gathered_at + ctx.fact_ttl) >= now:
            valid_until = min(valid_until, g)
    kept.seen, kept.now, kept.valid_until = len(ix.changes), now, valid_until
    return True


def _as_run(kept: _Kept, filters: Sequence[Filter], n: int, keep: bool = True) -> Run:
    if kept.counts is None or kept.counts_n != n:
        steps, filtered, left = [], [], n
        for f, removed in zip(filters, kept.per_filter.tolist(), strict=True):
            left -= removed
            steps.append((f.name, left))
            if removed:
                filtered.append((f.name, removed))
        by_reason = Counter({k: c for k, c in zip(kept.keys, kept.per_key.tolist(), strict=True) if c})
        kept.counts, kept.counts_n = (tuple(steps), tuple(filtered), tuple(by_reason.most_common())), n
    steps, filtered, by_reason = kept.counts
    fail = kept.fail[:n]
    return Run(fail < 0, steps, filtered, by_reason, fail, kept.ranks if keep else None)
