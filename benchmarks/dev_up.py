"""Wall time of `shoal dev up --nodes 3` from nothing, what dominates it, and memory per node.

Baseline in the same process: a 1-node `up`, so the ratio says what each extra node costs.
Run as root: `make bench` or `.venv/bin/python benchmarks/dev_up.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import psutil

from shoal.dev import cluster, host
from shoal.dev.layout import ClusterSpec, plan_layout

NAME, SUBNET, ROOT = "bench", "10.99.9.0/24", Path("/var/lib/shoal/bench")


def one_up(nodes: int) -> tuple[cluster.Timings, list[float], float]:
    spec = ClusterSpec(name=NAME, nodes=nodes, subnet=SUBNET, root=ROOT)
    cluster.down(NAME, ROOT, out=lambda _: None)
    t = cluster.up(spec, out=lambda _: None)
    time.sleep(1.0)  # let the engines settle before reading their memory
    rss = []
    for node in plan_layout(spec).nodes:
        pids = host.netns_pids(node.netns)
        rss.append(sum(psutil.Process(p).memory_info().rss for p in pids if psutil.pid_exists(p)) / 2**20)
    t0 = time.monotonic()
    cluster.down(NAME, ROOT, out=lambda _: None)
    return t, rss, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    runs = ap.parse_args().runs
    nodes = ap.parse_args().nodes
    base = [one_up(1)[0].total for _ in range(runs)]
    results = [one_up(nodes) for _ in range(runs)]
    totals = [t.total for t, _, _ in results]
    med = statistics.median(totals)
    print(f"dev up --nodes 1: median {statistics.median(base):.2f}s over {runs} runs (baseline)")
    print(
        f"dev up --nodes {nodes}: median {med:.2f}s (min {min(totals):.2f}, max {max(totals):.2f}); "
        f"ratio to 1 node {med / statistics.median(base):.2f}x; goal <= 15s"
    )
    for phase in ("images", "network", "pools", "engines", "load"):
        vals = [getattr(t, phase) for t, _, _ in results]
        print(f"  {phase:<8} median {statistics.median(vals):.2f}s")
    rss = [r for _, rs, _ in results for r in rs]
    print(f"resident memory per idle node (dockerd + containerd): median {statistics.median(rss):.0f} MiB")
    print(f"dev down: median {statistics.median([d for _, _, d in results]):.2f}s")


if __name__ == "__main__":
    main()
