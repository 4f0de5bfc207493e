"""A lost node, with the data: redis with a gold dataset (one replica) on node2 receives writes in a loop;
node2 is killed (engine, agent and containers at once, as a power cut); redis answers on another node with
the writes its replica held; a container without the policy stays listed, Host Down; node2 comes back: no
duplicate container, its old copy of the dataset a replica again. Classic Swarm's policy words are checked
(an unknown one is a 400 naming it), and `shoal node drain` moves a node's work away."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.test_moves import (
    Writer,
    _answers,
    _name,
    _redis,
    _wait,
    inspect,
    pool_role,
    redis,
    shoal,
    writable_copies,
)

pytestmark = pytest.mark.e2e


def _listed(dev_cluster) -> list[dict]:
    """`docker ps -a` through the manager (a format without .Size: the CLI then asks for no sizes, so the
    manager answers from its cache, which keeps a lost node's containers listed)."""
    out = dev_cluster.cli("ps", "-a", "--format", "{{.Names}}\t{{.State}}\t{{.Status}}").stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return [{"Names": r[0], "State": r[1], "Status": r[2]} for r in rows]


def _agent_passing(dev_cluster, node: str) -> bool:
    try:
        _, checks = dev_cluster.consul().health.checks("shoal-agent")
    except Exception:
        return False
    return any(c.get("Node") == node and c.get("Status") == "passing" for c in checks)


def test_a_lost_node_reschedules_redis_onto_its_replica_and_comes_back_clean(dev_cluster, gone):
    vol = _name("ha")
    name = _redis(dev_cluster, gone, "node2", vol, "-e", "reschedule:on-node-failure")
    plain = _name("plain")
    gone["containers"].append(plain)
    dev_cluster.cli("run", "-d", "--name", plain, "-e", "constraint:node==node2", "busybox", "sleep", "1000")
    i = inspect(dev_cluster, vol)["id"]
    w = Writer([dev_cluster.address(n) for n in ("node2", "node1", "node3")], "w")
    w.start()
    _wait(
        lambda: [r["lag"] is not None for r in inspect(dev_cluster, vol)["replicas"]] == [True],
        40,
        "the replica never got a copy",
    )
    [replica] = inspect(dev_cluster, vol)["replicas"]
    same = '{{index .Config.Labels "com.docker.swarm.id"}} {{json .Config.Cmd}}'
    same += " {{json .HostConfig.PortBindings}}"
    before = dev_cluster.cli("inspect", "-f", same, name).stdout.strip()
    time.sleep(3)  # the writer's loop runs on; the replica ships every 2 s
    killed = time.monotonic()
    shoal(
        dev_cluster,
        "dev",
        "node",
        "kill",
        "node2",
        "--name",
        dev_cluster.name,
        "--root",
        str(dev_cluster.root),
    )
    acked_at_kill = len(w.acked)
    there = dev_cluster.address(replica["node"])
    _wait(lambda: _answers(there), 60, f"redis never answered on {replica['node']}")
    answered = time.monotonic() - killed
    _wait(lambda: w.where == there and w.acked[-1][1] > killed, 30, "the writer never wrote there")
    w.stop.set()
    w.join(5)
    held = sum(1 for k, _ in w.acked[:acked_at_kill] if redis(there, "GET", f"w{k}", timeout=2) == str(k))
    lost = acked_at_kill - held
    lost_ids = [k for k, _ in w.acked[:acked_at_kill] if redis(there, "GET", f"w{k}", timeout=2) != str(k)]
    # what was lost is only the tail written after the replica's last copy: never a write in the middle
    assert lost_ids == list(range(acked_at_kill - lost, acked_at_kill))
    print(
        f"node2 killed → redis answered on {replica['node']} after {answered:.1f}s; it holds {held} of the "
        f"{acked_at_kill} writes acknowledged before the kill ({lost} lost)"
    )

    rows = {r["Names"]: r for r in _listed(dev_cluster)}
    assert f"{replica['node']}/{name}" in rows and rows[f"{replica['node']}/{name}"]["State"] == "running"
    # created again as it was: the same com.docker.swarm.id, command and published port
    assert dev_cluster.cli("inspect", "-f", same, f"{replica['node']}/{name}").stdout.strip() == before
    assert before.split()[0] and len(before.split()[0]) == 64, before
    assert rows[f"node2/{plain}"]["Status"] == "Host Down"  # no policy: it stays, listed, where it was
    assert not any(n.endswith(f"/{plain}") and not n.startswith("node2/") for n in rows)
    doc = inspect(dev_cluster, vol)
    assert doc["node"] == replica["node"] and doc["epoch"] >= 1
    assert writable_copies(dev_cluster, i) == [replica["node"]]
    why = dev_cluster.cli("inspect", "-f", "{{.Id}}", name).stdout.strip()
    reasons = shoal(dev_cluster, "why", why).stdout
    assert "node2 is down" in reasons and "replica was promoted" in reasons, reasons

    # dockerd, restoring the container whose dataset is a shoal volume, retries the volume plugin (the
    # agent, started after it) for ~30 s before it answers: `dev node start`'s own 30 s wait may give up
    # first on a busy machine; the node is waited for here, as long as it takes
    shoal(
        dev_cluster,
        "dev",
        "node",
        "start",
        "node2",
        "--name",
        dev_cluster.name,
        "--root",
        str(dev_cluster.root),
        check=False,
    )
    _wait(lambda: _agent_passing(dev_cluster, "node2"), 180, "node2's agent never came back")
    _wait(
        lambda: sum(r["Names"].endswith(f"/{name}") for r in _listed(dev_cluster)) == 1,
        60,
        "the stale copy on node2 was not removed",
    )
    rows = {r["Names"]: r for r in _listed(dev_cluster)}
    assert f"node2/{plain}" in rows  # still there, exited by the power cut, never rescheduled
    _wait(lambda: pool_role(dev_cluster, "node2", i)[0] == "replica", 60, "node2's copy was not demoted")
    assert not pool_role(dev_cluster, "node2", i)[2]  # nothing in datasets/: no container can mount it
    _wait(
        lambda: any(
            r["node"] == "node2" and r["lag"] is not None and r["lag"] < 30
            for r in inspect(dev_cluster, vol)["replicas"]
        ),
        60,
        "node2 never caught up as a replica",
    )
    assert writable_copies(dev_cluster, i) == [replica["node"]]


def test_an_unknown_reschedule_policy_is_refused_naming_it(dev_cluster):
    got = dev_cluster.cli("run", "-d", "-e", "reschedule:sometimes", "busybox", "true", check=False)
    assert got.returncode != 0 and "unknown reschedule policy 'sometimes'" in got.stderr, got.stderr
    got = dev_cluster.cli(
        "run",
        "-d",
        "--label",
        'com.docker.swarm.reschedule-policies=["on-node-failure","never"]',
        "busybox",
        "true",
        check=False,
    )
    assert got.returncode != 0 and "unknown reschedule policy 'never'" in got.stderr, got.stderr


def test_the_policy_label_is_kept_and_every_container_gets_a_swarm_id(dev_cluster, gone):
    c = _name("lbl")
    gone["containers"].append(c)
    dev_cluster.cli("create", "--name", c, "-e", "reschedule:on-node-failure", "busybox", "true")
    labels = json.loads(dev_cluster.cli("inspect", "-f", "{{json .Config.Labels}}", c).stdout)
    env = json.loads(dev_cluster.cli("inspect", "-f", "{{json .Config.Env}}", c).stdout)
    assert json.loads(labels["com.docker.swarm.reschedule-policies"]) == ["on-node-failure"]
    assert len(labels["com.docker.swarm.id"]) == 64 and not any(
        e.startswith("reschedule:") for e in env or []
    )


def test_drain_moves_a_nodes_policy_containers_with_their_data_and_undrain_allows_it_again(dev_cluster, gone):
    vol = _name("dr")
    name = _redis(dev_cluster, gone, "node3", vol, "-e", "reschedule:on-node-failure")
    redis(dev_cluster.address("node3"), "SET", "kept", "yes")
    try:
        out = shoal(dev_cluster, "node", "drain", "node3").stdout
        assert "node3: draining" in out and f"moved {name} to" in out, out
        node = dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", name).stdout.strip()
        assert node != "node3" and inspect(dev_cluster, vol)["node"] == node
        _wait(lambda: _answers(dev_cluster.address(node)), 30)
        assert redis(dev_cluster.address(node), "GET", "kept") == "yes"
        refused = dev_cluster.cli(
            "run", "--rm", "-e", "constraint:node==node3", "busybox", "true", check=False
        )
        assert refused.returncode != 0 and "node!=node3" in refused.stderr, refused.stderr
        assert _availability(dev_cluster) == {"node1": "active", "node2": "active", "node3": "drain"}
    finally:
        shoal(dev_cluster, "node", "undrain", "node3")
    dev_cluster.cli("run", "--rm", "-e", "constraint:node==node3", "busybox", "true")
    assert set(_availability(dev_cluster).values()) == {"active"}


def _availability(dev_cluster) -> dict[str, str]:
    """Each node's `└ Availability` line in `docker info` (swarm mode's word for a draining node)."""
    out, node, got = dev_cluster.cli("info").stdout, "", {}
    for line in out.splitlines():
        if line.startswith("  node") and ":" in line:
            node = line.strip().split(":", 1)[0]
        elif "└ Availability:" in line:
            got[node] = line.split(":", 1)[1].strip()
    return got
