"""The etcd store's speed against etcd's own (issue 16, line 6): registry KV PUT/s over HTTP on a 3-member
etcd, from 16 clients, against etcd's PUT/s over gRPC from 16 clients (aetcd's stubs, each client its own
channel balanced over the three members, as the registry's is), in the same run; their ratio (goal >= 0.8);
and the blocking-query wake-up after a PUT, p50/p99 (goal p99 <= 10 ms), beside etcd's own (a Put to its
watcher's event), which is the least any watch-fed reader of this etcd can wait.

Both rates are measured in alternating rounds (etcd, registry, etcd, registry...) and the medians compared,
so a burst of someone else's load on this shared 2-core machine lands on both sides rather than one. Beside
each rate, the CPU the registry and the etcd members spent per PUT (from /proc): figures a loaded machine
distorts less than a rate.

The members run in network namespaces of their own on 10.99.24.0/24 (tests/etcd.py's `three_etcd`), with
one `shoal registry --store etcd://...` on loopback; all of it is removed at the end, however the run ends.
Run (root): `.venv/bin/python benchmarks/etcd_ratio.py [--seconds 5] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc
import psutil
from aetcd import rpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import pct
from registry_kv import CLIENTS, WAKE, _rate, _wakeups, hist_quantile, scrape

from tests.etcd import ThreeEtcd, three_etcd
from tests.registry.conftest import start_registry, stop_registry

SUBNET = "10.99.24.0/24"
VALUE = b"x" * 64  # what registry_kv's HTTP clients put


async def etcd_rate(endpoints: list[str], seconds: float) -> float:
    """PUT/s straight to etcd from CLIENTS clients, each with its own channel, on keys shaped like the
    registry clients' (1,000 per client, outside the registry's namespace)."""
    done = 0
    stop = time.monotonic() + seconds
    target = "ipv4:" + ",".join(endpoints)

    async def client(i: int) -> None:
        nonlocal done
        async with grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as ch:
            kv = rpc.KVStub(ch)
            await kv.Put(rpc.PutRequest(key=b"/native/warm", value=VALUE), timeout=10)
            n = 0
            while time.monotonic() < stop:
                await kv.Put(rpc.PutRequest(key=f"/native/{i}/{n % 1000}".encode(), value=VALUE), timeout=10)
                n += 1
                done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return done / (time.monotonic() - t0)


async def etcd_wakeups(endpoints: list[str], rounds: int) -> list[float]:
    """etcd's own wake-up, for comparison: from a Put sent to a watcher of that key getting the event
    (gRPC, one client), what any watch-fed reader of this etcd waits at least."""
    target = "ipv4:" + ",".join(endpoints)
    lat = []
    async with grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as ch:
        kv, watch = rpc.KVStub(ch), rpc.WatchStub(ch)
        stream = watch.Watch()
        await stream.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=b"/native/wake")))
        await stream.read()  # created
        for i in range(rounds):
            t0 = time.monotonic()
            await kv.Put(rpc.PutRequest(key=b"/native/wake", value=str(i).encode()), timeout=10)
            while not (await stream.read()).events:
                pass
            lat.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)
        stream.cancel()
    return lat


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def _measure(run, pids: list[int]) -> tuple[float, dict[int, float]]:
    """(rate, CPU seconds each pid spent during the run)."""
    c0 = {p: _cpu([p]) for p in pids}
    t0 = time.monotonic()
    rate = asyncio.run(run())
    took = time.monotonic() - t0
    return rate, {p: (_cpu([p]) - c0[p]) / max(rate * took, 1.0) * 1e6 for p in pids}  # µs per PUT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    print(f"load average before: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} (2 cores)")
    with three_etcd(SUBNET) as cluster:
        reg = start_registry(cluster.store_url)
        try:
            report(cluster, reg.url, reg.proc.pid, args.seconds, args.rounds)
        finally:
            stop_registry(reg)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")


def report(cluster: ThreeEtcd, base: str, registry_pid: int, seconds: float, rounds: int) -> None:
    etcd_pids = [p.pid for p in cluster.procs if p is not None]
    asyncio.run(_rate(base, "PUT", 1.0))  # warm: connections, the registry's first requests
    native: list[float] = []
    via: list[float] = []
    cpu_native: list[float] = []
    cpu_reg: list[float] = []
    cpu_reg_etcd: list[float] = []
    for r in range(rounds):
        rate, cpu = _measure(lambda: etcd_rate(cluster.endpoints, seconds), etcd_pids)
        native.append(rate)
        cpu_native.append(sum(cpu.values()))
        rate2, cpu2 = _measure(lambda: _rate(base, "PUT", seconds), [registry_pid, *etcd_pids])
        via.append(rate2)
        cpu_reg.append(cpu2[registry_pid])
        cpu_reg_etcd.append(sum(v for p, v in cpu2.items() if p != registry_pid))
        print(
            f"round {r + 1}: etcd gRPC {rate:.0f} PUT/s  registry HTTP {rate2:.0f} PUT/s  "
            f"ratio {rate2 / rate:.2f}"
        )
    n, v = statistics.median(native), statistics.median(via)
    each = ", ".join(f"{x:.0f}" for x in native)
    print(f"etcd gRPC PUT/s ({CLIENTS} clients, 3 members): {n:.0f}  (rounds: {each})")
    each = ", ".join(f"{x:.0f}" for x in via)
    print(f"registry HTTP PUT/s ({CLIENTS} clients): {v:.0f}  (rounds: {each})")
    print(f"ratio registry / etcd: {v / n:.2f}  (goal >= 0.80)")
    print(
        f"CPU per PUT: registry {statistics.median(cpu_reg):.0f} µs; the three etcd members "
        f"{statistics.median(cpu_reg_etcd):.0f} µs through the registry, "
        f"{statistics.median(cpu_native):.0f} µs over gRPC"
    )
    own = asyncio.run(etcd_wakeups(cluster.endpoints, 200))
    print(
        f"etcd's own wake-up (a Put sent to its watcher's event, gRPC): p50 {pct(own, 50) * 1000:.1f} ms  "
        f"p99 {pct(own, 99) * 1000:.1f} ms"
    )
    m0 = scrape(base)
    lat = asyncio.run(_wakeups(base, 200))
    m1 = scrape(base)
    print(
        "blocking wake-up, from the PUT sent to the blocked reader's answer: "
        f"p50 {pct(lat, 50) * 1000:.1f} ms  "
        f"p99 {pct(lat, 99) * 1000:.1f} ms (goal p99 <= 10 ms); as the registry measured it (change seen to "
        f"answer ready): p50 {hist_quantile(m0, m1, WAKE, 0.5) * 1000:.1f} ms  "
        f"p99 {hist_quantile(m0, m1, WAKE, 0.99) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
