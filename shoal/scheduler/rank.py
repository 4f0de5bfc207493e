"""rank(): the nodes that passed every filter, ordered by a Strategy, best first, with each one's
named components (Nomad's ScoreMetaData): sum of weight x score, higher wins; equal totals go to the
tie rankers in order, then to the node's position (deterministic).

`rank` computes the order from scratch (numpy over the survivors). `KeptRank` is place()'s optimisation
beside the kept filter run (memo.py): the survivors in order, kept per request and strategy and patched
for the nodes upserted since, which is sound when every ranker scores a node from its own row of the
index and the request (`Ranker.per_node`; random does not, and always ranks from scratch). A decision
then scores the one or two changed nodes instead of every survivor. tests/unit/scheduler/test_memo.py
holds kept rankings to whole ones.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import Component, ContainerSpec, Score
from shoal.scheduler.strategy import Strategy

PATCH_UP_TO = 1 / 8  # past this share of the nodes changed, ranking from scratch is cheaper


def rank(
    ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray, strategy: Strategy, top: int
) -> tuple[Score, ...]:
    idx = mask.nonzero()[0]
    if not len(idx):
        return ()
    parts = [(w.ranker.name, w.weight, w.ranker.score(ix, spec, idx)) for w in strategy.rankers]
    total = _total(parts)
    if len(idx) > top:  # only the nodes that can be in the top few are sorted (and asked about ties)
        kth = np.partition(total, len(total) - top)[len(total) - top]
        sel = (total >= kth).nonzero()[0]
    else:
        sel = np.arange(len(idx))
    cand = idx[sel]
    ties = [(r.name, r.score(ix, spec, cand)) for r in strategy.ties]
    order = np.lexsort((cand, *(-t for _, t in reversed(ties)), -total[sel]))[:top]
    best = sel[order]
    values = list(zip(*[v[best].tolist() for _, _, v in parts], strict=True))
    tie_values = list(zip(*[t[order].tolist() for _, t in ties], strict=True)) or [()] * len(best)
    nodes = ix.nodes
    return tuple(
        [
            _score(nodes[j].name, t, strategy, values[k], tie_values[k])
            for k, (j, t) in enumerate(zip(idx[best].tolist(), total[best].tolist(), strict=True))
        ]
    )


def _score(
    node: str, total: float, strategy: Strategy, values: Sequence[float], ties: Sequence[float]
) -> Score:
    """A node's Score from its rankers' values and its tie rankers' values, in the strategy's order."""
    return Score(
        node,
        total,
        tuple([Component(w.ranker.name, v, w.weight) for w, v in zip(strategy.rankers, values, strict=True)]),
        tuple([Component(r.name, v, 0.0) for r, v in zip(strategy.ties, ties, strict=True)]),
    )


def _total(parts: list[tuple[str, float, np.ndarray]]) -> np.ndarray:
    if len(parts) == 1 and parts[0][1] == 1.0:  # the built-in strategies: the one score is the total
        return parts[0][2]
    total = np.zeros(len(parts[0][2]))
    for _, weight, value in parts:
        total += weight * value
    return total


def keeps(strategy: Strategy) -> bool:
    """Can a ranking by this strategy be kept between decisions (every ranker scores per node)?"""
    return all(getattr(w.ranker, "per_node", False) for w in strategy.rankers) and all(
        getattr(r, "per_node", False) for r in strategy.ties
    )


@dataclass(slots=True)
class KeptRank:
    """Every survivor's sort key, ascending: (-total, -tie..., position), so the best few are the first
    few; each one's component values; and the Scores of the nodes last shown (made when first shown)."""

    seen: int  # entries of ix.changes covered
    epoch: int  # ix.change_epoch they belong to
    keys: list[tuple[float, ...]] = field(default_factory=list)
    key_of: dict[int, tuple[float, ...]] = field(default_factory=dict)
    values_of: dict[int, tuple[float, ...]] = field(default_factory=dict)  # per ranker, in strategy order
    score_of: dict[int, Score] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def seed(
        cls, ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray, strategy: Strategy
    ) -> KeptRank | None:
        """None when some score is not a number (NaN has no place in a sorted list; rank() orders it)."""
        kept = cls(len(ix.changes), ix.change_epoch)
        if not kept._score(ix, spec, strategy, mask.nonzero()[0].tolist()):
            return None
        kept.keys.sort()
        return kept

    def patch(self, ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray, strategy: Strategy) -> bool:
        """Re-scores the nodes upserted since; False when it cannot be (a new epoch of the change log,
        too many changes, a NaN score): the caller seeds a new one."""
        if self.epoch != ix.change_epoch:
            return False
        changed = set(ix.changes[self.seen :])
        if len(changed) > max(8, len(ix) * PATCH_UP_TO):
            return False
        for j in changed:
            old = self.key_of.pop(j, None)
            if old is not None:
                del self.keys[bisect_left(self.keys, old)]
                del self.values_of[j]
                self.score_of.pop(j, None)
        self.seen = len(ix.changes)
        return self._score(ix, spec, strategy, sorted(j for j in changed if mask[j]), insert=True)

    def top(self, ix: ClusterIndex, strategy: Strategy, n: int) -> tuple[Score, ...]:
        out = []
        for key in self.keys[:n]:
            j = int(key[-1])
            score = self.score_of.get(j)
            if score is None:
                ties = [-t for t in key[1:-1]]
                score = self.score_of[j] = _score(
                    ix.nodes[j].name, -key[0], strategy, self.values_of[j], ties
                )
            out.append(score)
        return tuple(out)

    def _score(
        self,
        ix: ClusterIndex,
        spec: ContainerSpec,
        strategy: Strategy,
        positions: list[int],
        *,
        insert: bool = False,
    ) -> bool:
        """Scores `positions` and files them; False (the ranking is not to be used) when a score is NaN."""
        if not positions:
            return True
        idx = np.array(positions, dtype=np.intp)
        parts = [(w.ranker.name, w.weight, w.ranker.score(ix, spec, idx)) for w in strategy.rankers]
        totals = _total(parts).tolist()
        values = list(zip(*[v.tolist() for _, _, v in parts], strict=True))
        ties = [r.score(ix, spec, idx).tolist() for r in strategy.ties]
        if any(t != t for t in totals) or any(x != x for v in ties for x in v):  # NaN
            return False
        for k, j in enumerate(positions):
            key = (-totals[k], *[-v[k] for v in ties], j)
            self.key_of[j] = key
            self.values_of[j] = values[k]
            if insert:
                insort(self.keys, key)
            else:
                self.keys.append(key)
        return True


