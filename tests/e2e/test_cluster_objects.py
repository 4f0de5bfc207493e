"""One identity for cluster-wide networks and volumes: made through the manager, one is made on every node
but listed once, by its bare name and the manager's id, which inspect, connect, disconnect and rm take for a
container on any node; one node's own object keeps classic Swarm's `node/name`. Through the real docker
CLI, docker-py's models and docker-compose 1.29."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
import uuid

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

SWARM_ID = "com.docker.swarm.id"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _node_ids(dev_cluster, net: str) -> dict[str, str]:
    """Each engine's own id for its network `net` (nodes that have none left out)."""
    out = {}
    for node in dev_cluster.nodes:
        got = dev_cluster.docker(node, "network", "inspect", "-f", "{{.Id}}", net, check=False)
        if got.returncode == 0:
            out[node] = got.stdout.strip()
    return out


def _listed(dev_cluster, what: str) -> list[str]:
    args = ("--no-trunc", "--format", "{{.ID}} {{.Name}}") if what == "network" else ("--format", "{{.Name}}")
    return dev_cluster.cli(what, "ls", *args).stdout.splitlines()


def _on_node(dev_cluster, node: str, name: str) -> None:
    dev_cluster.cli("run", "-d", "--name", name, "-e", f"constraint:node=={node}", "busybox", "sleep", "120")


