"""The 3-node dev cluster does what issue 2 promises, seen through the real docker CLI and redis-cli."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import CLUSTER_SUBNET, SESSION_UP, shoal

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("node", ["node1", "node2", "node3"])
def test_every_node_runs_a_container(dev_cluster, node):
    out = dev_cluster.docker(node, "run", "--rm", "busybox", "echo", "ok").stdout
    assert out == "ok\n"


def test_each_engine_names_its_node_and_carries_its_labels(dev_cluster):
    names = {
        n: dev_cluster.docker(n, "info", "--format", "{{.Name}}").stdout.strip() for n in dev_cluster.nodes
    }
    assert names == {"node1": "node1", "node2": "node2", "node3": "node3"}
    assert "disk=ssd" in dev_cluster.docker("node1", "info", "--format", "{{.Labels}}").stdout
    assert "disk=ssd" not in dev_cluster.docker("node2", "info", "--format", "{{.Labels}}").stdout


def test_every_node_has_the_same_local_images(dev_cluster):
    ids = {
        n: sorted(
            dev_cluster.docker(n, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.split()
        )
        for n in dev_cluster.nodes
    }
    assert ids["node1"] == ids["node2"] == ids["node3"]
    assert "busybox:latest" in ids["node1"] and "redis:latest" in ids["node1"]


def test_a_container_on_node1_reaches_a_port_published_on_node2(dev_cluster):
    name = "cross-node-web"
    dev_cluster.docker("node2", "rm", "-f", name, check=False)
    dev_cluster.docker(
        "node2",
        "run",
        "-d",
        "--name",
        name,
        "-p",
        "8080:80",
        "busybox",
        "sh",
        "-c",
        "echo hello-from-node2 > /tmp/index.html && httpd -f -p 80 -h /tmp",
    )
    try:
        url = f"http://{dev_cluster.address('node2')}:8080/index.html"
        out = dev_cluster.docker(
            "node1",
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            f"for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- {url} && exit 0; sleep 0.2; done; exit 1",
        )
        assert out.stdout.strip() == "hello-from-node2"
    finally:
        dev_cluster.docker("node2", "rm", "-f", name, check=False)


def test_redis_cli_talks_to_a_redis_container_on_its_node(dev_cluster):
    name = "redis-e2e"
    dev_cluster.docker("node3", "rm", "-f", name, check=False)
    dev_cluster.docker("node3", "run", "-d", "--name", name, "-p", "6379:6379", "redis")
    try:
        addr = dev_cluster.address("node3")
        deadline = time.monotonic() + 10
        while True:
            pong = subprocess.run(["redis-cli", "-h", addr, "ping"], capture_output=True, text=True)
            if pong.stdout.strip() == "PONG" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert pong.stdout.strip() == "PONG"
        subprocess.run(["redis-cli", "-h", addr, "set", "greeting", "hello"], check=True, capture_output=True)
        got = subprocess.run(["redis-cli", "-h", addr, "get", "greeting"], capture_output=True, text=True)
        assert got.stdout.strip() == "hello"
    finally:
        dev_cluster.docker("node3", "rm", "-f", name, check=False)


def test_status_shows_every_node_healthy(dev_cluster):
    out = shoal("dev", "status", "--name", dev_cluster.name, "--root", str(dev_cluster.root)).stdout
    for node in ("node1", "node2", "node3"):
        line = next(line for line in out.splitlines() if f" {node} " in line)
        assert "healthy" in line and "unhealthy" not in line
        assert dev_cluster.address(node) in line


def test_env_points_docker_at_the_cluster(dev_cluster):
    out = shoal("dev", "env", "--name", dev_cluster.name, "--root", str(dev_cluster.root)).stdout
    assert f"export DOCKER_HOST=tcp://{dev_cluster.gateway}:2376" in out  # the manager, over mutual TLS
    assert (
        "export DOCKER_TLS_VERIFY=1" in out
        and f"export CONSUL_HTTP_ADDR=https://{dev_cluster.gateway}:8501" in out
    )
    assert f"export SHOAL_NODE_NODE3={dev_cluster.nodes['node3']}" in out
    fmt = '--format "{{.Server.Version}}"'
    script = f"{out}\ndocker version {fmt}\ndocker -H $SHOAL_NODE_NODE2 version {fmt}"
    version = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout.split()
    assert version[0].startswith("shoal/") and version[1].startswith("20.10")


def test_up_again_is_a_no_op(dev_cluster):
    again = shoal("dev", "up", *SESSION_UP)
    assert "already up (3 nodes); nothing to do" in again.stdout
    assert dev_cluster.docker("node1", "run", "--rm", "busybox", "echo", "ok").stdout == "ok\n"


def test_up_with_another_shape_is_refused_and_changes_nothing(dev_cluster):
    other = shoal(
        "dev",
        "up",
        "--nodes",
        "2",
        "--subnet",
        CLUSTER_SUBNET,
        "--name",
        dev_cluster.name,
        "--root",
        str(dev_cluster.root),
        check=False,
    )
    assert other.returncode == 1
    assert "already up with 3 nodes" in other.stderr and "shoal dev down" in other.stderr
    assert dev_cluster.docker("node3", "info", "--format", "{{.Name}}").stdout.strip() == "node3"


def test_the_cluster_registry_answers_the_host_and_containers_on_every_node(dev_cluster):
    gateway = dev_cluster.gateway
    c = dev_cluster.consul()  # HTTPS, checked against the node CA, as CONSUL_CACERT says
    c.kv.put("e2e/greeting", "hello-cluster")
    assert c.kv.get("e2e/greeting")[1]["Value"] == b"hello-cluster"
    for node in dev_cluster.nodes:  # every node reaches the registry's HTTPS port (busybox has no TLS client)
        dev_cluster.docker(node, "run", "--rm", "busybox", "sh", "-c", f"nc -w 5 {gateway} 8501 </dev/null")
    dig = subprocess.run(
        ["dig", f"@{gateway}", "-p", "8600", "manager.node.shoal", "+short"], capture_output=True, text=True
    ).stdout
    assert dig.strip() == gateway
    status = shoal("dev", "status", "--name", dev_cluster.name, "--root", str(dev_cluster.root)).stdout
    assert f"registry: healthy https://{gateway}:8501" in status