RANKED_UP_TO = 50_000  # survivors kept across an index's rankings (about 250 bytes each); oldest go first
_RANKED = "rank.kept"  # where in ClusterIndex.memo the rankings are listed, oldest first


def kept_rank(
    kept: dict[Strategy, KeptRank | None],
    ix: ClusterIndex,
    spec: ContainerSpec,
    mask: np.ndarray,
    strategy: Strategy,
    top: int,
) -> tuple[Score, ...]:
    """rank()'s result from the ranking kept in `kept` (the kept filter run's, so `mask` is the mask it
    was patched along with), brought up to date; ranked from scratch where it cannot be kept. A ranking
    is kept from a request's second decision on: a one-off request (a new expression) is not made to pay
    for sorting every survivor. At most RANKED_UP_TO survivors are kept per index (on 10,000 nodes: the
    five requests seen last)."""
    if not keeps(strategy):
        return rank(ix, spec, mask, strategy, top)
    if strategy not in kept:
        kept[strategy] = None
        return rank(ix, spec, mask, strategy, top)
    kr = kept[strategy]
    if kr is None or not kr.patch(ix, spec, mask, strategy):
        kr = kept[strategy] = KeptRank.seed(ix, spec, mask, strategy)
        if kr is None:
            return rank(ix, spec, mask, strategy, top)
        _budget(ix, kept, strategy, kr)
    return kr.top(ix, strategy, top)


def _budget(
    ix: ClusterIndex, kept: dict[Strategy, KeptRank | None], strategy: Strategy, kr: KeptRank
) -> None:
    """Files a newly seeded ranking and drops the oldest past RANKED_UP_TO survivors. Rankings no longer in
    use go from the list first (replaced by a newer seed, or their filter run replaced in `ix.memo`):
    listed, they stayed alive and counted, and a busy cluster whose filter runs are seeded again after
    most decisions kept RANKED_UP_TO survivors of dead rankings (~14 MB) for nothing."""
    listed = ix.memo.get(_RANKED)
    if not isinstance(listed, deque):
        listed = ix.memo[_RANKED] = deque()
    else:
        owners = {id(r) for v in ix.memo.values() if isinstance(r := getattr(v, "ranks", None), dict)}
        live = [e for e in listed if id(e[0]) in owners and e[0].get(e[1]) is e[2]]
        if len(live) < len(listed):
            listed.clear()
            listed.extend(live)
    listed.append((kept, strategy, kr))
    total = sum(len(r) for _, _, r in listed)
    while total > RANKED_UP_TO and len(listed) > 1:
        owner, s, old = listed.popleft()
        total -= len(old)
        if owner.get(s) is old:
            owner[s] = None  # seen before: the next decision seeds it again