def _networks_of(dev_cluster, ct: str) -> dict:
    return json.loads(dev_cluster.cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", ct).stdout)


def test_a_network_made_through_the_manager_is_one_object_with_one_id(dev_cluster, gone):
    net = _name("one")
    a, b = _name("on1"), _name("on3")
    gone["containers"] += [a, b]
    nid = dev_cluster.cli("network", "create", net).stdout.strip()
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", nid)
        own = _node_ids(dev_cluster, net)
        assert sorted(own) == sorted(dev_cluster.nodes) and nid not in own.values()
        for node in dev_cluster.nodes:  # each copy carries the manager's id
            label = dev_cluster.docker(
                node, "network", "inspect", "-f", f'{{{{index .Labels "{SWARM_ID}"}}}}', net
            )
            assert label.stdout.strip() == nid
        rows = [r for r in _listed(dev_cluster, "network") if r.endswith(f"/{net}") or r.endswith(f" {net}")]
        assert rows == [f"{nid} {net}"]  # once, bare, with the manager's id
        short = dev_cluster.cli("network", "ls", "--format", "{{.ID}}", "--filter", f"id={nid[:12]}").stdout
        assert short.split() == [nid[:12]]

        inspected = json.loads(dev_cluster.cli("network", "inspect", nid[:12]).stdout)[0]
        assert inspected["Id"] == nid and inspected["Name"] == net
        assert inspected["Nodes"] == sorted(dev_cluster.nodes) and inspected["NodeIds"] == own

        # the id the create answered connects a container on any node, to that node's copy
        _on_node(dev_cluster, "node1", a)
        _on_node(dev_cluster, "node3", b)
        for ct, node in ((a, "node1"), (b, "node3")):
            dev_cluster.cli("network", "connect", nid, ct)
            assert _networks_of(dev_cluster, ct)[net]["NetworkID"] == own[node]
        members = json.loads(dev_cluster.cli("network", "inspect", net).stdout)[0]["Containers"]
        assert sorted(m["Name"] for m in members.values()) == sorted([a, b])

        busy = dev_cluster.cli("network", "rm", nid, check=False)
        assert busy.returncode != 0 and "has active endpoints" in busy.stderr and f"node3: {b}" in busy.stderr
        assert sorted(_node_ids(dev_cluster, net)) == sorted(dev_cluster.nodes)  # nothing half-removed

        for ct in (a, b):
            dev_cluster.cli("network", "disconnect", nid, ct)
            assert net not in _networks_of(dev_cluster, ct)
        dev_cluster.cli("network", "rm", nid)
        assert _node_ids(dev_cluster, net) == {}
        missing = dev_cluster.cli("network", "inspect", nid, check=False)
        assert missing.returncode != 0 and f"network {nid} not found" in missing.stderr
    finally:
        dev_cluster.cli("rm", "-f", a, b, check=False)
        dev_cluster.cli("network", "rm", net, check=False)


def test_one_nodes_network_keeps_its_node_name(dev_cluster, gone):
    mine, direct, ct = _name("mine"), _name("direct"), _name("elsewhere")
    gone["containers"].append(ct)
    try:
        made = dev_cluster.cli("network", "create", f"node2/{mine}").stdout.strip()
        dev_cluster.docker("node3", "network", "create", direct)
        assert _node_ids(dev_cluster, mine) == {"node2": made}  # the engine's own id: it is node2's alone
        names = [r.split()[1] for r in _listed(dev_cluster, "network")]
        assert f"node2/{mine}" in names and f"node3/{direct}" in names
        assert mine not in names and direct not in names
        assert json.loads(dev_cluster.cli("network", "inspect", f"node2/{mine}").stdout)[0]["Id"] == made

        _on_node(dev_cluster, "node1", ct)
        refused = dev_cluster.cli("network", "connect", mine, ct, check=False)
        assert refused.returncode != 0
        assert f"network {mine} is not on node1, where the container is (it is on node2)" in refused.stderr
        dup = dev_cluster.cli("network", "create", direct, check=False)
        assert dup.returncode != 0 and f"network with name {direct} already exists (on node3)" in dup.stderr
        nowhere = dev_cluster.cli("network", "create", f"node9/{mine}", check=False)
        assert nowhere.returncode != 0 and "no node named 'node9'" in nowhere.stderr
    finally:
        dev_cluster.cli("network", "rm", f"node2/{mine}", check=False)
        dev_cluster.docker("node3", "network", "rm", direct, check=False)
    assert _node_ids(dev_cluster, mine) == {}


def test_a_copy_deleted_on_its_node_leaves_the_id_and_a_connect_there_makes_it_again(dev_cluster, gone):
    net, ct = _name("heal"), _name("on3")
    gone["containers"].append(ct)
    nid = dev_cluster.cli("network", "create", "--subnet", "10.231.7.0/24", net).stdout.strip()
    try:
        dev_cluster.docker("node3", "network", "rm", net)
        # the manager hears of the removal from node3's events (tens of ms): what it lists follows
        inspected = wait_for(
            lambda: (got := json.loads(dev_cluster.cli("network", "inspect", net).stdout)[0])["Nodes"]
            == ["node1", "node2"]
            and got,
            30,
            "the manager never saw node3's copy go",
        )
        assert inspected["Id"] == nid
        _on_node(dev_cluster, "node3", ct)
        dev_cluster.cli("network", "connect", nid, ct)
        remade = dev_cluster.docker("node3", "network", "inspect", net).stdout
        copy = json.loads(remade)[0]
        assert copy["Labels"][SWARM_ID] == nid and copy["IPAM"]["Config"][0]["Subnet"] == "10.231.7.0/24"
        assert _networks_of(dev_cluster, ct)[net]["IPAddress"].startswith("10.231.7.")
        assert json.loads(dev_cluster.cli("network", "inspect", nid).stdout)[0]["Nodes"] == sorted(
            dev_cluster.nodes
        )
        dev_cluster.cli("rm", "-f", ct)
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)
        dev_cluster.cli("network", "rm", net, check=False)


