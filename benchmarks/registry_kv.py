"""Registry figures over HTTP, on SQLite and on etcd: KV PUT/s and GET/s with 16 concurrent clients,
transactions/s (PUT /v1/txn: a cas=0 claim and a record, the dataset-name pattern), blocking-query
wake-up latency (p50/p99), and 1,000 and 10,000 blocking queries held open at once.

Beside each rate, the server's CPU per request (registry vs no-op server, from /proc: what a loaded
machine does not distort as much as a rate), and the registry's own figures from its /metrics: SQLite's
group commits (writes per fsync'd commit, commit latency) and the wake-up latency it measured, from a
change committed to each woken query's answer being ready (issue 17: p99 <= 5 ms; 10,000 queries all
within 200 ms of one PUT).

Baseline in the same run: a no-op aiohttp server answering every PUT/GET with `true` on the same
machine, i.e. the HTTP ceiling these clients can reach, on asyncio's loop and on uvloop (the registry's);
each store's rate is printed against the uvloop one.
Run: `.venv/bin/python benchmarks/registry_kv.py [--seconds 5]` (starts its own etcd and registries).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import uvloop
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import pct

from shoal.registry.etcd_server import free_port
from tests.etcd import single_etcd
from tests.registry.conftest import start_registry, stop_registry

CLIENTS = 16


def _noop_server(port: int, uv: bool) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response(True)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    loop = uvloop.new_event_loop() if uv else None
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    """The registry's /metrics, parsed as Prometheus parses it."""
    import urllib.request

    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def delta(a: Samples, b: Samples, name: str, **labels: str) -> float:
    k = (name, tuple(sorted(labels.items())))
    return b.get(k, 0.0) - a.get(k, 0.0)


def hist_quantile(a: Samples, b: Samples, name: str, q: float) -> float:
    """The q-quantile of a histogram's observations between two scrapes, as Prometheus' histogram_quantile
    gives it (linear within the bucket), in seconds; nan with none."""
    buckets = sorted((float(dict(k[1])["le"]), b[k] - a.get(k, 0.0)) for k in b if k[0] == f"{name}_bucket")
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((rank - below) / (n - below) if n > below else 1.0)
        lo, below = le, n
    return lo


