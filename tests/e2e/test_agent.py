"""The node agents of the 3-node dev cluster, seen through py-consul, `shoal nodes/facts` and Facter."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import consul
import pytest

from shoal.dev import host
from tests.conftest import AGENT_INTERVAL, shoal
from tests.registry.conftest import start_registry, stop_registry

pytestmark = pytest.mark.e2e


def _client(dev_cluster) -> consul.Consul:
    return dev_cluster.consul()


def _facts(dev_cluster, node: str) -> dict:
    _, entry = _client(dev_cluster).kv.get(f"shoal/nodes/{node}/facts")
    assert entry is not None, f"no facts for {node}"
    return json.loads(entry["Value"])


def _wait_facts(dev_cluster, node: str, pred, timeout: float) -> tuple[dict, float]:
    """Blocks on the node's facts key (a Consul blocking query) until `pred(doc)`; returns (doc, seconds)."""
    c = _client(dev_cluster)
    t0 = time.monotonic()
    index = None
    while True:
        index, entry = c.kv.get(f"shoal/nodes/{node}/facts", index=index, wait="1s")
        doc = json.loads(entry["Value"])
        if pred(doc):
            return doc, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"{node}: condition not met within {timeout}s; last: {doc}"


def _health(dev_cluster, node: str) -> str:
    checks = _client(dev_cluster).health.node(node)[1]
    return next(c["Status"] for c in checks if c["CheckID"] == "shoal-agent")


def _start_agent(dev_cluster, node: str) -> int:
    return dev_cluster.start_agent(node)


def test_every_node_publishes_its_facts_readable_with_py_consul(dev_cluster):
    for node in ("node1", "node2", "node3"):
        doc = _facts(dev_cluster, node)
        f = doc["facts"]
        assert (
            doc["node"] == node and time.time() - doc["gathered_at"] < 30
        )  # fresh: within the staleness TTL
        assert f["hostname"] == node and f["ipaddress"] == dev_cluster.address(node)
        assert f["docker_version"].startswith("20.10") and f["docker_storage_driver"] == "overlay2"
        for name in ("system_overload_1min", "system_overload_5min", "system_overload_10min"):
            assert isinstance(f[name], int) and f[name] >= 0
        info = json.loads(_client(dev_cluster).kv.get(f"shoal/nodes/{node}/info")[1]["Value"])
        assert info["engine"] == dev_cluster.nodes[node] and info["cpus"] == os.cpu_count()
        assert _health(dev_cluster, node) == "passing"
    assert _facts(dev_cluster, "node1")["facts"]["docker_labels.disk"] == "ssd"


def test_fact_values_match_what_the_machine_says(dev_cluster):
    f = _facts(dev_cluster, "node2")["facts"]
    assert f["processorcount"] == int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    assert f["hardwaremodel"] == platform.machine()
    mem_total_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert f["memorysize_mb"] == pytest.approx(mem_total_kb / 1024)
    assert (
        f["selinux_enforced"] is False
    )  # no SELinux here: false, not absent, so `selinux_enforced=false` works
    assert f["virtual"] and isinstance(f["is_virtual"], bool)


