"""Manager figures, on a real 3-node dev cluster (`mgbench` on 10.99.11.0/24, brought up and taken down here):

(2) proxy overhead: `docker run --rm busybox true` through the manager against straight to node1's engine,
    interleaved in one run; the median ratio (goal <= 1.05).
(3) `docker ps -a` with 300 containers over 3 nodes through the manager against the slowest single engine
    listing its own 100 (goal <= 1.5x).
(4) a fact changed on a node (a facts.d file) to the next placement that sees it, at a 1 s agent interval
    (goal <= 1 s).

Run as root: `.venv/bin/python benchmarks/manager.py [--runs 30]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from _bench import ROOT, bench_cluster, docker_py, pct

from shoal.dev.layout import ClusterSpec

NAME, SUBNET = "mgbench", "10.99.11.0/24"


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t


def proxy_overhead(manager: str, node1: str, runs: int) -> None:
    via, direct = [], []
    for _ in range(3):  # warm both paths (CLI caches, engine first-run costs)
        timed(["docker", "-H", node1, "run", "--rm", "busybox", "true"])
        timed(["docker", "-H", manager, "run", "--rm", "-e", "constraint:node==node1", "busybox", "true"])
    for _ in range(runs):
        direct.append(timed(["docker", "-H", node1, "run", "--rm", "busybox", "true"]))
        via.append(
            timed(["docker", "-H", manager, "run", "--rm", "-e", "constraint:node==node1", "busybox", "true"])
        )
    ratio = statistics.median(v / d for v, d in zip(via, direct, strict=True))
    print(
        f"(2) docker run --rm busybox true: node1 direct median {statistics.median(direct) * 1000:.0f} ms, "
        f"through the manager {statistics.median(via) * 1000:.0f} ms; median ratio {ratio:.3f} (goal <= 1.05)"
    )


def ps_all(manager: str, engines: dict[str, str], runs: int) -> None:
    def fill(url: str) -> None:
        c = docker_py(url)
        for i in range(100):
            c.containers.create("busybox", "true", name=f"ps-{i}")
        c.close()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(fill, engines.values()))
    n = len(
        subprocess.run(["docker", "-H", manager, "ps", "-aq"], capture_output=True, text=True).stdout.split()
    )
    assert n == 300, n
    per_engine = {node: [] for node in engines}
    via = []
    for _ in range(3):
        timed(["docker", "-H", manager, "ps", "-a"])
    for _ in range(runs):
        for node, url in engines.items():
            per_engine[node].append(timed(["docker", "-H", url, "ps", "-a"]))
        via.append(timed(["docker", "-H", manager, "ps", "-a"]))
    slowest = max(statistics.median(v) for v in per_engine.values())
    mgr = statistics.median(via)
    print(
        "(3) docker ps -a, 300 containers on 3 nodes: slowest engine (its 100) median "
        f"{slowest * 1000:.0f} ms, manager (all 300) {mgr * 1000:.0f} ms; ratio {mgr / slowest:.2f}x "
        "(goal <= 1.5x)"
    )
    for url in engines.values():
        c = docker_py(url)
        c.containers.prune()
        c.close()


def fact_to_placement(manager: str, facts_dir: Path, samples: int) -> None:
    client = docker_py(manager)
    lat = []
    try:
        for i in range(samples):
            time.sleep(0.37 * (i % 3))  # land at different points of the agent's interval
            (facts_dir / "bench.txt").write_text(f"benchround=r{i}\n")
            t0 = time.perf_counter()
            while True:
                try:
                    ct = client.containers.create(
                        "busybox", "true", environment=[f"constraint:benchround==r{i}"]
                    )
                except docker.errors.APIError:
                    time.sleep(0.01)
                    continue
                lat.append(time.perf_counter() - t0)
                ct.remove()
                break
    finally:
        (facts_dir / "bench.txt").unlink(missing_ok=True)
        client.close()
    print(
        f"(4) facts.d change on node2 -> next placement sees it (1 s agent interval): p50 "
        f"{pct(lat, 50) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms over {samples} (goal <= 1000 ms)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    spec = ClusterSpec(name=NAME, nodes=3, subnet=SUBNET, root=ROOT, agent_interval=1.0)
    with bench_cluster(spec) as layout:
        manager = layout.docker_host
        engines = {n.name: n.engine_url for n in layout.nodes}
        proxy_overhead(manager, engines["node1"], args.runs)
        ps_all(manager, engines, max(10, args.runs // 2))
        fact_to_placement(manager, layout.nodes[1].facts_dir, 12)


if __name__ == "__main__":
    main()
