"""Agent figures: time to gather every fact (against Facter itself as the baseline, same run), the
latency from a sampled change to the registry, and the agent's CPU use at the default interval.

Brings up its own 1-node dev cluster (`agbench` on 10.99.10.0/24) and takes it down. Run as root:
`.venv/bin/python benchmarks/agent_facts.py [--cpu-seconds 30]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _bench import ROOT, bench_cluster, consul_py, join_token, pct

from shoal.agent.facts import host
from shoal.agent.loop import Agent, AgentConfig
from shoal.dev.layout import ClusterSpec

NAME, SUBNET = "agbench", "10.99.10.0/24"


STATE = Path(tempfile.mkdtemp(prefix="agbench-"))


def joined(layout, node: str) -> dict:
    """An agent's way in: a join token at the manager's join listener (secure), or the registry itself."""
    if not layout.secure:
        return {"manager": layout.registry_url}
    return {"manager": layout.join_url, "join_token": join_token(), "state_dir": STATE / node}


def gather_times(layout) -> None:
    node = layout.nodes[0]
    core = []
    for _ in range(200):
        t = time.perf_counter()
        host.gather()
        core.append(time.perf_counter() - t)
    (node.facts_dir / "rack.txt").write_text("rack=r1\n")
    (node.facts_dir / "zone.json").write_text('{"zone": "a"}')
    (node.facts_dir / "tier.sh").write_text("#!/bin/sh\necho tier=gold\n")
    (node.facts_dir / "tier.sh").chmod(0o755)

    async def full() -> list[float]:
        cfg = AgentConfig(
            **joined(layout, "bench"),
            node="bench",
            engine=f"unix://{node.engine_socket}",
            facts_dir=node.facts_dir,
        )
        out = []
        async with Agent(cfg) as a:
            for _ in range(50):
                out.append((await a.gather()).took)
        return out

    whole = asyncio.run(full())
    facter = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(["facter", "--json", "--show-legacy"], capture_output=True, check=False)
        facter.append(time.perf_counter() - t)
    f_med = statistics.median(facter)
    print(
        f"core facts (in-process): median {statistics.median(core) * 1000:.2f} ms, "
        f"p99 {pct(core, 99) * 1000:.2f} ms"
    )
    print(
        f"all sources (core + engine /info + facts.d .txt/.json/executable): median "
        f"{statistics.median(whole) * 1000:.1f} ms, p99 {pct(whole, 99) * 1000:.1f} ms (goal <= 50 ms)"
    )
    print(
        f"baseline `facter --json --show-legacy`: median {f_med * 1000:.0f} ms -> shoal all sources "
        f"{f_med / statistics.median(whole):.0f}x faster"
    )


def change_latency(layout) -> None:
    node = layout.nodes[0]
    c = consul_py()
    key = f"shoal/nodes/{node.name}/facts"
    lat = []
    index, _ = c.kv.get(key)
    for i in range(20):
        (node.facts_dir / "counter.txt").write_text(f"counter={i}\n")
        while True:
            index, entry = c.kv.get(key, index=index, wait="5s")
            seen = time.time()
            doc = json.loads(entry["Value"])
            if doc["facts"].get("counter") == str(i):
                lat.append(seen - doc["gathered_at"])
                break
    print(
        "change sampled -> readable in the registry (blocking query wakes): "
        f"p50 {pct(lat, 50) * 1000:.1f} ms, "
        f"p99 {pct(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms (goal <= 200 ms)"
    )


def cpu_use(layout, seconds: float) -> None:
    node = layout.nodes[0]
    argv = [
        sys.executable,
        "-m",
        "shoal",
        "agent",
        *(
            ("--manager", layout.join_url, "--join", join_token(), "--state-dir", str(STATE / "cpubench"))
            if layout.secure
            else ("--manager", layout.registry_url)
        ),
        "--node",
        "cpubench",
        "--engine",
        f"unix://{node.engine_socket}",
        "--facts-dir",
        str(node.facts_dir),
    ]  # default 5 s interval
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)  # past start-up (imports)
        ps = psutil.Process(proc.pid)
        c0, t0 = ps.cpu_times(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = ps.cpu_times(), time.monotonic()
        used = (c1.user - c0.user) + (c1.system - c0.system)
        print(
            f"agent CPU at the default 5 s interval: {used / (t1 - t0) * 100:.2f}% of one core "
            f"over {seconds:.0f}s "
            "(goal < 1%)"
        )
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-seconds", type=float, default=30.0)
    args = ap.parse_args()
    spec = ClusterSpec(name=NAME, nodes=1, subnet=SUBNET, root=ROOT, agent_interval=1.0)
    with bench_cluster(spec) as layout:
        gather_times(layout)
        change_latency(layout)
        cpu_use(layout, args.cpu_seconds)


if __name__ == "__main__":
    main()
