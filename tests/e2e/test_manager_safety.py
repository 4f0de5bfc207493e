"""Nothing a request or a hung node does freezes the manager: a pathological regex is matched in linear
time against a cluster of 1,000 containers, a node whose engine hangs (SIGSTOP, or its packets dropped)
leaves creates on the other nodes, `docker ps`, `docker info` and the dashboard answering, its containers
listed as `Host Down`, and an exec or attach to it fails naming it instead of hanging; a JSON body over
1 MiB is refused before it reaches an engine, while `docker cp` archives stream through uncapped.

Latency figures live in benchmarks/safety.py; the bounds here are generous on purpose (a loaded 2-core
machine), and still far below what the old behaviour took (a frozen event loop, or a 5 s wait per call)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.cluster.engine import CALL
from shoal.cluster.state import LOOK_EVERY

pytestmark = pytest.mark.e2e
RESPONSIVE = 2.0  # seconds: "answers", as opposed to the 5-15 s of waiting on a hung engine
PATTERN = r"affinity:container==/^(\w|\w)+x$/"
PLACED = 20  # times the pattern is placed while ps is sampled
SEEDED = 1000  # containers the pattern is matched against (created, not started: cheap)


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


def _seed(dev_cluster, prefix: str, count: int) -> None:
    """`count` containers created (not started) straight on the three engines, a few at a time on each:
    names of 40 word characters not ending in x, on which (\\w|\\w)+x backtracks 2^40 times in a
    backtracking engine."""
    nodes = sorted(dev_cluster.nodes)
    apis = {n: dev_cluster.docker_py(dev_cluster.nodes[n]).api for n in nodes}

    def make(i: int) -> None:
        apis[nodes[i % len(nodes)]].create_container(
            "busybox", "true", name=f"{prefix}{i:04d}".ljust(40, "a")
        )

    with ThreadPoolExecutor(4 * len(nodes)) as pool:
        list(pool.map(make, range(count)))


def _unseed(dev_cluster, prefix: str) -> None:
    """Every container named `prefix...` removed from every engine (also what a failed seeding left)."""
    for url in dev_cluster.nodes.values():
        api = dev_cluster.docker_py(url).api
        made = [c["Id"] for c in api.containers(all=True, filters={"name": prefix})]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda cid, api=api: api.remove_container(cid, force=True), made))


def test_a_pathological_regex_over_1000_containers_never_freezes_the_manager(dev_cluster):
    prefix = f"rx{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    try:
        _seed(dev_cluster, prefix, SEEDED)
        print(f"\n{SEEDED} containers created on the engines in {time.monotonic() - t0:.1f} s")

        def seeded() -> int:
            names = dev_cluster.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
            return sum(n.split("/", 1)[-1].startswith(prefix) for n in names)

        _wait(f"the manager listing all {SEEDED}", seeded, lambda n: n == SEEDED, timeout=120)

        refusals: list[subprocess.CompletedProcess[str]] = []

        def fire() -> None:  # the pattern, placed again and again while ps is sampled
            for _ in range(PLACED):
                refusals.append(dev_cluster.cli("create", "-e", PATTERN, "busybox", "true", check=False))

        t = threading.Thread(target=fire)
        t.start()
        latencies, counts = [], []
        while t.is_alive():
            t1 = time.monotonic()
            counts.append(seeded())
            latencies.append(time.monotonic() - t1)
        t.join()
        print(
            f"docker ps -a over {SEEDED} containers while {PATTERN} was placed {len(refusals)} times: "
            f"{len(latencies)} answers, median {statistics.median(latencies):.3f} s, "
            f"max {max(latencies):.3f} s"
        )
        assert counts and set(counts) == {SEEDED}, f"docker ps -a listed {sorted(set(counts))} of {SEEDED}"
        assert len(refusals) == PLACED
        for run in refusals:
            assert run.returncode != 0
            assert "Unable to find a node that satisfies the following conditions" in run.stderr
            assert f"[{PATTERN}]" in run.stderr
        assert (
            max(latencies) < RESPONSIVE
        ), f"docker ps -a took {max(latencies):.2f}s while the regex was matched"
    finally:
        _unseed(dev_cluster, prefix)


@contextlib.contextmanager
def _sigstopped(dev_cluster, node: str) -> Iterator[None]:
    pid = dev_cluster.pid(node, "engine")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def _dropping(dev_cluster, node: str, *match: str) -> Iterator[None]:
    """The node's engine port drops the packets `match` picks (iptables matches; none: every one), in the
    node's own namespace, the rule gone afterwards whatever happened."""
    netns = f"/run/netns/{dev_cluster.name}-{node}"
    port = dev_cluster.nodes[node].rsplit(":", 1)[1]
    rule = ["INPUT", *match, "-p", "tcp", "--dport", port, "-j", "DROP"]
    subprocess.run(["nsenter", f"--net={netns}", "iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["nsenter", f"--net={netns}", "iptables", "-D", *rule], check=True)


@contextlib.contextmanager
def _dropped(dev_cluster, node: str) -> Iterator[None]:
    """The node's engine port drops every packet (the node is there, its engine unreachable)."""
    with _dropping(dev_cluster, node):
        yield


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


@pytest.mark.parametrize("hang", [_sigstopped, _dropped], ids=["sigstop", "dropped-packets"])
def test_exec_and_attach_to_a_hung_node_fail_naming_it(dev_cluster, hang):
    """Each within a deadline of the engine client's (connect, or the engine's answer), not after the
    kernel's TCP timeout; checked against three times the longest of them."""
    victim = f"hung-exec-{hang.__name__.strip('_')}"
    dev_cluster.cli(
        "run", "-d", "-i", "--name", victim, "-e", "constraint:node==node3", "busybox", "sleep", "600"
    )
    try:
        exec_id = dev_cluster.docker_py().api.exec_create(victim, "true")["Id"]
        upgrade = {"Connection": "Upgrade", "Upgrade": "tcp", "Content-Type": "application/json"}
        asked: dict[str, Callable[[], tuple[int, str]]] = {
            # the raw hijacks (the relay's own deadlines), and the docker CLI's exec and attach
            "exec start": lambda: _http(dev_cluster, "POST", f"/v1.41/exec/{exec_id}/start",
                                        data=b'{"Detach": false, "Tty": false}', headers=upgrade),
            "attach": lambda: _http(dev_cluster, "POST", f"/v1.41/containers/{victim}/attach",
                                    params={"stream": "1", "stdout": "1"}, headers=upgrade),
            "docker exec": lambda: _cli(dev_cluster, "exec", victim, "true"),
            "docker attach": lambda: _cli(dev_cluster, "attach", "--no-stdin", victim),
        }  # fmt: skip
        with hang(dev_cluster, "node3"), ThreadPoolExecutor(len(asked)) as pool:
            t0 = time.monotonic()
            answers = dict(zip(asked, pool.map(lambda call: call(), asked.values()), strict=True))
            took = time.monotonic() - t0
        print(f"\n{hang.__name__.strip('_')}: every error in {took:.1f} s", *answers.items(), sep="\n  ")
        for what, (code, message) in answers.items():
            assert code != 0 and "node3" in message and "did not answer" in message, (what, code, message)
        assert "within" in answers["exec start"][1] and "within" in answers["attach"][1]
        assert took < 3 * CALL, f"the errors took {took:.0f}s"
        # node3 back: an exec goes through again
        _wait("exec on node3 again", lambda: _cli(dev_cluster, "exec", victim, "echo", "back"),
              lambda got: got == (0, "back\n"), timeout=60)  # fmt: skip
    finally:
        dev_cluster.cli("rm", "-f", victim, check=False)


@contextlib.contextmanager
def _unreachable_from_managers(dev_cluster, node: str) -> Iterator[None]:
    """The node's engine drops what the managers send it (from the gateway); its own agent, beside it,
    still reaches it, so the registry keeps the node passing: only the manager counts it unreachable."""
    with _dropping(dev_cluster, node, "-s", dev_cluster.gateway):
        yield


def test_a_manager_started_while_a_node_is_unreachable_places_there_as_soon_as_it_answers(dev_cluster):
    """A manager that started while node3's engine did not answer counts node3 unreachable; once the
    engine answers, the first create that finds no other node fits lists node3 again and lands there,
    instead of being refused until the periodic look at node3 (every ~5 s) comes by."""
    host = f"tcp://{dev_cluster.gateway}:2397"
    argv = dev_cluster.manager_argv(host.removeprefix("tcp://"))
    name = f"back-{uuid.uuid4().hex[:6]}"
    mgr = None
    try:
        with _unreachable_from_managers(dev_cluster, "node3"):
            mgr = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dev_cluster.client_env()
            )

            def node3_status() -> str:
                got = dev_cluster.cli("info", host=host, check=False)
                if got.returncode != 0 or "node3" not in got.stdout:
                    return got.stderr.strip()[-200:]
                return got.stdout.split("node3", 1)[1].split("└ Containers")[0]

            _wait(
                "the new manager counting node3 unhealthy",
                node3_status,
                lambda s: "Status: Unhealthy" in s,
                60,
            )
            down = dev_cluster.cli(
                "run", "-d", "-e", "constraint:node==node3", "busybox", "true", host=host, check=False
            )
            assert down.returncode != 0 and "Unable to find a node" in down.stderr, down
        # node3 answers again; past the pause between two looks a miss may make (LOOK_EVERY, the
        # miss just above took one), the very next create pinned to it goes there
        time.sleep(LOOK_EVERY)
        got = dev_cluster.cli(
            "run", "-d", "--name", name, "-e", "constraint:node==node3", "busybox", "sleep", "60",
            host=host, check=False,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", name, host=host).stdout.strip() == "node3"
    finally:
        if mgr is not None:
            mgr.terminate()
            mgr.wait(10)
        dev_cluster.cli("rm", "-f", name, check=False)


def _http(dev_cluster, method: str, path: str, **kw) -> tuple[int, str]:
    """A request to the manager; its status (0 for a success) and its Docker error message."""
    r = dev_cluster.http(method, path, timeout=3 * CALL + 15, **kw)
    if r.status_code < 300:
        return 0, ""
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    return r.status_code, r.json()["message"]


def _cli(dev_cluster, *args: str) -> tuple[int, str]:
    """The docker CLI's exit code and what it printed (stdout on success, stderr on failure)."""
    got = dev_cluster.cli(*args, check=False, timeout=3 * CALL + 15)
    return got.returncode, got.stdout if got.returncode == 0 else got.stderr


def test_json_bodies_over_1_mib_never_reach_the_engine_and_cp_archives_are_not_capped(dev_cluster, tmp_path):
    ct = f"capped-{uuid.uuid4().hex[:6]}"
    dev_cluster.cli("run", "-d", "--name", ct, "-e", "constraint:node==node2", "busybox", "sleep", "300")
    try:
        padded = json.dumps({"CpuShares": 512, "Padding": "x" * (1 << 20)}).encode()

        def chunked() -> Iterator[bytes]:  # no Content-Length: the cap counts what arrives
            step = 64 << 10
            for i in range(0, len(padded), step):
                yield padded[i : i + step]

        upgrade = {"Connection": "Upgrade", "Upgrade": "tcp"}
        exec_id = dev_cluster.docker_py().api.exec_create(ct, "true")["Id"]
        json_type = {"Content-Type": "application/json"}
        for path, body, headers in (
            (f"/v1.41/containers/{ct}/update", padded, json_type),
            (f"/v1.41/containers/{ct}/update", chunked(), json_type),
            (f"/v1.41/exec/{exec_id}/start", padded, {**json_type, **upgrade}),
        ):
            code, message = _http(dev_cluster, "POST", path, data=body, headers=headers)
            assert code == 413 and "at most 1048576 bytes (1 MiB)" in message, (path, code, message)
        inspect = "{{.HostConfig.CpuShares}}"
        assert dev_cluster.docker("node2", "inspect", "-f", inspect, ct).stdout.strip() == "0"
        # the same update under the cap is relayed and done
        code, _ = _http(dev_cluster, "POST", f"/v1.41/containers/{ct}/update", json={"CpuShares": 512})
        assert code == 0
        assert dev_cluster.docker("node2", "inspect", "-f", inspect, ct).stdout.strip() == "512"
        # a cp archive of 3 MiB streams through both ways, byte for byte
        blob = tmp_path / "blob"
        blob.write_bytes(os.urandom(3 << 20))
        dev_cluster.cli("cp", str(blob), f"{ct}:/blob")
        dev_cluster.cli("cp", f"{ct}:/blob", str(tmp_path / "back"))
        sums = {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (blob, tmp_path / "back")}
        assert len(sums) == 1
        on_node = dev_cluster.docker("node2", "exec", ct, "sha256sum", "/blob").stdout.split()[0]
        assert {on_node} == sums
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)
