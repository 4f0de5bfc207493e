"""The dashboard's answer at 1,000 simulated nodes x 30 containers (issue 17: "the dashboard stays usable at
1,000 nodes, overview answer <= 200 ms"): what one poll of GET /shoal/v1/overview costs the manager, paged
(one page of 50 node cards under a summary of every node) beside the old shape (every node's card with
every container row and every check) in the same run, as a ratio.

Each poll is timed whole, as `System.overview` does it after the registry answered: each engine's
containers, states and counts handed over as the cache holds them (real `Engine` objects, 1% of them with
a changed list each poll, so their counts are taken again), the pure `shoal.manager.overview.overview`,
then `json.dumps` as the handler replies. Nodes come from `shoal.sim.nodes` through
`shoal.cluster.nodes.node_state` (as benchmarks/scheduler.py); containers are plain `docker ps` rows with
inspect's State beside them, one agent check a node (2% critical), 20 datasets, 30 decisions. The old
shape also merges every engine's states into one dict per poll, as the old `System.overview` did. Not in
here: the registry's round trips (checks, mounts, replicas, moves), the same for both shapes (decoding the
checks answer is timed on its own line). One core (this process), well under a minute.
Run: `.venv/bin/python benchmarks/overview.py [--nodes 1000] [--containers 30]`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from typing import Any, cast

import aiohttp
from _bench import pct

from shoal.cluster.engine import Engine
from shoal.cluster.nodes import node_state
from shoal.cluster.status import RunState
from shoal.data.model import Dataset
from shoal.manager.overview import FAILING_CHECKS, Page, overview
from shoal.scheduler.model import NodeState
from shoal.sim.nodes import documents

GOAL_MS = 200.0


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".123456789Z"


def build(n: int, per_node: int, now: float) -> tuple[list[NodeState], list[Engine], list[dict[str, Any]]]:
    """n nodes, each with an engine holding `per_node` containers (a tenth exited) and their states, and
    one agent check a node."""
    rng = random.Random(7)
    nodes = [node_state(f, i, h) for f, i, h in documents(n, now)]
    engines, checks = [], []
    for node in nodes:
        e = Engine(node.name, f"tcp://{node.address or '10.0.0.1'}:2376", cast(aiohttp.ClientSession, None))
        for k in range(per_node):
            cid = uuid.uuid4().hex + uuid.uuid4().hex
            up = k % 10 != 9
            started = now - rng.uniform(60, 86400)
            e.containers.append(
                {
                    "Id": cid,
                    "Names": [f"/app{k}-{node.name}"],
                    "Image": "busybox:latest",
                    "ImageID": "sha256:" + "ab" * 32,
                    "Command": "sleep 3600",
                    "Created": int(started),
                    "Ports": [],
                    "Labels": {"com.example.app": f"app{k}"},
                    "State": "running" if up else "exited",
                    "Status": "Up 5 minutes" if up else "Exited (0) 2 minutes ago",
                    "HostConfig": {"NetworkMode": "bridge"},
                    "Mounts": [],
                }
            )
            e.states[cid] = RunState.of(
                {
                    "Status": "running" if up else "exited",
                    "Running": up,
                    "ExitCode": 0,
                    "StartedAt": _iso(started),
                    "FinishedAt": "0001-01-01T00:00:00Z" if up else _iso(started + 30),
                }
            )
        e.version = 1
        engines.append(e)
        status = "critical" if rng.random() < 0.02 else "passing"
        checks.append(
            {
                "Node": node.name,
                "CheckID": "shoal-agent",
                "Name": "shoal agent publishing facts",
                "Status": status,
                "Notes": "",
                "Output": "facts published" if status == "passing" else "TTL expired",
                "ServiceID": "",
                "ServiceName": "",
                "ServiceTags": [],
                "Type": "ttl",
                "CreateIndex": 10,
                "ModifyIndex": 20,
            }
        )
    return nodes, engines, checks


def poll(
    nodes: list[NodeState],
    engines: list[Engine],
    checks: list[dict[str, Any]],
    datasets: list[Dataset],
    decisions: list[dict[str, Any]],
    now: float,
    page: Page,
    old: bool,
) -> bytes:
    """One answer, as System.overview and the handler build it (the old shape: every card on one page)."""
    if old:
        merged = {cid: s for e in engines for cid, s in e.states.items()}  # the old per-poll merge
        assert merged
    doc = overview(
        list(nodes),
        {e.node: e.containers for e in engines},
        {e.node: e.states for e in engines},
        datasets,
        {},
        checks,
        decisions,
        now,
        30.0,
        draining=frozenset({nodes[3].name}),
        down={nodes[5].name: now - 12},
        counts={e.node: e.counts() for e in engines},
        page=page,
    )
    return json.dumps(doc).encode()


def measure(runs: int, once: Any, engines: list[Engine], rng: random.Random) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(runs):
        for e in rng.sample(engines, max(1, len(engines) // 100)):  # 1% of the lists changed since
            e.version += 1
        t0 = time.perf_counter()
        size = len(once())
        times.append((time.perf_counter() - t0) * 1000)
    return times, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--containers", type=int, default=30)
    ap.add_argument("--runs", type=int, default=200, help="polls timed for each paged answer")
    ap.add_argument("--old-runs", type=int, default=25, help="polls timed for the old shape")
    args = ap.parse_args()
    now = time.time()
    nodes, engines, checks = build(args.nodes, args.containers, now)
    ids = [n.name for n in nodes[:20]]  # the nodes holding the 20 datasets
    datasets = [Dataset(str(uuid.uuid4()), f"db{i}", "gold", h, created=now - i) for i, h in enumerate(ids)]
    decisions = [{"name": f"c{i}", "placement": {"node": nodes[i].name, "steps": []}} for i in range(30)]
    rng = random.Random(1)
    total = sum(len(e.containers) for e in engines)
    failing = sum(c["Status"] != "passing" for c in checks)
    print(
        f"{args.nodes:,} nodes x {args.containers} containers = {total:,} containers, {len(checks):,} checks "
        f"({failing} critical; at most {FAILING_CHECKS} failing ones listed)"
    )

    def run(label: str, page: Page, old: bool, runs: int) -> float:
        def once() -> bytes:
            return poll(nodes, engines, checks, datasets, decisions, now, page, old)

        once()  # warm, as a running manager is
        times, size = measure(runs, once, engines, rng)
        med = statistics.median(times)
        print(f"  {label:<44} median {med:7.2f} ms  p99 {pct(times, 99):7.2f} ms  {size / 1024:8.0f} KiB")
        return med

    old = run(f"old shape (all {args.nodes:,} cards)", Page(1, args.nodes), True, args.old_runs)
    first = run("paged: page 1 of 50 cards (problems first)", Page(), False, args.runs)
    run("paged: last page", Page(10**9), False, args.runs)
    run("paged: 200 cards (the most a page holds)", Page(1, 200), False, args.runs)
    run('paged: q="sim001" (a name filter)', Page(q="sim001"), False, args.runs)
    raw = json.dumps(checks).encode()
    t = []
    for _ in range(50):
        t0 = time.perf_counter()
        json.loads(raw)
        t.append((time.perf_counter() - t0) * 1000)
    print(f"  {'(decoding the registry checks answer)':<44} median {statistics.median(t):7.2f} ms")
    verdict = "meets" if first <= GOAL_MS else "misses"
    print(
        f"page 1 answers in {first:.2f} ms: {old / first:.0f}x faster than the old shape ({old:.1f} ms); "
        f"{verdict} the goal <= {GOAL_MS:.0f} ms"
    )


if __name__ == "__main__":
    main()
