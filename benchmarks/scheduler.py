"""Scheduler decisions per second on 1,000 and 10,000 simulated nodes (~40 facts each, fed through
`shoal.cluster.nodes.node_state` like real nodes), a request with 4 constraints (==, regex, numeric,
label) and spread; each placement is consumed (`shoal.scheduler.consume`: the chosen node gains the
container and its memory), so the next decision sees it. One core (this process).

Baseline in the same run: the same decisions by a plain loop over nodes (the per-node meaning,
no index), on the 1,000-node cluster.

Then the pathological affinity of issue 12, `affinity:container==/^(\\w|\\w)+x$/` (exponential for a
backtracking engine), against 1,000 nodes x 30 containers: the time of one placement with the
expression new to the index (cold: every node's container names and ids matched, one RE2 call per
block of 32 nodes), and of the next placements after a container was added (warm: only the changed
node is matched again).
Run: `.venv/bin/python benchmarks/scheduler.py`.
"""

from __future__ import annotations

import secrets
import statistics
import time

from shoal.cluster.nodes import node_state
from shoal.scheduler.consume import consume
from shoal.scheduler.expr import parse
from shoal.scheduler.filters import FACT_TTL
from shoal.scheduler.index import ClusterIndex, candidates, number
from shoal.scheduler.model import ContainerRef, ContainerSpec
from shoal.scheduler.place import place
from shoal.sim.nodes import documents

EXPRS = ("architecture==amd64", "operatingsystem==/Deb|Ubu/", "system_overload_10min<50", "disk==ssd")
MEMORY = 64 << 20
PATHOLOGICAL = r"container==/^(\w|\w)+x$/"


def build(n: int, now: float, containers: int = 0) -> ClusterIndex:
    def refs(i: int) -> list[ContainerRef]:
        return [ContainerRef(secrets.token_hex(32), f"app{i}-web-{k}", "busybox") for k in range(containers)]

    return ClusterIndex(node_state(f, i, h, refs(k)) for k, (f, i, h) in enumerate(documents(n, now)))


def take(ix: ClusterIndex, spec: ContainerSpec, name: str, k: int) -> None:
    ix.upsert(consume(ix.nodes[ix.pos[name]], spec, ContainerRef(id=f"c{k}", name=f"c{k}")))


def indexed(ix: ClusterIndex, spec: ContainerSpec, now: float, count: int, rounds: int = 5) -> float:
    """Decisions per second: the median of `rounds` consecutive rounds of count/rounds decisions (one
    round's rate is at the mercy of whatever else the machine runs; the median of five is not)."""
    place(spec, ix, now)  # warm the expression caches, as a running manager would have
    rates, k = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(count // rounds):
            p = place(spec, ix, now)
            assert p.node is not None, p.error()
            take(ix, spec, p.node, k)
            k += 1
        rates.append((count // rounds) / (time.perf_counter() - t0))
    return statistics.median(rates)


def naive(ix: ClusterIndex, spec: ContainerSpec, now: float, count: int, rounds: int = 5) -> float:
    """The textbook loop: every node, every filter, every decision (median of rounds, as `indexed`)."""
    rates = []
    for r in range(rounds):
        t0 = time.perf_counter()
        _naive_round(ix, spec, now, range(r * count // rounds, (r + 1) * count // rounds))
        rates.append((count // rounds) / (time.perf_counter() - t0))
    return statistics.median(rates)


def _naive_round(ix: ClusterIndex, spec: ContainerSpec, now: float, ks: range) -> None:
    for k in ks:
        best, best_key = None, None
        for node in ix.nodes:
            if node.health != "passing" or now - node.gathered_at > FACT_TTL:
                continue
            ok = True
            for e in spec.constraints:
                if e.op in ("<", "<=", ">", ">="):
                    v = number(node, e.key)
                    ok = v is not None and e.compare(v)
                else:
                    ok = e.holds(candidates(node, e.key))
                if not ok:
                    break
            if not ok or node.memory - node.reserved_memory < spec.memory:
                continue
            key = (max(node.reserved_memory / node.memory, 0), len(node.containers))
            if best_key is None or key < best_key:
                best, best_key = node, key
        assert best is not None
        take(ix, spec, best.name, k)


def pathological(now: float) -> None:
    ix = build(1000, now, containers=30)
    ms = []
    for k in range(1, 21):  # the same shape, a new expression each time: every run is cold
        spec = ContainerSpec(affinities=(parse("affinity", PATHOLOGICAL.replace("x$", "x" * k + "$")),))
        t0 = time.perf_counter()
        p = place(spec, ix, now)
        ms.append((time.perf_counter() - t0) * 1000)
        assert p.node is None and p.rejected_total == 1000
    spec = ContainerSpec(affinities=(parse("affinity", "container!=" + PATHOLOGICAL[len("container==") :]),))
    t0 = time.perf_counter()
    first = place(spec, ix, now)
    cold = (time.perf_counter() - t0) * 1000
    warm = []
    for k in range(50):
        assert first.node is not None
        take(ix, spec, first.node, k)
        t0 = time.perf_counter()
        first = place(spec, ix, now)
        warm.append((time.perf_counter() - t0) * 1000)
    print(
        f"affinity:{PATHOLOGICAL}, 1,000 nodes x 30 containers: cold {statistics.median(ms):.1f} ms median "
        f"(max {max(ms):.1f} ms over 20 new expressions; {cold:.1f} ms for !=), "
        f"warm {statistics.median(warm):.2f} ms median after each placement (goal < 10 ms)"
    )


def main() -> None:
    now = time.time()
    spec = ContainerSpec(constraints=tuple(parse("constraint", e) for e in EXPRS), memory=MEMORY)
    print(f"request: {', '.join(EXPRS)}; -m 64m; spread")
    base = naive(build(1000, now), spec, now, 200)
    print(f"baseline plain loop, 1,000 nodes: {base:,.0f} decisions/s")
    for n, goal in ((1000, 5000), (10_000, 1000)):
        ix = build(n, now)
        rate = indexed(ix, spec, now, 3000 if n == 1000 else 1000)
        print(
            f"shoal, {n:,} nodes: {rate:,.0f} decisions/s ({rate / base:.0f}x the plain loop at 1,000 nodes; "
            f"goal >= {goal:,}/s)"
        )
    pathological(now)


if __name__ == "__main__":
    main()
