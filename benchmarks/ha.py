"""Several managers (issue 16's figures): 3 managers over a 3-member etcd, a dev cluster of its own
(10.99.22.0/24).

1. The leader killed as a whole host (`shoal dev manager kill N`: its manager and its etcd member) to the
   first successful `docker run --rm busybox true` through a surviving manager: median of --rounds
   (goal <= 2 s), split into kill -> a survivor says it is primary, and the rest. During each round a
   `docker ps -a` loop against the other survivor counts failed reads (goal 0), and a `docker run -d`
   loop against it counts writes refused and writes acknowledged but lost (goal 0 lost).
2. `docker run --rm busybox true` through a follower / through the leader, median of --pairs pairs,
   each starting with the other side in turn (goal <= 1.05).
The etcd ratio (registry PUT/s over HTTP / etcd's own over gRPC) is benchmarks/etcd_ratio.py's.

Run it alone (the machine has 2 shared cores): `python benchmarks/ha.py [--rounds 5] [--pairs 20]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._bench import ROOT, bench_cluster
from shoal.dev import controls
from shoal.dev.layout import ClusterSpec

NAME, SUBNET = "habench", "10.99.22.0/24"


def docker(host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def role(host: str) -> str:
    try:
        out = docker(host, "info", timeout=10).stdout
    except subprocess.TimeoutExpired:
        return ""
    return out.split("Role: ", 1)[1].split("\n", 1)[0].strip() if "Role: " in out else ""


def primary(hosts: dict[int, str], within: float = 60.0) -> int:
    end = time.monotonic() + within
    while time.monotonic() < end:
        leaders = [n for n, h in hosts.items() if role(h) == "primary"]
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.05)
    raise SystemExit(f"no single primary among {sorted(hosts)} within {within:.0f}s")


def kill_round(managers: dict[int, str], root: Path, i: int) -> dict[str, float]:
    leader = primary(managers)
    rest = {n: h for n, h in managers.items() if n != leader}
    (runner, runner_host), (watcher, watcher_host) = sorted(rest.items())
    stop = threading.Event()
    failed_reads, reads, acked, refused = [0], [0], [], [0]

    def read() -> None:
        while not stop.is_set():
            reads[0] += 1
            if docker(watcher_host, "ps", "-a", timeout=30).returncode != 0:
                failed_reads[0] += 1
            time.sleep(0.1)

    def write() -> None:
        k = 0
        while not stop.is_set():
            name = f"habench{i}x{k}"
            r = docker(watcher_host, "run", "-d", "--name", name, "busybox", "true")
            if r.returncode == 0:
                acked.append(name)
            else:
                refused[0] += 1
            k += 1

    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    controls.manager_kill(NAME, root, leader)
    elected = 0.0
    while True:  # the first create through a survivor that succeeds
        if not elected and "primary" in (role(runner_host), role(watcher_host)):
            elected = time.monotonic() - t0
        if docker(runner_host, "run", "--rm", "busybox", "true", timeout=30).returncode == 0:
            first_run = time.monotonic() - t0
            break
    elected = elected or first_run
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(120)
    listed = docker(
        watcher_host, "ps", "-a", "--filter", f"name=habench{i}x", "--format", "{{.Names}}"
    ).stdout.split()
    names = [n.split("/", 1)[-1] for n in listed]
    lost = len(set(acked) - set(names))
    twice = len(names) - len(set(names))
    controls.manager_start(NAME, root, leader)
    primary(managers)
    if names:
        docker(watcher_host, "rm", "-f", *names, timeout=120)
    return {
        "first_run": first_run,
        "elected": elected,
        "reads": reads[0],
        "failed_reads": failed_reads[0],
        "acked": len(acked),
        "refused": refused[0],
        "lost": lost,
        "twice": twice,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=20)
    a = ap.parse_args()
    root = ROOT.parent / "habench"
    spec = ClusterSpec(name=NAME, nodes=2, subnet=SUBNET, root=root, agent_interval=1.0, managers=3)
    with bench_cluster(spec):
        hosts = os.environ["SHOAL_MANAGERS"].split(",")
        managers = {n + 1: h for n, h in enumerate(hosts)}
        docker(hosts[0], "run", "--rm", "busybox", "true")  # images in place, caches warm

        leader = primary(managers)
        follower = next(n for n in managers if n != leader)
        ratios, took = [], {"follower": [], "leader": []}
        for k in range(a.pairs):
            # each pair in turn starts with the other one: the second run of a pair finds the first's
            # `--rm` removal and its events still going on, which always favoured one side
            order = ("follower", "leader") if k % 2 == 0 else ("leader", "follower")
            for who in order:
                t0 = time.perf_counter()
                docker(managers[follower if who == "follower" else leader], "run", "--rm", "busybox", "true")
                took[who].append(time.perf_counter() - t0)
            ratios.append(took["follower"][-1] / took["leader"][-1])
        f_ms, l_ms = (statistics.median(took[w]) * 1e3 for w in ("follower", "leader"))
        print(f"docker run via a follower / via the leader: median {statistics.median(ratios):.3f} "
              f"over {a.pairs} pairs, alternating which goes first (goal <= 1.05); medians "
              f"{f_ms:.0f} / {l_ms:.0f} ms")  # fmt: skip

        if not a.rounds:
            return
        rounds = []
        for i in range(a.rounds):
            r = kill_round(managers, root, i)
            rounds.append(r)
            print(
                f"round {i + 1}: elected {r['elected']:.2f}s, first docker run {r['first_run']:.2f}s; "
                f"reads {r['failed_reads']}/{r['reads']} failed; creates {r['acked']} acknowledged, "
                f"{r['refused']} refused, {r['lost']} lost, {r['twice']} twice"
            )
        med = statistics.median(r["first_run"] for r in rounds)
        el = statistics.median(r["elected"] for r in rounds)
        print(f"leader kill -> first docker run through a survivor: median {med:.2f}s over {a.rounds} "
              f"(goal <= 2 s); to a new primary {el:.2f}s")  # fmt: skip
        lost, twice = sum(r["lost"] for r in rounds), sum(r["twice"] for r in rounds)
        failed = sum(r["failed_reads"] for r in rounds)
        print(
            f"failed reads {failed} (goal 0); acknowledged creates lost {lost} (goal 0); "
            f"created twice {twice}"
        )


if __name__ == "__main__":
    main()