def test_a_volume_made_through_the_manager_is_one_name(dev_cluster, gone):
    vol, local, direct, ct = _name("vol"), _name("local"), _name("direct"), _name("user")
    gone["containers"].append(ct)
    gone["volumes"] += [vol, f"node3/{local}", f"node1/{direct}"]
    dev_cluster.cli("volume", "create", "--label", "app=shop", vol)
    dev_cluster.cli("volume", "create", f"node3/{local}")
    dev_cluster.docker("node1", "volume", "create", direct)
    listed = _listed(dev_cluster, "volume")
    assert vol in listed and not any(n.endswith(f"/{vol}") for n in listed)
    assert f"node3/{local}" in listed and f"node1/{direct}" in listed
    inspected = json.loads(dev_cluster.cli("volume", "inspect", vol).stdout)[0]
    assert inspected["Name"] == vol and inspected["Status"]["Nodes"] == sorted(dev_cluster.nodes)
    assert inspected["Labels"]["app"] == "shop" and re.fullmatch(
        r"[0-9a-f]{64}", inspected["Labels"][SWARM_ID]
    )

    # a create of the same name is that volume, as on one engine; one held by a node alone is refused
    dev_cluster.cli("volume", "create", vol)
    assert _listed(dev_cluster, "volume").count(vol) == 1
    taken = dev_cluster.cli("volume", "create", direct, check=False)
    assert taken.returncode != 0 and f"volume {direct} already exists on node1 only" in taken.stderr
    assert [
        n for n in dev_cluster.nodes if direct in dev_cluster.docker(n, "volume", "ls", "-q").stdout.split()
    ] == ["node1"]

    # its data stays with its node: a container mounting node3's volume lands on node3
    dev_cluster.cli("run", "-d", "--name", ct, "-v", f"{local}:/data", "busybox", "sleep", "120")
    assert dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", ct).stdout.strip() == "node3"
    busy = dev_cluster.cli("volume", "rm", local, check=False)
    assert busy.returncode != 0 and "volume is in use" in busy.stderr
    dev_cluster.cli("rm", "-f", ct)

    dev_cluster.cli("volume", "rm", vol, local)
    assert not any(
        v in dev_cluster.docker(n, "volume", "ls", "-q").stdout.split()
        for n in dev_cluster.nodes
        for v in (vol, local)
    )


def test_docker_py_network_and_volume_models(dev_cluster, gone):
    client = dev_cluster.docker_py()
    net, vol, ct = _name("pynet"), _name("pyvol"), _name("pyct")
    gone["containers"].append(ct)
    gone["volumes"].append(vol)
    network = client.networks.create(net, labels={"made": "by-py"})
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", network.id) and network.name == net
        assert network.id not in _node_ids(dev_cluster, net).values()
        container = client.containers.run(
            "busybox", "sleep 120", name=ct, detach=True, environment=["constraint:node==node3"]
        )
        network.connect(container, aliases=["shop"])
        container.reload()
        assert container.attrs["NetworkSettings"]["Networks"][net]["Aliases"][:1] == ["shop"]
        network.reload()
        assert [c.name for c in network.containers] == [ct]
        got = client.networks.get(network.id)
        assert got.id == network.id and got.attrs["Labels"]["made"] == "by-py"
        assert [n.id for n in client.networks.list(ids=[network.id[:12]])] == [network.id]
        assert [n.name for n in client.networks.list(names=[net])] == [net]
        network.disconnect(container)
        container.remove(force=True)
        network.remove()
        assert _node_ids(dev_cluster, net) == {}

        made = client.volumes.create(vol)
        assert made.name == vol
        assert [v.name for v in client.volumes.list() if v.name.endswith(vol)] == [vol]
        assert client.volumes.get(vol).attrs["Status"]["Nodes"] == sorted(dev_cluster.nodes)
        client.volumes.get(vol).remove()
        assert not any(
            vol in dev_cluster.docker(n, "volume", "ls", "-q").stdout.split() for n in dev_cluster.nodes
        )
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)
        dev_cluster.cli("network", "rm", net, check=False)


COMPOSE = textwrap.dedent(
    """\
    version: "2.4"
    services:
      front:
        image: busybox
        command: sleep 300
        networks: [public, private]
        environment: ["constraint:node==node1"]
      back:
        image: busybox
        command: sleep 300
        networks: [private]
        volumes: ["data:/data"]
        environment: ["constraint:node==node3"]
    networks:
      public: {}
      private: {}
    volumes:
      data: {}
    """
)


def test_compose_project_with_two_networks_and_a_volume(dev_cluster, tmp_path):
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return dev_cluster.compose(tmp_path, "twonets", *args)

    try:
        compose("up", "-d")
        names = [r.split()[1] for r in _listed(dev_cluster, "network")]
        assert {"twonets_public", "twonets_private"} <= set(names)
        assert not any(n.endswith("/twonets_public") or n.endswith("/twonets_private") for n in names)
        assert sorted(_networks_of(dev_cluster, "twonets_front_1")) == ["twonets_private", "twonets_public"]
        assert sorted(_networks_of(dev_cluster, "twonets_back_1")) == ["twonets_private"]
        assert "twonets_data" in _listed(dev_cluster, "volume")
        labels = json.loads(dev_cluster.cli("network", "inspect", "twonets_private").stdout)[0]["Labels"]
        assert labels["com.docker.compose.network"] == "private" and SWARM_ID in labels
        compose("down", "-v")
        assert all(_node_ids(dev_cluster, n) == {} for n in ("twonets_public", "twonets_private"))
        assert "twonets_data" not in _listed(dev_cluster, "volume")
    finally:
        dev_cluster.compose(tmp_path, "twonets", "down", "-v", check=False)


