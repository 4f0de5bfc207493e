"""The manager's safety figures (issue 12), printed by benchmarks/safety.py:

(1) the pathological regex `affinity:container==/^(\\w|\\w)+x$/` placed over 1,000 nodes x 30 containers
    with 40-character names (goal < 10 ms; a backtracking engine takes ~2^40 steps per name);
(2) `docker ps` through the manager while one node's engine is SIGSTOPped (goal <= 200 ms), and
    `docker run --rm` on the healthy nodes while it hangs / before it hung (goal <= 1.5);
(3) the manager's RSS growth while a client stalls on `docker logs -f` of a container printing 100 MB
    (goal <= 20 MB);
(4) the manager fuzzer's inputs per endpoint group and the 5xx seen (goal 0).

The cluster (`sfbench` on 10.99.13.0/24) is brought up and taken down here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _bench import ROOT, bench_cluster, pct

from shoal.cluster.nodes import node_state
from shoal.dev.layout import ClusterSpec
from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec
from shoal.scheduler.place import place
from shoal.sim.nodes import documents

NAME, SUBNET = "sfbench", "10.99.13.0/24"
PATHOLOGICAL = r"/^(\w|\w)+x$/"
WRITER = "sleep 1; head -c 100000000 /dev/zero | tr '\\0' x; sleep 600"  # 100 MB of log, then quiet


def regex_placement(nodes: int = 1000, per_node: int = 30) -> None:
    now = time.time()
    ix = ClusterIndex()
    for i, (facts, info) in enumerate(documents(nodes, now)):
        refs = [ContainerRef(f"{i:06d}{j:058d}", "a" * 38 + f"{j:02d}", "busybox") for j in range(per_node)]
        ix.upsert(node_state(facts, info, "passing", refs))
    spec = ContainerSpec(image="busybox", affinities=(parse("affinity", f"container=={PATHOLOGICAL}"),))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        p = place(spec, ix, now)
        times.append(time.perf_counter() - t0)
    assert p.node is None
    print(
        f"(1) {PATHOLOGICAL} over {nodes} nodes x {per_node} containers: placement median "
        f"{statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms (goal < 10 ms)"
    )


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def hung_node(manager: str, engine_pid: int) -> None:
    dk = ["docker", "-H", manager]
    run = [*dk, "run", "--rm", "-e", "constraint:node!=node3", "busybox", "true"]
    for _ in range(3):
        _timed(run)
    before = [_timed(run) for _ in range(10)]
    victim = [
        *dk,
        "run",
        "-d",
        "--name",
        "sf-victim",
        "-e",
        "constraint:node==node3",
        "busybox",
        "sleep",
        "600",
    ]
    subprocess.run(victim, check=True, capture_output=True)
    time.sleep(1.0)
    os.kill(engine_pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        while "Host Down" not in subprocess.run([*dk, "ps"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the manager never marked node3 down"
            time.sleep(0.2)
        ps = [_timed([*dk, "ps", "-a"]) for _ in range(30)]
        during = [_timed(run) for _ in range(10)]
    finally:
        os.kill(engine_pid, signal.SIGCONT)
    ratio = statistics.median(during) / statistics.median(before)
    print(
        f"(2) node3 SIGSTOPped: docker ps -a p50 {pct(ps, 50) * 1000:.0f} ms, "
        f"p99 {pct(ps, 99) * 1000:.0f} ms "
        f"(goal <= 200 ms); docker run --rm on the others {statistics.median(during) * 1000:.0f} ms vs "
        f"{statistics.median(before) * 1000:.0f} ms before: {ratio:.2f}x (goal <= 1.5)"
    )


def stalled_logs(manager: str, manager_pid: int) -> None:
    """A client asks for `docker logs -f` and reads nothing while the container writes 100 MB: the manager
    relays only as fast as the client reads, so its memory stays flat."""
    dk = ["docker", "-H", manager]
    cid = subprocess.run(
        [*dk, "run", "-d", "busybox", "sh", "-c", WRITER],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    log_path = Path(
        subprocess.run(
            [*dk, "inspect", "-f", "{{.LogPath}}", cid], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    proc = psutil.Process(manager_pid)
    rss0 = peak = proc.memory_info().rss
    host, port = manager.removeprefix("tcp://").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.connect((host, int(port)))
    s.sendall(f"GET /v1.41/containers/{cid}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log_path.exists() or log_path.stat().st_size < 100_000_000):
        time.sleep(0.5)
        peak = max(peak, proc.memory_info().rss)
    for _ in range(10):  # and a while after, as the relay would catch up if it buffered
        time.sleep(0.5)
        peak = max(peak, proc.memory_info().rss)
    written = log_path.stat().st_size if log_path.exists() else 0
    s.close()
    subprocess.run([*dk, "rm", "-f", cid], capture_output=True)
    print(
        f"(3) a client stalled on docker logs -f while the container wrote {written / 1e6:.0f} MB of log: "
        "manager "
        f"RSS {rss0 >> 20} MiB -> peak {peak >> 20} MiB, +{(peak - rss0) / (1 << 20):.1f} MiB (goal <= 20 MB)"
    )


def fuzz_counts(cluster_env: dict[str, str], examples: int) -> None:
    report = Path(tempfile.mkdtemp()) / "fuzz.json"
    env = {
        **os.environ,
        **cluster_env,
        "SHOAL_FUZZ_EXAMPLES": str(examples),
        "SHOAL_FUZZ_REPORT": str(report),
    }
    here = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_manager_fuzz.py"],
        cwd=here, env=env, capture_output=True, text=True,
    )  # fmt: skip
    counts = json.loads(report.read_text()) if report.exists() else {}
    fivexx = "5xx" in proc.stdout or proc.returncode != 0
    print(
        "(4) manager fuzzer: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; {'FAILURES (see pytest output)' if fivexx else '0 5xx, nothing changed'}"
    )
    if proc.returncode != 0:
        print(proc.stdout[-3000:])


def main() -> None:
    regex_placement()
    spec = ClusterSpec(name=NAME, nodes=3, subnet=SUBNET, root=ROOT, agent_interval=1.0)
    with bench_cluster(spec) as layout:
        st = json.loads(layout.state_file.read_text())
        manager = layout.manager_url.replace("http://", "tcp://")
        hung_node(manager, st["pids"]["node3"]["engine"])
        stalled_logs(manager, st["pids"][""]["manager"])
    fuzz_counts(
        {"SHOAL_TEST_CLUSTER": "sfz", "SHOAL_TEST_SUBNET": "10.99.14.0/24", "SHOAL_TEST_ROOT": str(ROOT)},
        1000,
    )


if __name__ == "__main__":
    main()
