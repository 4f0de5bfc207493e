"""What the benchmarks share: percentiles, and a dev cluster of their own that goes away afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from shoal.dev import cluster
from shoal.dev.layout import ClusterLayout, ClusterSpec, plan_layout

ROOT = Path("/var/lib/shoal/bench")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


@contextlib.contextmanager
def bench_cluster(spec: ClusterSpec) -> Iterator[ClusterLayout]:
    """`spec` brought up from nothing (a leftover of an earlier run is removed first), and down at the end."""
    cluster.down(spec.name, spec.root, out=lambda _: None)
    cluster.up(spec, out=lambda _: None)
    try:
        yield plan_layout(spec)
    finally:
        cluster.down(spec.name, spec.root, out=lambda _: None)
