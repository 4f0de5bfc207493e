"""Prometheus figures for shoal's servers (the registry and the manager): what an operator watches at
1,000 nodes — write rates, blocking queries held, wake-up and request latency, check timers; placement
latency, engine call latency per node, event-stream lag, cache rebuilds; and in each, the garbage
collector's pauses (shoal.gcpauses).

Each server process makes its own `CollectorRegistry` (`Metrics`), never prometheus_client's global
one: tests start several registries in one process, and two servers sharing the default would clash on
names or report each other's figures.

Two kinds of figure, so the hot paths stay cheap:

- histograms (latency) are observed where the event happens, through a per-label-set child looked up
  once (`Metrics.latency`), a few microseconds per request;
- counts that code already keeps as plain ints (keys written, commits, timers held, queries blocked) are
  *read* when scraped (`Readings`), so a write pays one integer increment, not a metric update.

`render` is the one way to serve them: the text exposition format, whatever the edge (aiohttp here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal import gcpauses

# Seconds: from half a millisecond (a woken blocking query on an idle registry) to a few seconds (a
# saturated one); the goals (wake-up p99 <= 5 ms, requests well under 100 ms) fall mid-range.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

# What a reading returns: one value, or one value per tuple of label values.
Value = float | Mapping[tuple[str, ...], float]


@dataclass(frozen=True, slots=True)
class Reading:
    """One figure read at scrape time: `read()` gives its value (per label values when `labels`)."""

    kind: str  # "counter" or "gauge"
    name: str
    doc: str
    read: Callable[[], Value]
    labels: tuple[str, ...] = ()


class Readings(Collector):
    """Counters and gauges whose values live in the objects that keep them, read when scraped. A reading
    that fails (its object is closing) is left out of that scrape rather than failing the whole page."""

    def __init__(self) -> None:
        self._items: list[Reading] = []

    def add(self, r: Reading) -> None:
        self._items.append(r)

    def describe(self) -> Iterable[Metric]:
        return []  # names are checked by the Metrics that owns us, not by the registry

    def collect(self) -> Iterator[Metric]:
        for r in self._items:
            try:
                value = r.read()
            except Exception:
                continue
            fam: Metric
            if r.kind == "counter":
                fam = CounterMetricFamily(r.name, r.doc, labels=r.labels or None)
            else:
                fam = GaugeMetricFamily(r.name, r.doc, labels=r.labels or None)
            if isinstance(value, Mapping):
                for labels, v in sorted(value.items()):
                    fam.add_metric(list(labels), float(v))  # type: ignore[attr-defined]
            elif r.labels:
                continue  # a labelled reading answered one number: nothing to attach it to
            else:
                fam.add_metric([], float(value))  # type: ignore[attr-defined]
            yield fam


class Metrics:
    """One process's figures: its own CollectorRegistry, the histograms it observes and the readings it
    collects. Names are `shoal_<server>_...`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry()
        self.readings = Readings()
        self.registry.register(self.readings)
        self.registry.register(gcpauses.PauseCollector(prefix, gcpauses.watch()))
        self._names = {f"{prefix}_gc_pause_seconds", f"{prefix}_gc_pause_longest_seconds"}

    def _name(self, name: str) -> str:
        full = f"{self.prefix}_{name}"
        if full in self._names:
            raise ValueError(f"metric {full} is defined twice")
        self._names.add(full)
        return full

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(
            self._name(name), doc, labelnames=tuple(labels), buckets=tuple(buckets), registry=self.registry
        )

    def counter(self, name: str, doc: str, read: Callable[[], Value], labels: Sequence[str] = ()) -> None:
        """A counter read at scrape time (`name` without `_total`: the exposition adds it)."""
        self.readings.add(Reading("counter", self._name(name), doc, read, tuple(labels)))

    def gauge(self, name: str, doc: str, read: Callable[[], Value], labels: Sequence[str] = ()) -> None:
        self.readings.add(Reading("gauge", self._name(name), doc, read, tuple(labels)))


class Latency:
    """A histogram's children by label values, looked up once each: `observe(labels, seconds)` on the
    request path costs a dict lookup and the observation, not prometheus_client's label validation."""

    def __init__(self, histogram: Histogram) -> None:
        self._h = histogram
        self._children: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._h.labels(*labels) if labels else self._h
        child.observe(seconds)


