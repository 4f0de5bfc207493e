"""What the stores promise when things break: SQLite keeps every acknowledged write across kill -9;
a 3-member etcd cluster (members in our own network namespaces) loses nothing when one member stops,
and answers a clear error, not a hang, when two do."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from shoal.dev import host
from shoal.registry import etcd_server
from shoal.registry.etcd_server import EtcdMember
from tests.registry.conftest import start_registry, stop_registry


def _writer(base: str, prefix: str, acked: list[str], stop: threading.Event, errors: list[str]) -> None:
    s = requests.Session()
    i = 0
    while not stop.is_set():
        key = f"{prefix}/{i}"
        try:
            r = s.put(f"{base}/v1/kv/{key}", data=key.encode(), timeout=15)
        except requests.RequestException as e:
            errors.append(str(e))
            return
        if r.status_code == 200 and r.json() is True:
            acked.append(key)
        else:
            errors.append(f"{r.status_code} {r.text}")
            return
        i += 1


def test_sqlite_keeps_every_acknowledged_write_across_kill_9():
    db = f"sqlite://{tempfile.mkdtemp()}/registry.db"
    reg = start_registry(db)
    acked: list[list[str]] = [[] for _ in range(16)]
    stop, errors = threading.Event(), []
    threads = [
        threading.Thread(target=_writer, args=(reg.url, f"w{i}", acked[i], stop, errors)) for i in range(16)
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    reg.proc.send_signal(signal.SIGKILL)  # mid-write, no shutdown
    reg.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    total = sum(len(a) for a in acked)
    assert total > 500, "the writers should have been busy when the manager died"
    again = start_registry(db)
    try:
        c = again.client()
        stored = {e["Key"]: e["Value"] for e in c.kv.get("w", recurse=True)[1]}
        lost = [k for a in acked for k in a if stored.get(k) != k.encode()]
        assert lost == [], f"{len(lost)} of {total} acknowledged writes lost"
    finally:
        stop_registry(again)


NET = "10.99.20.0/24"
BRIDGE = "shoaletcd-br"


@pytest.fixture
def etcd_cluster():
    """Three etcd members, each in its own network namespace on a bridge of ours; removed afterwards."""
    ns = [f"shoaletcd-m{i}" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    d = Path(tempfile.mkdtemp(prefix="shoal-etcd3-"))
    try:
        host.create_bridge(BRIDGE, "10.99.20.1", 24)
        members = []
        for i, name in enumerate(ns):
            host.create_node_net(name, name[-7:] + "v", BRIDGE, f"10.99.20.{11 + i}", 24, "10.99.20.1")
            members.append(EtcdMember(f"m{i}", f"10.99.20.{11 + i}", 2379, 2380, d / f"m{i}", netns=name))
        token = uuid.uuid4().hex
        procs = [etcd_server.start(m, members, token) for m in members]
        for m, p in zip(members, procs, strict=True):
            etcd_server.wait_healthy(m, p)
        yield members, procs
    finally:
        for p in procs:
            etcd_server.stop(p)
        for name in ns:
            host.kill(host.netns_pids(name))
            host.delete_netns(name)
        host.delete_link(BRIDGE)
        subprocess.run(["rm", "-rf", str(d)], check=False)


def test_etcd_cluster_survives_one_member_and_fails_clearly_without_quorum(etcd_cluster):
    members, procs = etcd_cluster
    reg = start_registry("etcd://" + ",".join(m.endpoint for m in members))
    try:
        acked: list[str] = []
        stop, errors = threading.Event(), []
        writer = threading.Thread(target=_writer, args=(reg.url, "ha", acked, stop, errors))
        writer.start()
        time.sleep(1.0)
        etcd_server.stop(procs[0])  # one member of three goes away mid-write
        time.sleep(2.0)
        stop.set()
        writer.join(20)
        assert errors == [], errors
        assert len(acked) > 50
        c = reg.client()
        stored = {e["Key"] for e in c.kv.get("ha", recurse=True)[1]}
        assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged writes lost"
        assert c.kv.put("ha/after", "still-works") is True

        etcd_server.stop(procs[1])  # two of three gone: no quorum
        t0 = time.monotonic()
        r = requests.put(f"{reg.url}/v1/kv/ha/noquorum", data=b"x", timeout=30)
        took = time.monotonic() - t0
        assert r.status_code == 500
        assert "quorum" in r.text and "etcd" in r.text
        assert took < 15, f"took {took:.1f}s: should fail clearly, not hang"
    finally:
        stop_registry(reg)