VOLATILE = {
    "memoryfree_mb": 512,
    "load_averages.1m": 1.0,
    "load_averages.5m": 1.0,
    "load_averages.15m": 1.0,
    "uptime_seconds": 30,
}


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def test_every_fact_both_produce_agrees_with_facter_on_the_same_node(dev_cluster):
    # a moving fact (load, free memory) is compared with the readings published just before and just
    # after facter ran: facter's value must fall within the tolerance of the range they span, so the
    # load moving between two reads on a busy machine is not a disagreement, and a wrong fact still is
    before = _facts(dev_cluster, "node3")["facts"]
    out = subprocess.run(
        [
            "nsenter",
            f"--target={dev_cluster.pid('node3', 'engine')}",
            "--net",
            "--uts",
            "--mount",
            "facter",
            "--json",
            "--show-legacy",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    facter = _flatten(json.loads(out.stdout))  # facter may exit 1 with valid JSON (e.g. /proc/1/environ)
    facter_done = time.time()
    after, _ = _wait_facts(dev_cluster, "node3", lambda d: d["gathered_at"] > facter_done, 30)
    ours = after["facts"]
    shared = sorted(set(facter) & set(ours))
    assert len(shared) >= 25, shared
    wrong = {}
    for k in shared:
        if k in VOLATILE:
            readings = [float(ours[k])] + ([float(before[k])] if k in before else [])
            low, high = min(readings) - VOLATILE[k], max(readings) + VOLATILE[k]
            if not low <= float(facter[k]) <= high:
                wrong[k] = (readings, facter[k])
        elif k == "memoryfree":
            continue  # a rounded string of a moving number
        elif str(ours[k]) != str(facter[k]):
            wrong[k] = (ours[k], facter[k])
    assert wrong == {}, f"differ from facter (ours, facter): {wrong}"


def test_a_custom_fact_in_facts_d_appears_within_one_interval(dev_cluster):
    fact = dev_cluster.node_dir("node1") / "facts.d" / "rack.txt"
    try:
        written = time.time()
        fact.write_text("rack=r42\n")
        # the next gathering has it (how soon is a figure: benchmarks/agent_facts.py, change to registry)
        doc, _ = _wait_facts(dev_cluster, "node1", lambda d: d["facts"].get("rack") == "r42", 60)
        assert doc["gathered_at"] >= written - 0.05
    finally:
        fact.unlink(missing_ok=True)
    _wait_facts(dev_cluster, "node1", lambda d: "rack" not in d["facts"], 60)


def test_bad_fact_sources_are_skipped_and_reported_while_the_agent_goes_on(dev_cluster):
    d = dev_cluster.node_dir("node2") / "facts.d"
    bad = {
        "hang.sh": ("#!/bin/sh\nsleep 100\n", 0o755),
        "garbage.sh": ("#!/bin/sh\necho 'this is not a fact'\n", 0o755),
        "fails.sh": ("#!/bin/sh\necho 'x=1'\nexit 3\n", 0o755),
        "broken.json": ('{"a": 1,', 0o644),
        "broken.yaml": ("a: [1, 2\n", 0o644),
        "clash.txt": ("processorcount=999\n", 0o644),
    }
    good = {
        "good.json": ('{"zone": {"name": "eu-1"}}', 0o644),
        "good.sh": ("#!/bin/sh\necho tier=gold\n", 0o755),
    }
    try:
        for name, (text, mode) in {**bad, **good}.items():
            (d / name).write_text(text)
            (d / name).chmod(mode)
        doc, _ = _wait_facts(dev_cluster, "node2", lambda doc: len(doc["failed_sources"]) == len(bad), 10)
        f = doc["facts"]
        assert f["zone.name"] == "eu-1" and f["tier"] == "gold"
        assert f["processorcount"] == os.cpu_count()  # the clash did not override the core fact
        assert set(f["shoal_failed_sources"].split(",")) == set(bad)
        reasons = {e["source"]: e["reason"] for e in doc["failed_sources"]}
        assert "timed out" in reasons["hang.sh"] and "killed" in reasons["hang.sh"]
        assert "not key=value" in reasons["garbage.sh"]
        assert "exited with 3" in reasons["fails.sh"]
        assert "invalid JSON" in reasons["broken.json"] and "invalid YAML" in reasons["broken.yaml"]
        assert "core fact processorcount" in reasons["clash.txt"]
        time.sleep(2 * AGENT_INTERVAL)
        assert _health(dev_cluster, "node2") == "passing"  # a hanging script never starves the node's check
        log = (dev_cluster.node_dir("node2") / "log" / "agent.log").read_text()
        assert 'level=warning logger=shoal.agent event="fact source skipped" node=node2 source=hang.sh' in log
        assert 'reason="timed out' in log
        # each run is killed at its timeout: at most the current one is alive, none pile up
        hung = [p for p in host.netns_pids(f"{dev_cluster.name}-node2") if "sleep 100" in host.cmdline(p)]
        assert len(hung) <= 1, hung
    finally:
        for name in {**bad, **good}:
            (d / name).unlink(missing_ok=True)
    _wait_facts(dev_cluster, "node2", lambda doc: doc["failed_sources"] == [], 5)


def test_a_stopped_agent_turns_its_node_critical_and_a_restarted_one_passing(dev_cluster):
    pid = dev_cluster.pid("node3", "agent")
    os.kill(pid, signal.SIGKILL)  # a crash: nothing tells the registry
    killed = time.monotonic()
    while _health(dev_cluster, "node3") != "critical":
        assert time.monotonic() - killed < 3 * AGENT_INTERVAL + 1.0, "node not critical within its TTL"
        time.sleep(0.1)
    nodes = shoal("nodes", "--registry", dev_cluster.registry_url, env=dev_cluster.client_env()).stdout
    assert "critical" in next(line for line in nodes.splitlines() if "node3" in line)
    new = _start_agent(dev_cluster, "node3")  # reclaims its own session from its state file
    try:
        started = time.monotonic()
        while _health(dev_cluster, "node3") != "passing":
            assert time.monotonic() - started < 10
            time.sleep(0.1)
        nodes = shoal("nodes", "--registry", dev_cluster.registry_url, env=dev_cluster.client_env()).stdout
        assert "passing" in next(line for line in nodes.splitlines() if "node3" in line)
        os.kill(new, signal.SIGTERM)  # a clean stop: critical at once
        host.wait_gone({new}, 10)
        assert _health(dev_cluster, "node3") == "critical"
    finally:
        again = _start_agent(dev_cluster, "node3")
        state = dev_cluster.root / dev_cluster.name / "state.json"
        doc = json.loads(state.read_text())
        doc["pids"]["node3"]["agent"] = again  # keep `dev down` and later tests pointing at the live one
        state.write_text(json.dumps(doc))
    started = time.monotonic()
    while _health(dev_cluster, "node3") != "passing":
        assert time.monotonic() - started < 10
        time.sleep(0.1)


def test_a_second_agent_claiming_the_same_node_is_refused(dev_cluster, tmp_path):
    """With a valid join token of its own, a second agent still cannot take node1's name: the name was
    joined with node1's key, and only node1's credentials (its state directory) carry it."""
    token = shoal("token", "create", "-q", env=dev_cluster.client_env()).stdout.strip()
    argv = [
        sys.executable, "-m", "shoal", "agent",
        "--join", token, "--manager", f"https://{dev_cluster.gateway}:2377",
        "--state-dir", str(tmp_path / "st"),
        "--node", "node1", "--engine", f"unix://{dev_cluster.node_dir('node1') / 'docker.sock'}",
        "--interval", "1", "--facts-dir", "/nonexistent",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("shoal: node name 'node1' has joined already (with another key)"), proc.stderr
    assert "only with that node's credentials" in last
    assert not (tmp_path / "st" / "cert.pem").exists()  # nothing was granted
    assert _health(dev_cluster, "node1") == "passing"


def test_an_agent_retries_while_the_manager_is_away_and_publishes_when_it_is_back(dev_cluster, tmp_path):
    from shoal.registry.etcd_server import free_port

    port = free_port()
    log = tmp_path / "agent.log"
    argv = [
        sys.executable,
        "-m",
        "shoal",
        "agent",
        "--manager",
        f"127.0.0.1:{port}",
        "--node",
        "lonely",
        "--engine",
        f"unix://{dev_cluster.node_dir('node2') / 'docker.sock'}",
        "--interval",
        "0.5",
        "--facts-dir",
        str(tmp_path),
    ]
    agent = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    reg = None
    try:
        deadline = time.monotonic() + 20
        while 'event="registry unreachable; retrying"' not in log.read_text():
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "retry_in=" in log.read_text()
        reg = start_registry(f"sqlite://{tmp_path}/r.db", http_port=port)
        c = consul.Consul(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 15
        # the facts, and the agent saying so (its log line may follow the write by a moment)
        while (
            c.kv.get("shoal/nodes/lonely/facts")[1] is None
            or "is back; facts published" not in log.read_text()
        ):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        agent.terminate()
        agent.wait(10)
        if reg:
            stop_registry(reg)


def test_shoal_facts_prints_a_nodes_facts_and_all_nodes_side_by_side(dev_cluster):
    env = dev_cluster.client_env()
    one = shoal("facts", "node2", "--registry", dev_cluster.registry_url, env=env).stdout
    rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in one.splitlines() if "│" in line]
    assert ["hostname", "node2"] in rows and ["ipaddress", dev_cluster.address("node2")] in rows
    both = shoal("facts", "--registry", dev_cluster.registry_url, env=env).stdout
    row = next(line for line in both.splitlines() if " ipaddress " in line)
    assert all(dev_cluster.address(n) in row for n in ("node1", "node2", "node3"))
    missing = shoal("facts", "ghost", "--registry", dev_cluster.registry_url, check=False, env=env)
    assert missing.returncode == 1 and "no facts for node 'ghost'" in missing.stderr


def test_facter_flag_merges_facters_own_facts(dev_cluster, tmp_path):
    argv = [
        sys.executable,
        "-m",
        "shoal",
        "agent",
        "--manager",
        dev_cluster.registry_url,  # no join: straight to the registry, as CONSUL_* configure it
        "--node",
        "withfacter",
        "--engine",
        f"unix://{dev_cluster.node_dir('node1') / 'docker.sock'}",
        "--interval",
        "1",
        "--facts-dir",
        str(tmp_path),
        "--facter",
    ]
    agent = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dev_cluster.client_env()
    )
    try:
        doc, _ = _wait_facts_when_present(dev_cluster, "withfacter", 20)
        f = doc["facts"]
        assert f["facterversion"].startswith("4.")  # only Facter has this one
        assert f["os.distro.codename"] == f["lsbdistcodename"]  # structured facts flattened with dots
        assert f["processorcount"] == os.cpu_count()  # shoal's own facts stand
    finally:
        agent.terminate()
        agent.wait(10)
        _client(dev_cluster).catalog.deregister("withfacter")
        _client(dev_cluster).kv.delete("shoal/nodes/withfacter", recurse=True)


def _wait_facts_when_present(dev_cluster, node: str, timeout: float) -> tuple[dict, float]:
    c = _client(dev_cluster)
    t0 = time.monotonic()
    while (entry := c.kv.get(f"shoal/nodes/{node}/facts")[1]) is None:
        assert time.monotonic() - t0 < timeout, f"{node} never published"
        time.sleep(0.1)
    return json.loads(entry["Value"]), time.monotonic() - t0
