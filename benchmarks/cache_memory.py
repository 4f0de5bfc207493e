"""What the manager's cache holds for each listed container: the engines' lists as decoded, against the
same lists with their short strings shared (shoal.cluster.shared), in the same process.

The lists are the simulated engines' own answers to GET /containers/json?all=1 (the shape the contract
test holds to a real dockerd's), 30 running containers on each of 1,000 nodes by default. Prints the bytes
a container costs each way (tracemalloc's count of what stays allocated), their ratio, and what sharing
costs a newly listed container.

    python benchmarks/cache_memory.py [--nodes 1000] [--per-node 30]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc
from typing import Any

from shoal.cluster.shared import SharedStrings
from shoal.sim import engine_shapes as shapes
from shoal.sim.engine_model import NodeSpec, now_ns
from shoal.sim.engine_node import NodeEngine
from shoal.sim.engines import node_names


async def lists(nodes: int, per_node: int) -> list[bytes]:
    """Each simulated node's answer to `docker ps -a`, as the engine sends it (in a loop: a started
    container's lifetime is a timer)."""
    out = []
    for name in node_names(nodes):
        node = NodeEngine(NodeSpec(name))
        for _ in range(per_node):
            c = node.create("", {"Image": "busybox", "Cmd": ["sleep", "3600"], "Labels": {"tier": "web"}})
            node.start(c.id)
        now = now_ns()
        out.append(b"[" + b",".join(shapes.summary_json(node, c, now) for c in node.list(True, 0, {})) + b"]")
    return out


def held(bodies: list[bytes], strings: SharedStrings | None) -> tuple[int, float, list[Any]]:
    """Bytes that stay allocated for the decoded lists, and the seconds sharing took."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept: list[Any] = []
    spent = 0.0
    for body in bodies:
        docs = json.loads(body)
        if strings is not None:
            t = time.perf_counter()
            docs = [strings.share(d) for d in docs]
            spent += time.perf_counter() - t
        kept.append(docs)
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return size, spent, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--per-node", type=int, default=30)
    a = ap.parse_args()
    bodies = asyncio.run(lists(a.nodes, a.per_node))
    n = a.nodes * a.per_node
    plain, _, kept = held(bodies, None)
    del kept
    strings = SharedStrings()
    shared, spent, kept = held(bodies, strings)
    assert kept == [json.loads(b) for b in bodies]  # the same documents, only fewer strings
    print(
        f"{n} containers ({a.nodes} nodes x {a.per_node}), {sum(map(len, bodies)) / n:.0f} bytes of JSON each"
    )
    print(f"  as decoded:            {plain / n:7.0f} bytes a container, {plain / 2**20:6.1f} MB in all")
    print(f"  short strings shared:  {shared / n:7.0f} bytes a container, {shared / 2**20:6.1f} MB in all "
          f"(ratio {shared / plain:.2f}; {len(strings)} strings kept)")  # fmt: skip
    print(f"  sharing a newly listed container: {spent / n * 1e6:.1f} us")


if __name__ == "__main__":
    main()
