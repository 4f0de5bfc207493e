"""Strategies, picked by name (classic Swarm's `--strategy`): each is a list of weighted rankers
(rankers/), summed into a total where higher wins, and tie rankers that decide between equal totals;
after those, the node's position decides, so every decision is deterministic for a given cluster.

spread: the least reserved node (max of its CPU and memory share, counting this container), then the
fewest containers; binpack: the most reserved node that still fits, then the most containers;
random: any (classic Swarm's weighNodes, with the same tie-break on container count).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.errors import BadRequest
from shoal.scheduler.rankers import Ranker
from shoal.scheduler.rankers.binpack import MostContainers, MostReserved
from shoal.scheduler.rankers.random import Random
from shoal.scheduler.rankers.spread import FewestContainers, LeastReserved


@dataclass(frozen=True, slots=True)
class Weighted:
    ranker: Ranker
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    rankers: tuple[Weighted, ...]  # total = sum of weight x score, higher wins
    ties: tuple[Ranker, ...] = ()  # only between equal totals, in order; then node position


spread = Strategy("spread", (Weighted(LeastReserved()),), (FewestContainers(),))
binpack = Strategy("binpack", (Weighted(MostReserved()),), (MostContainers(),))


def make_random(seed: int | None = None) -> Strategy:
    return Strategy("random", (Weighted(Random(seed)),))


STRATEGIES = ("spread", "binpack", "random")


def by_name(name: str, seed: int | None = None) -> Strategy:
    if name == "spread":
        return spread
    if name == "binpack":
        return binpack
    if name == "random":
        return make_random(seed)
    raise BadRequest(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
