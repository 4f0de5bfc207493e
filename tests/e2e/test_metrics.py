"""The manager's Prometheus page (issue 17 line 5), scraped as Prometheus would (with the operator's
certificate: it sits behind the Docker API's mutual TLS) and parsed by prometheus_client's own parser."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def _scrape(dev_cluster) -> dict[str, list]:
    r = dev_cluster.http("GET", "/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def _value(samples, name: str, **labels) -> float:
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_manager_counts_placements_engine_calls_and_events_per_node(dev_cluster, gone):
    before = _scrape(dev_cluster)
    placed = _value(before["shoal_manager_placement_seconds"], "shoal_manager_placement_seconds_count")
    name = f"m-{uuid.uuid4().hex[:6]}"
    gone["containers"].append(name)
    dev_cluster.cli("run", "-d", "--name", name, "-e", "constraint:node==node2", "busybox", "sleep", "30")
    refused = dev_cluster.cli("run", "--rm", "-e", "constraint:node==nowhere", "busybox", "true", check=False)
    assert refused.returncode != 0
    after = _scrape(dev_cluster)
    p = after["shoal_manager_placement_seconds"]
    assert _value(p, "shoal_manager_placement_seconds_count", outcome="placed") >= 1
    assert _value(p, "shoal_manager_placement_seconds_count", outcome="refused") >= 1
    assert _value(p, "shoal_manager_placement_seconds_count") >= placed + 2
    phases = after["shoal_manager_placement_phase_seconds"]  # each decision's filters and strategy halves
    for phase in ("filters", "strategy"):
        assert _value(phases, "shoal_manager_placement_phase_seconds_count", phase=phase) >= placed + 2
        assert _value(phases, "shoal_manager_placement_phase_seconds_sum", phase=phase) > 0
    calls = after["shoal_manager_engine_call_seconds"]
    assert _value(calls, "shoal_manager_engine_call_seconds_count", node="node2") >= 1  # the create, at least
    lag = after["shoal_manager_event_lag_seconds"]
    assert _value(lag, "shoal_manager_event_lag_seconds_count", node="node2") >= 1  # its create/start events
    assert _value(after["shoal_manager_nodes"], "shoal_manager_nodes") == len(dev_cluster.nodes)
    assert _value(after["shoal_manager_nodes_reachable"], "shoal_manager_nodes_reachable") == len(
        dev_cluster.nodes
    )
    assert _value(after["shoal_manager_containers"], "shoal_manager_containers") >= 1
    assert "shoal_manager_index_rebuilds" in after
    # the collector's pauses, by generation (a 3-node manager may not yet have filled its young
    # generation of 50,000; tests/registry/test_metrics.py makes a registry collect and counts it)
    gc = after["shoal_manager_gc_pause_seconds"]
    assert {s.labels["generation"] for s in gc} == {"0", "1", "2"}
    longest = after["shoal_manager_gc_pause_longest_seconds"]
    assert {s.labels["generation"] for s in longest} == {"0", "1", "2"}
