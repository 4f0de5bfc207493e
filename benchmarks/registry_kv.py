"""Registry figures over HTTP, on SQLite and on etcd: KV PUT/s and GET/s with 16 concurrent clients,
transactions/s (PUT /v1/txn: a cas=0 claim and a record, the dataset-name pattern), blocking-query
wake-up latency (p50/p99), and 1,000 blocking queries held open at once.

Baseline in the same run: a no-op aiohttp server answering every PUT/GET with `true` on the same
machine, i.e. the HTTP ceiling these clients can reach; each store's rate is printed against it.
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
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import pct

from shoal.registry.etcd_server import free_port
from tests.etcd import single_etcd
from tests.registry.conftest import start_registry, stop_registry

CLIENTS = 16


def _noop_server(port: int) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response(True)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


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
    async with aiohttp.ClientSession(connector=conn) as s:
        key = f"{base}/v1/kv/bench/held"
        async with s.put(key, data=b"0") as r:
            await r.read()
        async with s.get(key) as r:
            index = r.headers["X-Consul-Index"]

        async def block() -> int:
            async with s.get(f"{key}?index={index}&wait=30s", timeout=aiohttp.ClientTimeout(total=60)) as r:
                await r.read()
                return r.status

        tasks = [asyncio.create_task(block()) for _ in range(n)]
        await asyncio.sleep(2.0)  # all parked
        early = sum(t.done() for t in tasks)
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as w, w.put(key, data=b"1") as r:
            await r.read()
        statuses = await asyncio.gather(*tasks, return_exceptions=True)
        took = time.monotonic() - t0
        ok = sum(s == 200 for s in statuses)
        return ok, early, took


async def bench(base: str, seconds: float, full: bool) -> dict[str, float]:
    out = {"put": await _rate(base, "PUT", seconds), "get": await _rate(base, "GET", seconds)}
    out["txn"] = await _txn_rate(base, seconds)
    if full:
        lat = await _wakeups(base, 200)
        out["p50"], out["p99"] = pct(lat, 50) * 1000, pct(lat, 99) * 1000
        out["held_ok"], out["held_early"], out["held_wake"] = await _held_open(base, 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    seconds = ap.parse_args().seconds

    port = free_port()
    noop = multiprocessing.Process(target=_noop_server, args=(port,), daemon=True)
    noop.start()
    time.sleep(1.0)
    base = asyncio.run(bench(f"http://127.0.0.1:{port}", seconds, full=False))
    noop.terminate()
    print(
        f"baseline (no-op aiohttp server, {CLIENTS} clients): "
        f"PUT {base['put']:.0f}/s  GET {base['get']:.0f}/s  TXN {base['txn']:.0f}/s"
    )

    with single_etcd() as ep:
        for name, store in (("sqlite", f"sqlite://{tempfile.mkdtemp()}/bench.db"), ("etcd", f"etcd://{ep}")):
            reg = start_registry(store)
            try:
                r = asyncio.run(bench(reg.url, seconds, full=True))
            finally:
                stop_registry(reg)
            print(
                f"{name:<6} PUT {r['put']:.0f}/s ({r['put'] / base['put']:.2f}x baseline)  "
                f"GET {r['get']:.0f}/s ({r['get'] / base['get']:.2f}x baseline)  "
                f"TXN {r['txn']:.0f}/s ({r['txn'] / base['txn']:.2f}x baseline)"
            )
            print(
                f"{name:<6} blocking wake-up after a PUT: p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms "
                "(goal p99 <= 50 ms)"
            )
            print(
                f"{name:<6} 1000 blocking queries held open: {int(r['held_ok'])} answered 200 after one PUT "
                f"in {r['held_wake'] * 1000:.0f} ms, {int(r['held_early'])} returned early"
            )


if __name__ == "__main__":
    main()
