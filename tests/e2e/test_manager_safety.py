"""Nothing a request or a hung node does freezes the manager: a pathological regex is matched in linear
time, and a node whose engine hangs (SIGSTOP, or its packets dropped) leaves creates on the other nodes,
`docker ps`, `docker info` and the dashboard answering, its containers listed as `Host Down`.

Latency figures live in benchmarks/safety.py; the bounds here are generous on purpose (a loaded 2-core
machine), and still far below what the old behaviour took (a frozen event loop, or a 5 s wait per call)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytestmark = pytest.mark.e2e
RESPONSIVE = 2.0  # seconds: "answers", as opposed to the 5-15 s of waiting on a hung engine


def _ps_names(dev_cluster, *flags: str) -> dict[str, str]:
    out = dev_cluster.cli("ps", *flags, "--format", "{{.Names}}\t{{.Status}}").stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if line)


def _timed(call: Callable[[], object]) -> float:
    t0 = time.monotonic()
    call()
    return time.monotonic() - t0


def _wait(
    what: str, probe: Callable[[], object], ok: Callable[[object], bool], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not ok(seen := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last seen: {seen!r})"
        time.sleep(0.2)


def test_a_pathological_regex_never_freezes_the_manager(dev_cluster):
    long_name = "a" * 40  # (\w|\w)+x backtracks 2^40 times on this name in a backtracking engine
    dev_cluster.cli("create", "--name", long_name, "busybox", "true")
    try:
        result: dict[str, subprocess.CompletedProcess[str]] = {}

        def run() -> None:
            result["run"] = dev_cluster.cli(
                "run", "-d", "-e", r"affinity:container==/^(\w|\w)+x$/", "busybox", "true", check=False
            )

        t = threading.Thread(target=run)
        t.start()
        slowest = 0.0
        while t.is_alive():
            slowest = max(slowest, _timed(lambda: dev_cluster.cli("ps")))
        t.join()
        assert slowest < RESPONSIVE, f"docker ps took {slowest:.2f}s while the regex was matched"
        run = result["run"]
        assert run.returncode != 0
        assert "Unable to find a node that satisfies the following conditions" in run.stderr
        assert r"[affinity:container==/^(\w|\w)+x$/]" in run.stderr
    finally:
        dev_cluster.cli("rm", "-f", long_name, check=False)


@contextlib.contextmanager
def _sigstopped(dev_cluster, node: str) -> Iterator[None]:
    pid = dev_cluster.pid(node, "engine")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def _dropped(dev_cluster, node: str) -> Iterator[None]:
    """The node's engine port drops every packet (the node is there, its engine unreachable)."""
    netns = f"/run/netns/{dev_cluster.name}-{node}"
    port = dev_cluster.nodes[node].rsplit(":", 1)[1]
    rule = ["INPUT", "-p", "tcp", "--dport", port, "-j", "DROP"]
    subprocess.run(["nsenter", f"--net={netns}", "iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["nsenter", f"--net={netns}", "iptables", "-D", *rule], check=True)


@pytest.mark.parametrize("hang", [_sigstopped, _dropped], ids=["sigstop", "dropped-packets"])
def test_a_hung_node_stalls_nothing_on_the_others(dev_cluster, hang):
    victim = f"hung-victim-{hang.__name__.strip('_')}"
    dev_cluster.cli("run", "-d", "--name", victim, "-e", "constraint:node==node3", "busybox", "sleep", "600")
    try:
        with hang(dev_cluster, "node3"):
            # a create on another node goes through while node3 hangs
            ok = dev_cluster.cli("run", "--rm", "-e", "constraint:node!=node3", "busybox", "echo", "ok")
            assert ok.stdout == "ok\n"
            # the manager notices; ps keeps listing node3's container, marked as its node being down
            listed = f"node3/{victim}"
            _wait(
                "it listed as Host Down",
                lambda: _ps_names(dev_cluster),
                lambda ps: ps.get(listed) == "Host Down",
            )
            assert _ps_names(dev_cluster, "-a")[listed] == "Host Down"
            for _ in range(5):
                assert _timed(lambda: dev_cluster.cli("ps", "-a")) < RESPONSIVE
                assert _timed(lambda: dev_cluster.cli("info")) < RESPONSIVE
            info = dev_cluster.cli("info").stdout
            assert (
                "node3" in info and "Status: Unhealthy" in info.split("node3", 1)[1].split("└ Containers")[0]
            )
            t0 = time.monotonic()
            overview = dev_cluster.http("GET", "/shoal/v1/overview", timeout=10)
            assert overview.status_code == 200 and time.monotonic() - t0 < RESPONSIVE
            # and new placements pass node3 over, saying why
            placed = dev_cluster.cli("run", "-d", "busybox", "sleep", "60").stdout.strip()
            node = dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", placed).stdout.strip()
            dev_cluster.cli("rm", "-f", placed)
            assert node != "node3"
        back = f"node3/{victim}"
        _wait("node3 back", lambda: _ps_names(dev_cluster), lambda ps: ps.get(back, "").startswith("Up"), 60)
    finally:
        dev_cluster.cli("rm", "-f", victim, check=False)