DEBIAN_CLI = "/usr/bin/docker"  # Debian's docker.io 20.10, beside the docker CLI 28 on PATH


def test_the_debian_20_10_cli_sees_the_same_one_object(dev_cluster):
    version = subprocess.run([DEBIAN_CLI, "--version"], capture_output=True, text=True)
    if version.returncode != 0 or "20.10" not in version.stdout:
        pytest.skip(f"no docker CLI 20.10 at {DEBIAN_CLI}")

    def old(*args: str) -> str:
        p = subprocess.run([DEBIAN_CLI, *args], capture_output=True, text=True, env=dev_cluster.client_env())
        assert p.returncode == 0, p.stderr
        return p.stdout

    net = _name("old")
    nid = old("network", "create", net).strip()
    try:
        assert old(
            "network", "ls", "--no-trunc", "--filter", f"name={net}", "--format", "{{.ID}} {{.Name}}"
        ) == (f"{nid} {net}\n")
        assert (
            old("network", "inspect", "-f", "{{.Id}} {{.Nodes}}", nid[:12]) == f"{nid} [node1 node2 node3]\n"
        )
        old("volume", "create", net)
        assert (
            old("volume", "inspect", "-f", "{{.Name}} {{.Status.Nodes}}", net)
            == f"{net} [node1 node2 node3]\n"
        )
        old("volume", "rm", net)
        old("network", "rm", nid)
        assert _node_ids(dev_cluster, net) == {}
    finally:
        dev_cluster.cli("network", "rm", net, check=False)
        dev_cluster.cli("volume", "rm", net, check=False)


def test_a_container_joins_a_cluster_network_by_its_manager_id(dev_cluster, gone):
    """`docker run --net ID` with the id the create answered: each node knows the network by its name."""
    net, ct = _name("byid"), _name("byid")
    gone["containers"].append(ct)
    nid = dev_cluster.cli("network", "create", net).stdout.strip()
    try:
        dev_cluster.cli(
            "run",
            "-d",
            "--name",
            ct,
            "--net",
            nid[:12],
            "-e",
            "constraint:node==node3",
            "busybox",
            "sleep",
            "60",
        )
        assert list(_networks_of(dev_cluster, ct)) == [net]
        assert _networks_of(dev_cluster, ct)[net]["NetworkID"] == _node_ids(dev_cluster, net)["node3"]
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)
        dev_cluster.cli("network", "rm", nid, check=False)


def test_a_volume_several_nodes_hold_each_as_their_own_is_refused_with_the_nodes(dev_cluster, gone):
    vol, ct = _name("own"), _name("own")
    gone["containers"].append(ct)
    for node in ("node1", "node2"):
        dev_cluster.docker(node, "volume", "create", vol)
    try:  # made on the nodes directly: the manager hears of them from their events
        listed = {f"node1/{vol}", f"node2/{vol}"}
        deadline = time.monotonic() + 30
        while not listed <= set(_listed(dev_cluster, "volume")):
            assert time.monotonic() < deadline, "the manager never listed the volumes made on the nodes"
            time.sleep(0.2)
        refused = dev_cluster.cli("run", "--name", ct, "-v", f"{vol}:/data", "busybox", "true", check=False)
        assert refused.returncode != 0
        assert f"volume {vol} is held by node1, node2 each as its own" in refused.stderr, refused.stderr
        assert ct not in dev_cluster.cli("ps", "-a", "--format", "{{.Names}}").stdout  # nothing made
    finally:
        for node in ("node1", "node2"):
            dev_cluster.docker(node, "volume", "rm", vol, check=False)