def within(a: Samples, b: Samples, name: str, le: str) -> tuple[int, int]:
    """(observations at or under bucket `le`, all observations) between two scrapes."""
    return int(delta(a, b, f"{name}_bucket", le=le)), int(delta(a, b, f"{name}_count"))


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def _rate(base: str, method: str, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        nonlocal done
        async with aiohttp.ClientSession() as s:
            n = 0
            while time.monotonic() < stop:
                url = f"{base}/v1/kv/bench/{i}/{n % 1000}"
                if method == "PUT":
                    async with s.put(url, data=b"x" * 64) as r:
                        assert r.status == 200, await r.text()
                else:
                    async with s.get(url) as r:
                        assert r.status in (200, 404)
                        await r.read()
                n += 1
                done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return done / (time.monotonic() - t0)


async def _txn_rate(base: str, seconds: float) -> float:
    """Two-write transactions from 16 clients: claim a fresh name (cas=0) and write its record."""
    done = 0
    stop = time.monotonic() + seconds
    value = base64.b64encode(b"x" * 64).decode()

    async def client(i: int) -> None:
        nonlocal done
        async with aiohttp.ClientSession() as s:
            n = 0
            while time.monotonic() < stop:
                ops = [
                    {"KV": {"Verb": "cas", "Key": f"bench/txn/{i}/{n}/name", "Value": value, "Index": 0}},
                    {"KV": {"Verb": "set", "Key": f"bench/txn/{i}/{n}/record", "Value": value}},
                ]
                async with s.put(f"{base}/v1/txn", data=json.dumps(ops)) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                n += 1
                done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return done / (time.monotonic() - t0)


async def _wakeups(base: str, rounds: int) -> list[float]:
    lat = []
    async with aiohttp.ClientSession() as reader, aiohttp.ClientSession() as writer:
        key = f"{base}/v1/kv/bench/wake"
        async with writer.put(key, data=b"0") as r:
            await r.read()
        for i in range(rounds):
            async with reader.get(key) as r:
                index = r.headers["X-Consul-Index"]
                await r.read()
            woke: asyncio.Future[float] = asyncio.get_running_loop().create_future()

            async def block(idx: str = index, fut: asyncio.Future[float] = woke) -> None:
                async with reader.get(f"{key}?index={idx}&wait=10s") as r:
                    await r.read()
                    fut.set_result(time.monotonic())

            task = asyncio.create_task(block())
            await asyncio.sleep(0.01)  # let the query reach the server and park
            t0 = time.monotonic()
            async with writer.put(key, data=str(i).encode()) as r:
                await r.read()
            lat.append(await woke - t0)
            await task
    return lat


async def _held_open(base: str, n: int) -> tuple[int, int, float]:
    conn = aiohttp.TCPConnector(limit=n + 10)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s:
        key = f"{base}/v1/kv/bench/held"
        async with s.put(key, data=b"0") as r:
            await r.read()
        async with s.get(key) as r:
            index = r.headers["X-Consul-Index"]

        async def block() -> int:
            async with s.get(f"{key}?index={index}&wait=120s", timeout=aiohttp.ClientTimeout(total=300)) as r:
                await r.read()
                return r.status

        tasks = [asyncio.create_task(block()) for _ in range(n)]
        await asyncio.sleep(2.0)  # all parked
        deadline = time.monotonic() + 90  # ...which the registry's own gauge says, when it has one
        while time.monotonic() < deadline and not all(t.done() for t in tasks):
            held = await asyncio.to_thread(scrape, base)
            if held.get(("shoal_registry_blocking_queries", ()), 0) >= n:
                break
            await asyncio.sleep(0.5)
        early = sum(t.done() for t in tasks)
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as w, w.put(key, data=b"1") as r:
            await r.read()
        statuses = await asyncio.gather(*tasks, return_exceptions=True)
        took = time.monotonic() - t0
        ok = sum(s == 200 for s in statuses)
        return ok, early, took


WAKE = "shoal_registry_blocking_wakeup_seconds"


async def bench(base: str, seconds: float, full: bool, pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for what in ("PUT", "GET"):
        c0, m0 = _cpu(pid), await asyncio.to_thread(scrape, base) if full else {}
        out[what.lower()] = rate = await _rate(base, what, seconds)
        out[f"{what.lower()}_cpu"] = (_cpu(pid) - c0) / (rate * seconds) * 1e6  # µs per request
        if full and what == "PUT":
            m1 = await asyncio.to_thread(scrape, base)
            out["commits"] = delta(m0, m1, "shoal_registry_sqlite_commits_total")
            out["acked"] = delta(m0, m1, "shoal_registry_sqlite_committed_writes_total")
            out["commit_s"] = delta(m0, m1, "shoal_registry_sqlite_commit_seconds_total")
    out["txn"] = await _txn_rate(base, seconds)
    if full:
        m0 = await asyncio.to_thread(scrape, base)
        lat = await _wakeups(base, 200)
        m1 = await asyncio.to_thread(scrape, base)
        out["p50"], out["p99"] = pct(lat, 50) * 1000, pct(lat, 99) * 1000
        out["srv_p50"] = hist_quantile(m0, m1, WAKE, 0.5) * 1000
        out["srv_p99"] = hist_quantile(m0, m1, WAKE, 0.99) * 1000
        out["held_ok"], out["held_early"], out["held_wake"] = await _held_open(base, 1000)
        m0 = await asyncio.to_thread(scrape, base)
        out["big_ok"], out["big_early"], out["big_wake"] = await _held_open(base, 10_000)
        m1 = await asyncio.to_thread(scrape, base)
        out["big_in"], out["big_seen"] = within(m0, m1, WAKE, "0.2")
        out["big_p99"] = hist_quantile(m0, m1, WAKE, 0.99) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    seconds = ap.parse_args().seconds

    print(f"load average before: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} (2 cores)")
    # the baseline on uvloop, the loop `shoal registry` runs on (shoal.eventloop), and on asyncio's own
    for loop_name in ("asyncio", "uvloop"):
        port = free_port()
        noop = multiprocessing.Process(target=_noop_server, args=(port, loop_name == "uvloop"), daemon=True)
        noop.start()
        time.sleep(1.0)
        assert noop.pid is not None
        base = asyncio.run(bench(f"http://127.0.0.1:{port}", seconds, full=False, pid=noop.pid))
        noop.terminate()
        print(
            f"baseline (no-op aiohttp server on {loop_name}, {CLIENTS} clients): "
            f"PUT {base['put']:.0f}/s  GET {base['get']:.0f}/s  TXN {base['txn']:.0f}/s; server CPU per "
            f"request PUT {base['put_cpu']:.0f} µs  GET {base['get_cpu']:.0f} µs"
        )

    with single_etcd() as ep:
        for name, store in (("sqlite", f"sqlite://{tempfile.mkdtemp()}/bench.db"), ("etcd", f"etcd://{ep}")):
            reg = start_registry(store)
            try:
                r = asyncio.run(bench(reg.url, seconds, full=True, pid=reg.proc.pid))
            finally:
                stop_registry(reg)
            print(
                f"{name:<6} PUT {r['put']:.0f}/s ({r['put'] / base['put']:.2f}x baseline)  "
                f"GET {r['get']:.0f}/s ({r['get'] / base['get']:.2f}x baseline)  "
                f"TXN {r['txn']:.0f}/s ({r['txn'] / base['txn']:.2f}x baseline)"
            )
            print(
                f"{name:<6} server CPU per request: PUT {r['put_cpu']:.0f} µs "
                f"({r['put_cpu'] / base['put_cpu']:.2f}x baseline)  GET {r['get_cpu']:.0f} µs "
                f"({r['get_cpu'] / base['get_cpu']:.2f}x baseline)"
            )
            if r["commits"]:
                print(
                    f"{name:<6} group commit during the PUTs: {r['acked'] / r['commits']:.1f} writes per "
                    f"fsync'd commit, {r['commit_s'] / r['commits'] * 1000:.1f} ms per commit "
                    f"({int(r['commits'])} commits; goal PUT >= 7500/s)"
                )
            print(
                f"{name:<6} blocking wake-up after a PUT: p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms "
                "(goal p99 <= 5 ms)"
            )
            print(
                f"{name:<6} blocking wake-up as the registry measured it (commit to answer ready): "
                f"p50 {r['srv_p50']:.1f} ms  p99 {r['srv_p99']:.1f} ms (goal p99 <= 5 ms)"
            )
            print(
                f"{name:<6} 1000 blocking queries held open: {int(r['held_ok'])} answered 200 after one PUT "
                f"in {r['held_wake'] * 1000:.0f} ms, {int(r['held_early'])} returned early"
            )
            print(
                f"{name:<6} 10000 blocking queries held open: {int(r['big_ok'])} answered 200 after one PUT, "
                f"the last arriving {r['big_wake'] * 1000:.0f} ms after it, {int(r['big_early'])} returned "
                f"early; the registry had {r['big_in']} of {r['big_seen']} answers ready within 200 ms of "
                f"the commit (goal all), p99 {r['big_p99']:.0f} ms"
            )


if __name__ == "__main__":
    main()
