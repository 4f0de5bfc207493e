"""Security figures (issue 13): what mutual TLS costs a user, and how fast a node joins.

  tls   `docker run --rm busybox true` through the manager of a secure dev cluster (mutual TLS from the CLI
        to the manager and from the manager to the engines) against the same through an `--insecure` one,
        runs interleaved in one process; the ratio of medians (goal <= 1.05).
  join  `shoal agent --join TOKEN` started as a process until its first facts are readable in the registry
        (goal <= 2 s): the CA fetched and checked against the token's pin, a key and CSR made, the
        certificate signed, the node claimed, facts gathered and published; Python's start-up included.

Brings up `scbench` (10.99.15.0/24, secure) and `spbench` (10.99.16.0/24, --insecure) and takes them down.
Run as root: `.venv/bin/python benchmarks/security.py [--runs 20] [--joins 5] [--only tls|join]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import ROOT, bench_cluster, consul_py, join_token, pct

from shoal.dev.layout import ClusterSpec

SECURE = ClusterSpec(name="scbench", nodes=3, subnet="10.99.15.0/24", root=ROOT, agent_interval=1.0)
PLAIN = ClusterSpec(
    name="spbench", nodes=3, subnet="10.99.16.0/24", root=ROOT, agent_interval=1.0, secure=False
)


def _run(env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "busybox", "true"], env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def tls(runs: int) -> None:
    with bench_cluster(PLAIN):
        plain_env = dict(os.environ)
        with bench_cluster(SECURE):
            secure_env = dict(os.environ)
            for _ in range(3):
                _run(plain_env), _run(secure_env)
            plain, secure = [], []
            for _ in range(runs):
                plain.append(_run(plain_env))
                secure.append(_run(secure_env))
    p, s = statistics.median(plain), statistics.median(secure)
    print(
        f"tls: docker run --rm busybox true through the manager: plain median {p * 1000:.0f} ms, mutual TLS "
        f"{s * 1000:.0f} ms (p90 {pct(plain, 90) * 1000:.0f} / {pct(secure, 90) * 1000:.0f} ms); "
        f"ratio {s / p:.3f} (goal <= 1.05)"
    )


def join(joins: int) -> None:
    with bench_cluster(SECURE) as layout:
        c = consul_py()
        node = layout.nodes[0]
        took = []
        for i in range(joins):
            name = f"joinbench{i}"
            token = join_token()
            with tempfile.TemporaryDirectory() as state:
                t0 = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "shoal", "agent", "--manager", layout.join_url, "--join", token,
                     "--state-dir", str(Path(state)), "--node", name, "--interval", "5",
                     "--engine", f"unix://{node.engine_socket}", "--facts-dir", str(node.facts_dir)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    index = None
                    while True:
                        index, entry = c.kv.get(f"shoal/nodes/{name}/facts", index=index, wait="2s")
                        if entry is not None:
                            took.append(time.perf_counter() - t0)
                            break
                        assert proc.poll() is None, f"the agent exited {proc.returncode}"
                finally:
                    proc.terminate()
                    proc.wait(15)
    print(
        f"join: shoal agent --join, start to first publish: median {statistics.median(took) * 1000:.0f} ms, "
        f"max {max(took) * 1000:.0f} ms over {joins} (goal <= 2000 ms)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--joins", type=int, default=5)
    ap.add_argument("--only", choices=["tls", "join"], action="append")
    args = ap.parse_args()
    for section in args.only or ["tls", "join"]:
        if section == "tls":
            tls(args.runs)
        else:
            join(args.joins)


if __name__ == "__main__":
    main()
