"""Strategies rank the nodes that passed every filter; each is a score per node, lower is better.

spread: the least reserved node (max of its CPU and memory share, counting this container), then the
fewest containers; binpack: the most reserved node that still fits, then the most containers;
random: any. Ties break on the node's position, so tests are deterministic (classic Swarm's
weighNodes, with the same tie-break on container count).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

import numpy as np

from shoal.errors import BadRequest
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerSpec

Strategy = Callable[[ClusterIndex, ContainerSpec, np.ndarray], np.ndarray]


def _load(ix: ClusterIndex, spec: ContainerSpec) -> np.ndarray:
    n = len(ix)
    with np.errstate(divide="ignore", invalid="ignore"):
        cpu = np.where(ix.cpus[:n] > 0, (ix.reserved_cpus[:n] + spec.cpus) / ix.cpus[:n], 0.0)
        mem = np.where(ix.memory[:n] > 0, (ix.reserved_memory[:n] + spec.memory) / ix.memory[:n], 0.0)
    return np.maximum(cpu, mem)


def spread(ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray) -> np.ndarray:
    n = len(ix)
    return _load(ix, spec) * 1e6 + ix.containers[:n] + np.arange(n) * 1e-6


def binpack(ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray) -> np.ndarray:
    n = len(ix)
    return -(_load(ix, spec) * 1e6 + ix.containers[:n]) + np.arange(n) * 1e-6


def make_random(seed: int | None = None) -> Strategy:
    rng = _random.Random(seed)

    def random(ix: ClusterIndex, spec: ContainerSpec, mask: np.ndarray) -> np.ndarray:
        return np.array([rng.random() for _ in range(len(ix))])

    return random


STRATEGIES = ("spread", "binpack", "random")


def by_name(name: str, seed: int | None = None) -> Strategy:
    if name == "spread":
        return spread
    if name == "binpack":
        return binpack
    if name == "random":
        return make_random(seed)
    raise BadRequest(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
