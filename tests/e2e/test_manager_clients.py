"""docker-compose 1.29 and docker-py 7, unchanged, driving the whole cluster through the manager."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

import docker
import pytest

pytestmark = pytest.mark.e2e

COMPOSE = textwrap.dedent(
    """\
    version: "2.4"
    services:
      db:
        image: redis
        environment:
          - "constraint:node==node2"
      web:
        image: busybox
        command: sh -c 'echo web up; exec sleep 300'
        labels:
          com.docker.swarm.affinities: '["container==shop_db_1"]'
        depends_on: [db]
      worker:
        image: busybox
        command: sh -c 'echo worker up; exec sleep 300'
        environment:
          - "constraint:node!=node2"
    """
)


def _where(dev_cluster, project: str) -> dict[str, str]:
    """container name -> node, as the manager's `docker ps` shows it (node/name)."""
    out = dev_cluster.cli(
        "ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}"
    ).stdout.split()
    return {n.split("/")[1]: n.split("/")[0] for n in out}


def test_compose_up_ps_logs_scale_down_through_the_manager(dev_cluster, tmp_path):
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return dev_cluster.compose(tmp_path, "shop", *args)

    try:
        compose("up", "-d")
        where = _where(dev_cluster, "shop")
        assert where["shop_db_1"] == "node2"  # constraint from the environment
        assert where["shop_web_1"] == "node2"  # affinity from the labels: with the db
        assert where["shop_worker_1"] != "node2"
        ps = compose("ps").stdout
        assert all(f"shop_{s}_1" in ps for s in ("db", "web", "worker")) and ps.count(" Up ") == 3

        deadline = time.monotonic() + 10
        while "worker up" not in (logs := compose("logs", "--no-color").stdout):
            assert time.monotonic() < deadline, logs
            time.sleep(0.2)
        assert "web up" in logs and "Ready to accept connections" in logs

        compose("scale", "worker=3")
        where = _where(dev_cluster, "shop")
        workers = {n: node for n, node in where.items() if "worker" in n}
        assert len(workers) == 3 and "node2" not in workers.values()
        assert set(workers.values()) == {"node1", "node3"}  # spread over the nodes the constraint leaves

        compose("down")
        assert _where(dev_cluster, "shop") == {}
        for node in dev_cluster.nodes:  # the project network was made on every node, and removed from all
            nets = dev_cluster.docker(node, "network", "ls", "--format", "{{.Name}}").stdout.split()
            assert "shop_default" not in nets
    finally:
        dev_cluster.compose(tmp_path, "shop", "down", "-v", check=False)


def test_docker_py_run_list_logs_get_remove(dev_cluster):
    client = dev_cluster.docker_py()  # docker.from_env(): DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
    name = "py-" + os.urandom(3).hex()
    try:
        ct = client.containers.run(
            "busybox",
            "sh -c 'echo hello from docker-py; exec sleep 60'",
            name=name,
            detach=True,
            environment=["constraint:node==node3"],
        )
        got = client.containers.get(name)
        assert got.id == ct.id and got.attrs["Node"]["Name"] == "node3" and got.status == "running"
        assert name in [c.name for c in client.containers.list()]
        deadline = time.monotonic() + 5
        while b"hello from docker-py" not in got.logs():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert (
            client.containers.run("busybox", "echo in the foreground", remove=True) == b"in the foreground\n"
        )
        got.remove(force=True)
        assert name not in [c.name for c in client.containers.list(all=True)]
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(name)
        with pytest.raises(docker.errors.APIError) as err:
            client.containers.run("busybox", "true", environment=["constraint:==x"])
        assert err.value.status_code == 400 and "has no key" in err.value.explanation
    finally:
        client.close()
        dev_cluster.cli("rm", "-f", name, check=False)