def render(metrics: Metrics) -> tuple[bytes, str]:
    """The text exposition of every figure, and its Content-Type."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


# --- the registry's figures ------------------------------------------------------------------------

# The endpoint classes request latency is split by: Consul's API sections (a fixed set, so a client's
# paths, keys or service names never become label values).
ENDPOINTS = frozenset(
    ("kv", "txn", "session", "agent", "catalog", "health", "acl", "status", "event", "coordinate")
)


def endpoint_class(path: str) -> str:
    """`/v1/kv/a/b` -> "kv"; `/metrics` -> "metrics"; anything else -> "other"."""
    if path.startswith("/v1/"):
        section = path[4:].partition("/")[0]
        return section if section in ENDPOINTS else "other"
    return "metrics" if path == "/metrics" else "other"


class RegistryMetrics(Metrics):
    """The registry's figures (issue 17): writes/s, blocking queries held, wake-up latency, check timers
    held, request latency per endpoint class. The HTTP edge observes requests and wake-ups and counts
    blocked queries in and out (`blocked`); `watch_store` and `watch_checks` hook the readings."""

    def __init__(self) -> None:
        super().__init__("shoal_registry")
        self.requests = Latency(
            self.histogram(
                "http_request_duration_seconds",
                "HTTP requests answered, by endpoint class (kv, catalog, health, ...), method, and whether "
                "the request was a blocking query (?index=): its duration includes the wait",
                labels=("endpoint", "method", "blocking"),
            )
        )
        self.wakeups = self.histogram(
            "blocking_wakeup_seconds",
            "From a change being published by the store (committed) to a blocking query it woke having "
            "its answer ready",
        )
        self.blocked = 0
        self.gauge("blocking_queries", "Blocking queries (?index=) held open now", lambda: self.blocked)

    def watch_store(self, store: object) -> None:
        """Readings from the store: keys written (its change feed), and SQLite's group commits."""
        feed = getattr(store, "feed", None)
        if feed is not None:
            self.counter(
                "writes",
                "Keys written (put or deleted) in the store, as its change feed published them; rate() "
                "of it is the registry's write rate",
                lambda: feed.changes,
            )
        if hasattr(store, "commits"):
            self.counter(
                "sqlite_commits",
                "SQLite group commits, one fsync each",
                lambda: store.commits,  # type: ignore[attr-defined]
            )
            self.counter(
                "sqlite_commit_seconds",
                "Time spent in those commits, BEGIN to fsync'd COMMIT (÷ commits: the commit latency)",
                lambda: store.commit_seconds,  # type: ignore[attr-defined]
            )
            self.counter(
                "sqlite_committed_writes",
                "Write operations acknowledged by those commits (÷ commits: the group size)",
                lambda: store.committed,  # type: ignore[attr-defined]
            )

    def watch_checks(self, held: Callable[[], Mapping[str, int]]) -> None:
        """`held()`: the check runner's timers by kind (ttl, probe)."""
        self.gauge(
            "check_timers",
            "Check timers held by the check runner: TTL deadlines and probe loops",
            lambda: {(kind,): float(n) for kind, n in held().items()},
            labels=("kind",),
        )


# --- the manager's figures -------------------------------------------------------------------------


class ManagerMetrics(Metrics):
    """The manager's figures (issue 17): placement latency (the scheduler's decision, by outcome), each
    engine call's latency by node, how late each engine event arrives, the cache's full index rebuilds,
    and the cluster's size as the cache sees it. The cache's Probe (shoal.cluster.state) is pointed here;
    the service layer observes placements (`placed`)."""

    def __init__(self, cluster: object) -> None:
        super().__init__("shoal_manager")
        self.placements = Latency(
            self.histogram(
                "placement_seconds",
                "The scheduler's decisions (filters and ranking, over the cache's index), by outcome",
                labels=("outcome",),
                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            )
        )
        self.phases = Latency(
            self.histogram(
                "placement_phase_seconds",
                "Each placement's two halves: the filters (and the reasons of the nodes they removed), then "
                "the strategy ranking the nodes left",
                labels=("phase",),
                buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
            )
        )
        calls = Latency(
            self.histogram(
                "engine_call_seconds", "Calls to each node's engine that answer at once", labels=("node",)
            )
        )
        lag = Latency(
            self.histogram(
                "event_lag_seconds",
                "From an engine's event (its timeNano) to the manager reading it off the event stream",
                labels=("node",),
            )
        )
        probe = cluster.probe  # type: ignore[attr-defined]
        probe.call = lambda node, seconds: calls.observe((node,), seconds)
        probe.event = lambda node, seconds: lag.observe((node,), max(seconds, 0.0))
        self.counter(
            "index_rebuilds", "Full rebuilds of the scheduler's index from the cache", lambda: probe.rebuilds
        )
        c: Any = cluster  # its engines dict, read at each scrape
        self.gauge("nodes", "Nodes the cache knows", lambda: len(c.engines))
        self.gauge(
            "nodes_reachable",
            "Nodes whose engine answers",
            lambda: sum(e.reachable for e in c.engines.values()),
        )
        self.gauge(
            "containers",
            "Containers in the cache, every node",
            lambda: sum(len(e.containers) for e in c.engines.values()),
        )

    def placed(self, refused: bool, seconds: float, took: tuple[float, float] = (0.0, 0.0)) -> None:
        """One decision: its whole latency by outcome, and its filters' and its strategy's shares."""
        self.placements.observe(("refused" if refused else "placed",), seconds)
        self.phases.observe(("filters",), took[0])
        self.phases.observe(("strategy",), took[1])
