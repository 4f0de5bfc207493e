"""`docker build` figures (issue 14, line 8), on a real 3-node dev cluster:

(1) `docker build --no-cache` of a 10 MB context (a Dockerfile and 10 MB of random bytes COPYed in) through
    the manager (placed on node1 by `--build-arg constraint:node==node1`) against straight to node1's
    engine, interleaved in one run; the median ratio (goal <= 1.1).
(2) the manager's RSS (psutil on its pid, from the cluster's state.json) sampled every 10 ms while the
    builds through it run: the largest growth over its RSS before them (goal < 20 MB). The context streams
    through, so the growth does not follow the context's size (try `--size-mb 200`).

Run as root: `.venv/bin/python benchmarks/build.py [--runs 10] [--size-mb 10]` brings up `bdbench` on
10.99.17.0/24 and takes it down; `--cluster NAME --root DIR` measures a dev cluster that is already up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from _bench import ROOT, _apply_env, bench_cluster, pct

from shoal.dev import cluster
from shoal.dev.layout import ClusterSpec

NAME, SUBNET = "bdbench", "10.99.17.0/24"
MB = 1 << 20


def timed(argv: list[str], made: set[str]) -> float:
    """Seconds for one `docker build -q`; the image id it printed goes into `made` (removed at the end)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    t = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    took = time.perf_counter() - t
    made.add(out.strip())
    return took


class Peak:
    """The largest RSS of a process, sampled in a thread while the `with` block runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @contextmanager
    def watching(self) -> Iterator[None]:
        t = threading.Thread(target=self._sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            self._stop.set()
            t.join()


def context(size_mb: int) -> tempfile.TemporaryDirectory[str]:
    d = tempfile.TemporaryDirectory(prefix="shoal-build-bench-")
    (Path(d.name) / "Dockerfile").write_text("FROM busybox\nCOPY blob /blob\n")
    with open(Path(d.name) / "blob", "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MB))
    return d


def build_ratio(manager: str, node1: str, manager_pid: int, runs: int, size_mb: int) -> None:
    with context(size_mb) as ctx:
        direct_argv = ["docker", "-H", node1, "build", "--no-cache", "-q", "-t", "bench-direct", ctx]
        via_argv = ["docker", "-H", manager, "build", "--no-cache", "-q", "-t", "bench-via"]
        via_argv += ["--build-arg", "constraint:node==node1", ctx]
        made: set[str] = set()
        for _ in range(2):  # warm both paths (CLI caches, the engine's first build)
            timed(direct_argv, made)
            timed(via_argv, made)
        rss = Peak(manager_pid)
        before = rss.peak
        via, direct = [], []
        with rss.watching():
            for _ in range(runs):
                direct.append(timed(direct_argv, made))
                via.append(timed(via_argv, made))
        subprocess.run(["docker", "-H", node1, "rmi", "-f", *sorted(made)], capture_output=True)
    ratios = [v / d for v, d in zip(via, direct, strict=True)]
    print(
        f"(1) docker build --no-cache, {size_mb} MB context: node1 direct median "
        f"{statistics.median(direct) * 1000:.0f} ms, through the manager {statistics.median(via) * 1000:.0f} "
        f"ms; median ratio {statistics.median(ratios):.3f} over {runs} (p25 {pct(ratios, 25):.2f}, p75 "
        f"{pct(ratios, 75):.2f}; goal <= 1.1), load average {os.getloadavg()[0]:.0f}"
    )
    print(
        f"(2) manager RSS: {before / MB:.1f} MB before, peak {rss.peak / MB:.1f} MB during the builds; "
        f"growth {(rss.peak - before) / MB:.1f} MB (goal < 20 MB)"
    )


def measure(name: str, root: Path, runs: int, size_mb: int) -> None:
    state = json.loads((root / name / "state.json").read_text())
    env = dict(line.removeprefix("export ").split("=", 1) for line in cluster.env_lines(name, root)
               if line.startswith("export "))  # fmt: skip
    build_ratio(env["DOCKER_HOST"], env["SHOAL_NODE_NODE1"], state["pids"][""]["manager"], runs, size_mb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=10)
    ap.add_argument("--cluster", help="a dev cluster that is up (else bdbench is brought up and down)")
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args()
    if args.cluster:
        _apply_env(cluster.env_lines(args.cluster, args.root))
        measure(args.cluster, args.root, args.runs, args.size_mb)
        return
    spec = ClusterSpec(name=NAME, nodes=3, subnet=SUBNET, root=args.root, agent_interval=1.0)
    with bench_cluster(spec):
        measure(NAME, args.root, args.runs, args.size_mb)


if __name__ == "__main__":
    main()
