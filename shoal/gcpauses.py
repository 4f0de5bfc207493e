"""How long the garbage collector stops this process: each collection's pause, by generation.

A manager holding 1,000 nodes' lists keeps a few hundred MB of dicts; a full (generation 2) collection
walks every one of them while the event loop waits, and shows up as a stall in whatever request was on
the loop at the time (a `docker info` answering in 900 ms where it usually takes 50). This makes those
stalls a figure an operator can read off /metrics, and one a benchmark can split from the code's own
time.

`tune()` is what the servers do about it (see there); the figures say whether it is enough.

One watcher a process (`gc.callbacks` is process-wide, and tests run several servers in one process):
`watch()` installs it once and returns it; every server's Metrics reads the same counts.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds: a young collection takes tens of microseconds; a full one over a large heap, hundreds of ms.
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(slots=True)
class Pauses:
    """Counts per generation: how many collections, their total seconds, and how many fell in each
    bucket (not cumulative: the exposition adds them up), plus the longest seen."""

    counts: list[list[int]] = field(default_factory=lambda: [[0] * (len(BUCKETS) + 1) for _ in range(3)])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    longest: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        gen = info.get("generation", 2)
        self.counts[gen][bisect.bisect_left(BUCKETS, took)] += 1
        self.seconds[gen] += took
        self.longest[gen] = max(self.longest[gen], took)


_pauses: Pauses | None = None

# Allocations (less deallocations) between young collections: CPython's 700 collects in the middle of
# any large parse -- a 2 MB registry listing, an engine's container list -- so what lives a few
# milliseconds is promoted, and once a quarter of the old generation is such debris a full collection
# walks everything the process holds. Measured at 1,000 nodes: a full collection every 4 s while the
# cluster filled, 645 ms the longest, 17% of the manager's time stopped.
YOUNG = 50_000
MIDDLE = 20  # young collections between middle ones (default 10): old enough means seconds, not ms


def tune() -> None:
    """For a long-running server: what start-up made (modules, classes, configuration) is frozen out of
    every later collection, and the young generation is big enough that a request's or a listing's
    temporaries die before they are collected, so they are never promoted to be walked again and again
    by full collections. Objects freed by their reference count -- nearly all -- are freed as before;
    only a cycle among the frozen start-up objects would outlive its use, and start-up makes none that
    go away."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, gc.get_threshold()[2])


def watch() -> Pauses:
    """The process's one watcher, installed on first use."""
    global _pauses
    if _pauses is None:
        _pauses = Pauses()
        gc.callbacks.append(_pauses)
    return _pauses


class PauseCollector(Collector):
    """`<prefix>_gc_pause_seconds{generation}`: a histogram of the collector's pauses, and
    `<prefix>_gc_pause_longest_seconds{generation}` the longest one since the process started."""

    def __init__(self, prefix: str, pauses: Pauses) -> None:
        self.name = f"{prefix}_gc_pause_seconds"
        self.pauses = pauses

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(
            self.name,
            "Garbage collections and how long each stopped the process (the event loop with it), by "
            "generation: 2 is the full collection that walks every object the process holds",
            labels=["generation"],
        )
        p = self.pauses
        for gen in range(3):
            running, buckets = 0, []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), p.counts[gen], strict=True):
                running += n
                buckets.append((bound, float(running)))
            fam.add_metric([str(gen)], buckets, p.seconds[gen])
        yield fam
        longest = GaugeMetricFamily(
            f"{self.name[: -len('_seconds')]}_longest_seconds",
            "The longest garbage-collection pause since the process started, by generation",
            labels=["generation"],
        )
        for gen in range(3):
            longest.add_metric([str(gen)], p.longest[gen])
        yield longest
