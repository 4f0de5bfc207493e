"""The registry's Prometheus /metrics, scraped as Prometheus scrapes it (an HTTP GET, no token) and parsed
with prometheus_client's own parser: the figures move as the registry is used."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.registry.conftest import (
    ACL_MANAGEMENT,
    RegistryProc,
    sqlite_registry,
    start_registry,
    stop_registry,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(r: RegistryProc) -> Samples:
    resp = requests.get(f"{r.url}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=")  # the text exposition format
    out: Samples = {}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module", name="sqlite_registry")
def _sqlite_registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as r:
        yield r


def test_writes_and_request_latency_are_counted(sqlite_registry: RegistryProc) -> None:
    r = sqlite_registry
    before = scrape(r)
    for i in range(5):
        assert requests.put(f"{r.url}/v1/kv/metrics/w{i}", data=b"v", timeout=10).json() is True
    after = scrape(r)
    assert value(after, "shoal_registry_writes_total") - value(before, "shoal_registry_writes_total") >= 5
    commits = value(after, "shoal_registry_sqlite_commits_total")
    acked = value(after, "shoal_registry_sqlite_committed_writes_total")
    assert 1 <= commits <= acked  # a group commit acknowledges one write or more
    puts = "shoal_registry_http_request_duration_seconds_count"
    labels = {"endpoint": "kv", "method": "PUT", "blocking": "false"}
    assert value(after, puts, **labels) - value(before, puts, **labels) == 5
    assert value(after, "shoal_registry_http_request_duration_seconds_bucket", le="+Inf", **labels) >= 5


def test_a_blocking_query_is_held_then_woken_and_timed(sqlite_registry: RegistryProc) -> None:
    r = sqlite_registry
    key = f"{r.url}/v1/kv/metrics/watched"
    requests.put(key, data=b"0", timeout=10)
    index = requests.get(key, timeout=10).headers["X-Consul-Index"]
    before = scrape(r)
    assert value(before, "shoal_registry_blocking_queries") == 0
    answered: list[requests.Response] = []
    t = threading.Thread(
        target=lambda: answered.append(requests.get(key, params={"index": index, "wait": "30s"}, timeout=60))
    )
    t.start()
    wait_for(lambda: value(scrape(r), "shoal_registry_blocking_queries") == 1, "the query to be held")
    requests.put(key, data=b"1", timeout=10)
    t.join(30)
    assert answered and answered[0].status_code == 200
    assert int(answered[0].headers["X-Consul-Index"]) > int(index)
    after = scrape(r)
    assert value(after, "shoal_registry_blocking_queries") == 0
    woken = "shoal_registry_blocking_wakeup_seconds_count"
    assert value(after, woken) - value(before, woken) == 1
    held = "shoal_registry_http_request_duration_seconds_count"
    labels = {"endpoint": "kv", "method": "GET", "blocking": "true"}
    assert value(after, held, **labels) - value(before, held, **labels) == 1


def test_check_timers_held_are_shown(sqlite_registry: RegistryProc) -> None:
    r = sqlite_registry
    before = value(scrape(r), "shoal_registry_check_timers", kind="ttl")
    body = {"Name": "metrics-ttl", "CheckID": "metrics-ttl", "TTL": "30s"}
    assert requests.put(f"{r.url}/v1/agent/check/register", json=body, timeout=10).status_code == 200
    assert value(scrape(r), "shoal_registry_check_timers", kind="ttl") == before + 1
    requests.put(f"{r.url}/v1/agent/check/deregister/metrics-ttl", timeout=10)
    assert value(scrape(r), "shoal_registry_check_timers", kind="ttl") == before


def test_metrics_need_no_token_when_acls_deny_by_default() -> None:
    r = start_registry(
        f"sqlite://{tempfile.mkdtemp()}/registry.db",
        "--acl",
        env={"CONSUL_ACL_INITIAL_MANAGEMENT": ACL_MANAGEMENT},
    )
    try:
        assert requests.get(f"{r.url}/v1/agent/self", timeout=10).status_code == 403  # ACLs are on
        samples = scrape(r)  # and a scraper without a token still reads the figures
        assert ("shoal_registry_blocking_queries", ()) in samples
        headers = {"X-Consul-Token": ACL_MANAGEMENT}
        assert requests.put(f"{r.url}/v1/kv/m", data=b"x", headers=headers, timeout=10).json() is True
        assert value(scrape(r), "shoal_registry_writes_total") > value(samples, "shoal_registry_writes_total")
    finally:
        stop_registry(r)


def test_garbage_collection_pauses_are_shown(sqlite_registry: RegistryProc) -> None:
    # the registry collects its young generation only once 50,000 objects are alive (gcpauses.tune):
    # 10,000 keys listed whole, each listing kept a moment for the readers it woke, get there
    url = sqlite_registry.url
    for start in range(0, 10_000, 64):
        ops = [
            {"KV": {"Verb": "set", "Key": f"gc/{i:05d}", "Value": "dg=="}} for i in range(start, start + 64)
        ]
        assert requests.put(f"{url}/v1/txn", json=ops, timeout=30).status_code == 200
    before = scrape(sqlite_registry)
    for gen in ("0", "1", "2"):
        assert ("shoal_registry_gc_pause_seconds_count", (("generation", gen),)) in before
    for i in range(20):
        got = requests.get(f"{url}/v1/kv/gc/?recurse", params={"dc": "dc1", "n": i}, timeout=30)
        assert len(got.json()) == 10_048  # 157 transactions of 64
        after = scrape(sqlite_registry)
        if value(after, "shoal_registry_gc_pause_seconds_count", generation="0") > value(
            before, "shoal_registry_gc_pause_seconds_count", generation="0"
        ):
            break
    else:
        pytest.fail("20 listings of 10,000 keys and no collection counted")
    assert value(after, "shoal_registry_gc_pause_seconds_sum", generation="0") > 0
    assert value(after, "shoal_registry_gc_pause_longest_seconds", generation="0") > 0
