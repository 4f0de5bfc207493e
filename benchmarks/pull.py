"""`docker pull` of a ~50 MB image through the manager onto 3 nodes ÷ one node pulling it alone (issue 14,
goal <= 1.3).

The image is made here: a single 50 MB layer of random bytes (so compression saves nothing), imported on
node1 and pushed to the cluster's image registry (`SHOAL_IMAGE_REGISTRY`). Each run removes it from every
node, times `docker pull` through the manager (every node at once, progress streamed back), removes it
again, and times `docker pull` straight to node1's engine; runs interleave, the figure is the ratio of the
medians. For reference it also times three `docker pull`s straight to the three engines at once (no
manager): what the hardware gives for three engines pulling together, to read the manager's figure against.
Brings up `plbench` (10.99.18.0/24) and takes it down, or uses a cluster that is up with `--name NAME --root
ROOT`. Run as root: `.venv/bin/python benchmarks/pull.py [--runs 5] [--mb 50]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _bench import ROOT, _apply_env, bench_cluster, docker_py

from shoal.dev import cluster
from shoal.dev.layout import ClusterLayout, ClusterSpec

SPEC = ClusterSpec(name="plbench", nodes=3, subnet="10.99.18.0/24", root=ROOT, agent_interval=1.0)


@contextlib.contextmanager
def running(name: str, root: Path) -> Iterator[ClusterLayout]:
    layout, _ = cluster.load(name, root)
    _apply_env(cluster.env_lines(name, root))
    yield layout


def make_image(layout: ClusterLayout, ref: str, mb: int) -> None:
    """`ref`: one layer of `mb` MB of random bytes, imported on node1 and pushed to the registry."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("blob")
        info.size = mb << 20
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
    node1 = docker_py(layout.nodes[0].engine_url)
    repo, tag = ref.rsplit(":", 1)
    node1.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    for line in node1.api.push(repo, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise SystemExit(f"push of {ref} failed: {line['error']}")


def remove_everywhere(layout: ClusterLayout, ref: str) -> None:
    for n in layout.nodes:
        subprocess.run(["docker", "-H", n.engine_url, "rmi", ref], capture_output=True, check=False)


def timed_pull(ref: str, host: str | None = None) -> float:
    argv = ["docker", *(["-H", host] if host else []), "pull", ref]
    t = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - t


def timed_parallel(ref: str, layout: ClusterLayout) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(len(layout.nodes)) as pool:
        list(pool.map(lambda n: timed_pull(ref, n.engine_url), layout.nodes))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--name", default="", help="use this dev cluster (already up) instead of plbench")
    ap.add_argument("--root", default=str(ROOT))
    args = ap.parse_args()
    up = running(args.name, Path(args.root)) if args.name else bench_cluster(SPEC)
    with up as layout:
        ref = f"{layout.image_registry}/pull-bench:{args.mb}m"
        make_image(layout, ref, args.mb)
        node1 = layout.nodes[0].engine_url
        every, alone, together = [], [], []
        try:
            remove_everywhere(layout, ref)
            timed_pull(ref, node1)  # warm the registry's page cache once
            for _ in range(args.runs):
                remove_everywhere(layout, ref)
                every.append(timed_pull(ref))
                remove_everywhere(layout, ref)
                alone.append(timed_pull(ref, node1))
                remove_everywhere(layout, ref)
                together.append(timed_parallel(ref, layout))
        finally:
            remove_everywhere(layout, ref)
    m_every, m_alone = statistics.median(every), statistics.median(alone)
    n = len(layout.nodes)
    print(f"docker pull {args.mb} MB through the manager onto {n} nodes: median {m_every:.2f}s")
    print(f"docker pull {args.mb} MB straight to one node: median {m_alone:.2f}s")
    m_together = statistics.median(together)
    print(f"docker pull {args.mb} MB straight to {n} nodes at once (no manager): median {m_together:.2f}s")
    print(f"ratio {m_every / m_alone:.2f} over {args.runs} runs; goal <= 1.3")
    print(f"(the hardware's own ratio, {n} straight pulls at once ÷ one: {m_together / m_alone:.2f})")


if __name__ == "__main__":
    main()
