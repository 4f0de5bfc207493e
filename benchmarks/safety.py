r"""Safety figures (issue 12): how much bad input shoal takes without a 5xx, and how bounded its work stays.

Sections, each printing its own figures against its goal:
  registry  the fuzzers' counts against a real `shoal registry` (tests/registry/test_fuzz.py): inputs
            tried per store and endpoint group, inputs accepted and refused, Consul's own documented
            500s (unknown session, node, datacenter), and unexpected 5xx (goal: 0); DNS packets sent.
  regex     `affinity:container==/^(\w|\w)+x$/` placed over 1,000 nodes x 30 containers with 40-character
            names (goal < 10 ms; a backtracking engine takes ~2^40 steps per name): the scheduler alone.
  manager   on a 3-node dev cluster of its own (`sfbench`, 10.99.13.0/24; --name, --subnet, --root for
            another), in parts (--parts, all by default):
            pattern  the same pattern placed through the manager again and again while ~1,000 containers
                     (--containers; created, not started) are on the nodes: `docker ps` p50/p99/max
                     during, beside its p50 before (goal <= 100 ms);
            sigstop  `docker ps` while node3's engine is SIGSTOPped (goal <= 200 ms) and `docker run --rm`
                     on the others during / before (goal <= 1.5);
            dropped  the same while node3's netns drops every packet to its engine port (iptables DROP);
            logs     the manager's RSS growth while a client stalls on `docker logs -f` of a container
                     printing 100 MB (goal <= 20 MB).
  fuzz      the manager's and the volume plugin's fuzzers (tests/e2e/test_manager_fuzz.py,
            test_plugin_fuzz.py) on a cluster of their own (`sfz`, 10.99.14.0/24): inputs per endpoint
            group, 5xx and state changes seen (goal 0).

Run: `.venv/bin/python benchmarks/safety.py [--examples 2000] [--only registry] [--parts pattern,dropped]`.
--examples is the hypothesis budget per fuzzer (SHOAL_FUZZ_EXAMPLES; the test suite's own default is a few
hundred).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from _bench import ROOT as BENCH_ROOT
from _bench import bench_cluster, docker_py, pct

from shoal.cluster.nodes import node_state
from shoal.dev.layout import ClusterLayout, ClusterSpec
from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec
from shoal.scheduler.place import place
from shoal.sim.nodes import documents

ROOT = Path(__file__).resolve().parent.parent
NAME, SUBNET = "sfbench", "10.99.13.0/24"
PATHOLOGICAL = r"/^(\w|\w)+x$/"
PATTERN_ENV = f"affinity:container=={PATHOLOGICAL}"
PARTS = ("pattern", "sigstop", "dropped", "logs")
WRITER = "sleep 1; head -c 100000000 /dev/zero | tr '\\0' x; sleep 600"  # 100 MB of log, then quiet


# --- registry ------------------------------------------------------------------------------------------


def registry(args: argparse.Namespace) -> bool:
    """Runs the registry fuzzers at --examples per fuzzer and prints their counts; True if none failed."""
    examples = args.examples
    report = Path(tempfile.mkdtemp()) / "fuzz.json"
    env = {**os.environ, "SHOAL_FUZZ_EXAMPLES": str(examples), "SHOAL_FUZZ_REPORT": str(report)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/registry/test_fuzz.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - t0
    counts: dict[str, dict[str, int]] = json.loads(report.read_text()) if report.exists() else {}
    print(f"registry fuzzing: {examples} examples per fuzzer, {took:.0f} s, pytest exit {proc.returncode}")
    print(f"  {'store/group':<16} {'inputs':>8} {'accepted':>9} {'refused':>8} {'consul 500':>11} {'5xx':>5}")
    total_inputs = total_5xx = 0
    for name, c in counts.items():
        total_inputs += c.get("inputs", 0)
        total_5xx += c.get("unexpected_5xx", 0)
        if name.endswith("/dns"):
            print(f"  {name:<16} {c.get('inputs', 0):>8} malformed UDP/TCP packets; dig answered after them")
            continue
        print(
            f"  {name:<16} {c.get('inputs', 0):>8} {c.get('accepted', 0):>9} {c.get('errors', 0):>8} "
            f"{c.get('consul_500', 0):>11} {c.get('unexpected_5xx', 0):>5}"
        )
    print(f"  total {total_inputs} inputs, unexpected 5xx: {total_5xx} (goal 0)")
    if proc.returncode != 0:
        print("  failures:\n" + "\n".join("    " + line for line in proc.stdout.splitlines()[-30:]))
    return proc.returncode == 0 and total_5xx == 0


def regex_placement(nodes: int = 1000, per_node: int = 30) -> None:
    now = time.time()
    ix = ClusterIndex()
    for i, (facts, info, *_) in enumerate(documents(nodes, now)):
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


def _seeded(manager: str, prefix: str) -> int:
    out = subprocess.run(
        ["docker", "-H", manager, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout
    return sum(n.split("/", 1)[-1].startswith(prefix) for n in out.split())


def ps_under_pattern(manager: str, layout: ClusterLayout, count: int) -> None:
    """`docker ps` through the manager while the pathological pattern is placed there again and again, with
    `count` containers (created straight on the engines, not started) whose 40-character names it would
    backtrack on: the placement must never hold the event loop ps needs."""
    prefix = f"sfrx{uuid.uuid4().hex[:6]}"
    apis = [docker_py(n.engine_url).api for n in layout.nodes]
    dk = ["docker", "-H", manager]
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(4 * len(apis)) as pool:
            names = [f"{prefix}{i:04d}".ljust(40, "a") for i in range(count)]
            list(pool.map(lambda i: apis[i % len(apis)].create_container("busybox", "true", name=names[i]),
                          range(count)))  # fmt: skip
        made = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while _seeded(manager, prefix) != count:
            assert time.monotonic() < deadline, f"the manager never listed all {count} containers"
            time.sleep(0.5)
        before = [_timed([*dk, "ps"]) for _ in range(20)]
        tally, lock, stop = {"placed": 0, "refused": 0}, threading.Lock(), threading.Event()

        def fire() -> None:
            api = docker_py().api
            while not stop.is_set():
                try:
                    api.create_container("busybox", "true", environment=[PATTERN_ENV])
                    refused = False
                except Exception as e:  # the refusal, in Docker's error form
                    refused = "Unable to find a node that satisfies" in str(e) and PATTERN_ENV in str(e)
                with lock:
                    tally["placed"] += 1
                    tally["refused"] += refused

        firing = [threading.Thread(target=fire) for _ in range(2)]
        for t in firing:
            t.start()
        try:
            during = [_timed([*dk, "ps"]) for _ in range(100)]
        finally:
            stop.set()
            for t in firing:
                t.join()
    finally:
        for api in apis:
            ids = [c["Id"] for c in api.containers(all=True, filters={"name": prefix})]
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda cid, api=api: api.remove_container(cid, force=True), ids))
    print(
        f"(1b) {PATTERN_ENV} placed through the manager {tally['placed']} times "
        f"({tally['refused']} refused naming it) "
        f"against {count} containers (created in {made:.0f} s): "
        f"docker ps p50 {pct(during, 50) * 1000:.0f} ms, p99 {pct(during, 99) * 1000:.0f} ms, "
        f"max {max(during) * 1000:.0f} ms (goal <= 100 ms); p50 {pct(before, 50) * 1000:.0f} ms before"
    )


@contextlib.contextmanager
def _sigstopped(layout: ClusterLayout, engine_pid: int) -> Iterator[None]:
    os.kill(engine_pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(engine_pid, signal.SIGCONT)


@contextlib.contextmanager
def _dropped(layout: ClusterLayout, engine_pid: int) -> Iterator[None]:
    """node3 is there, its engine unreachable: its netns drops every packet to the engine's port."""
    node = layout.node("node3")
    netns = f"--net=/run/netns/{node.netns}"
    rule = ["INPUT", "-p", "tcp", "--dport", node.engine_url.rsplit(":", 1)[1], "-j", "DROP"]
    subprocess.run(["nsenter", netns, "iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["nsenter", netns, "iptables", "-D", *rule], check=True)


HANGS: dict[str, Callable[[ClusterLayout, int], contextlib.AbstractContextManager[None]]] = {
    "sigstop": _sigstopped,
    "dropped": _dropped,
}
HOW = {"sigstop": "node3's engine SIGSTOPped", "dropped": "node3's engine port dropping packets"}


def _listed_up(manager: str, name: str) -> bool:
    out = subprocess.run(
        ["docker", "-H", manager, "ps", "--format", "{{.Names}}\t{{.Status}}"], capture_output=True, text=True
    ).stdout
    return any(line.startswith(f"{name}\tUp") for line in out.splitlines())


def hung_node(manager: str, layout: ClusterLayout, engine_pid: int, how: str) -> None:
    dk = ["docker", "-H", manager]
    run = [*dk, "run", "--rm", "-e", "constraint:node!=node3", "busybox", "true"]
    for _ in range(3):
        _timed(run)
    before = [_timed(run) for _ in range(10)]
    name = f"sf-victim-{how}"
    victim = [*dk, "run", "-d", "--name", name, "-e", "constraint:node==node3", "busybox", "sleep", "600"]
    subprocess.run(victim, check=True, capture_output=True)
    time.sleep(1.0)
    try:
        with HANGS[how](layout, engine_pid):
            deadline = time.monotonic() + 30
            while "Host Down" not in subprocess.run([*dk, "ps"], capture_output=True, text=True).stdout:
                assert time.monotonic() < deadline, "the manager never marked node3 down"
                time.sleep(0.2)
            ps = [_timed([*dk, "ps", "-a"]) for _ in range(30)]
            during = [_timed(run) for _ in range(10)]
        deadline = time.monotonic() + 60  # node3 back before anything else is measured
        while not _listed_up(manager, f"node3/{name}"):
            assert time.monotonic() < deadline, "node3 never came back"
            time.sleep(0.5)
    finally:
        subprocess.run([*dk, "rm", "-f", name], capture_output=True)
    ratio = statistics.median(during) / statistics.median(before)
    print(
        f"(2) {HOW[how]}: docker ps -a p50 {pct(ps, 50) * 1000:.0f} ms, "
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
    if certs := os.environ.get("DOCKER_CERT_PATH"):  # mutual TLS, as the docker CLI speaks it
        ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        ctx.load_cert_chain(f"{certs}/cert.pem", f"{certs}/key.pem")
        s = ctx.wrap_socket(s, server_hostname=host)
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


def fuzz_counts(cluster_env: dict[str, str], examples: int) -> bool:
    """The manager's and the plugin socket's fuzzers on one cluster: inputs per endpoint group; any 5xx or
    state change fails the run (the tests assert both)."""
    manager_report = Path(tempfile.mkdtemp()) / "manager.json"
    plugin_report = manager_report.with_name("plugin.json")
    env = {**os.environ, **cluster_env, "SHOAL_FUZZ_EXAMPLES": str(examples)}
    env |= {"SHOAL_FUZZ_REPORT": str(manager_report), "SHOAL_FUZZ_REPORT_PLUGIN": str(plugin_report)}
    files = ["tests/e2e/test_manager_fuzz.py", "tests/e2e/test_plugin_fuzz.py"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    took = time.monotonic() - t0
    for what, report in (("manager", manager_report), ("volume plugin", plugin_report)):
        counts = json.loads(report.read_text()) if report.exists() else {}
        listed = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{what} fuzzing ({examples} examples per fuzzer): {listed}; total {sum(counts.values())}")
    verdict = "0 5xx, no state change" if proc.returncode == 0 else "FAILURES (below)"
    print(f"  {took:.0f} s, pytest exit {proc.returncode}: {verdict} (goal 0)")
    if proc.returncode != 0:
        print("\n".join("    " + line for line in proc.stdout.splitlines()[-30:]))
    return proc.returncode == 0


def regex(args: argparse.Namespace) -> bool:
    regex_placement()
    return True


def manager(args: argparse.Namespace) -> bool:
    spec = ClusterSpec(name=args.name, nodes=3, subnet=args.subnet, root=args.root, agent_interval=1.0)
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"--parts: no part {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    with bench_cluster(spec) as layout:
        st = json.loads(layout.state_file.read_text())
        url = layout.docker_host
        if "pattern" in parts:
            ps_under_pattern(url, layout, args.containers)
        for how in ("sigstop", "dropped"):
            if how in parts:
                hung_node(url, layout, st["pids"]["node3"]["engine"], how)
        if "logs" in parts:
            stalled_logs(url, st["pids"][""]["manager"])
    return True


def fuzz(args: argparse.Namespace) -> bool:
    cluster = {
        "SHOAL_TEST_CLUSTER": "sfz",
        "SHOAL_TEST_SUBNET": "10.99.14.0/24",
        "SHOAL_TEST_ROOT": str(BENCH_ROOT),
    }
    return fuzz_counts(cluster, args.examples)


SECTIONS = {"registry": registry, "regex": regex, "manager": manager, "fuzz": fuzz}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=2000, help="hypothesis examples per fuzzer")
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append")
    ap.add_argument("--parts", default=",".join(PARTS), help="the manager section's parts, comma-separated")
    ap.add_argument(
        "--containers", type=int, default=1000, help="containers the pattern part matches against"
    )
    ap.add_argument("--name", default=NAME, help="the manager section's cluster")
    ap.add_argument("--subnet", default=SUBNET)
    ap.add_argument("--root", type=Path, default=BENCH_ROOT)
    args = ap.parse_args()
    ok = True
    for name in args.only or SECTIONS:
        ok &= SECTIONS[name](args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
