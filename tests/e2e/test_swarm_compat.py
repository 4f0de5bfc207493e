"""Classic Swarm's behaviours that scripts rely on, through the manager with the real docker CLI: its
refusals' first lines, the host-mode port filter, `com.docker.swarm.id`, the expression labels as bash
users write them, container slots, dockerd's name checks cluster-wide, dependencies placed together, and
`docker ps` sorted, cut and filtered across the nodes as dockerd does, a node that does not answer
included."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import uuid

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.e2e
NO_RESOURCES = "no resources available to schedule container"
UNABLE = "Unable to find a node that satisfies the following conditions"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _node_of(dev_cluster, container: str) -> str:
    return dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", container).stdout.strip()


def _daemon_error(proc) -> list[str]:
    """The lines of `Error response from daemon: ...` as the docker CLI printed them."""
    text = proc.stderr.split("Error response from daemon: ", 1)[-1]
    return [line for line in text.splitlines() if line.strip()]


def test_memory_no_node_has_is_swarms_no_resources_refusal_with_each_nodes_reason(dev_cluster, gone):
    name = _name("huge")
    gone["containers"].append(name)
    got = dev_cluster.cli("run", "-d", "--name", name, "-m", "1000G", "busybox", "true", check=False)
    assert got.returncode != 0
    lines = _daemon_error(got)
    assert lines[0] == NO_RESOURCES, got.stderr
    for node in dev_cluster.nodes:
        assert re.search(rf"{node} memory 1024000M > free \d+M", got.stderr), got.stderr
    assert name not in dev_cluster.cli("ps", "-a", "--format", "{{.Names}}").stdout  # nothing half-made
    # what fits is placed as before
    dev_cluster.cli("run", "-d", "--name", name, "-m", "16M", "busybox", "sleep", "30")


def test_a_host_mode_exposed_port_takes_that_port_on_its_node(dev_cluster, gone):
    first, second, other_proto = _name("host80"), _name("host80b"), _name("host80u")
    gone["containers"] += [first, second, other_proto]
    on2 = ["-e", "constraint:node==node2", "--net=host"]
    dev_cluster.cli("run", "-d", "--name", first, *on2, "--expose=80", "busybox", "sleep", "60")
    got = dev_cluster.cli(
        "run", "-d", "--name", second, *on2, "--expose=80", "busybox", "sleep", "60", check=False
    )
    assert got.returncode != 0
    lines = _daemon_error(got)
    assert lines[0] == UNABLE and "[constraint:node==node2]" in lines, got.stderr
    assert "node2 port 80/tcp (Host mode) is in use" in got.stderr, got.stderr
    # udp 80 is another port; and without the node constraint the second one lands elsewhere
    dev_cluster.cli("run", "-d", "--name", other_proto, *on2, "--expose=80/udp", "busybox", "sleep", "60")
    dev_cluster.cli("run", "-d", "--name", second, "--net=host", "--expose=80", "busybox", "sleep", "60")
    assert _node_of(dev_cluster, second) != "node2"


def test_every_container_carries_a_swarm_id_that_is_not_its_container_id(dev_cluster, gone):
    a, b = _name("sid"), _name("sid")
    gone["containers"] += [a, b]
    ids = {}
    for name in (a, b):
        cid = dev_cluster.cli("create", "--name", name, "busybox", "true").stdout.strip()
        swarm_id = dev_cluster.cli(
            "inspect", "-f", '{{index .Config.Labels "com.docker.swarm.id"}}', name
        ).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{64}", swarm_id), swarm_id
        assert swarm_id != cid
        ids[name] = swarm_id
    assert ids[a] != ids[b]
    # docker-py sees the same label
    assert dev_cluster.docker_py().containers.get(a).labels["com.docker.swarm.id"] == ids[a]


def test_expression_labels_are_read_as_bash_users_write_them(dev_cluster, gone):
    anchor, away, pinned = _name("c1"), _name("away"), _name("pinned")
    gone["containers"] += [anchor, away, pinned]
    dev_cluster.cli("run", "-d", "--name", anchor, "-e", "constraint:node==node1", "busybox", "sleep", "60")
    # as typed in bash: "container\!=c1" keeps `!` from history expansion, and the backslash stays in
    label = f'com.docker.swarm.affinities=["container\\!={anchor}"]'
    assert "\\!" in label
    for _ in range(3):  # away from node1, however spread would have placed it
        name = _name("away")
        gone["containers"].append(name)
        dev_cluster.cli("run", "-d", "--name", name, "-l", label, "busybox", "sleep", "60")
        assert _node_of(dev_cluster, name) != "node1"
    dev_cluster.cli(
        "run", "-d", "--name", pinned, "-l", 'com.docker.swarm.constraints=["node\\!=node1","node\\!=node2"]',
        "busybox", "sleep", "60",
    )  # fmt: skip
    assert _node_of(dev_cluster, pinned) == "node3"
    labels = json.loads(dev_cluster.cli("inspect", "-f", "{{json .Config.Labels}}", pinned).stdout)
    assert json.loads(labels["com.docker.swarm.constraints"]) == ["node!=node1", "node!=node2"]
    # a label that is no JSON list even so is refused, naming it
    got = dev_cluster.cli(
        "run", "-d", "--name", away, "-l", "com.docker.swarm.affinities=container!=x", "busybox", check=False
    )
    assert got.returncode != 0 and "label com.docker.swarm.affinities must be a JSON list" in got.stderr


def _restart_agent(dev_cluster, node: str, *labels: str) -> None:
    """node's agent again, as `dev up` starts it, with extra agent labels; the state file kept true. Every
    agent in the node's namespace goes first (one left running would publish facts without the labels)."""
    from shoal.dev import host

    host.terminate(dev_cluster.agent_pids(node), grace=15.0)
    dev_cluster.start_agent(node, *(a for label in labels for a in ("--label", label)))


def _labels_line(dev_cluster, node: str) -> str:
    """node's `└ Labels:` line in `docker info`, once the node is Healthy there ("" until then)."""
    out = dev_cluster.cli("info").stdout
    block = out.split(f" {node}: ", 1)[1].split("└ ServerVersion", 1)[0]
    if "└ Status: Healthy" not in block:
        return ""
    return next(line for line in block.splitlines() if "└ Labels:" in line)


def test_containerslots_caps_the_containers_of_a_node(dev_cluster, gone):
    held = len(dev_cluster.docker("node3", "ps", "-aq").stdout.split())
    slots = held + 1
    try:
        _restart_agent(dev_cluster, "node3", f"com.docker.swarm.containerslots={slots}")
        wait_for(
            lambda: f"com.docker.swarm.containerslots={slots}" in _labels_line(dev_cluster, "node3"),
            60,
            "the manager never saw node3's containerslots label",
        )
        fits, full = _name("slot"), _name("slot")
        gone["containers"] += [fits, full]
        on3 = ["-e", "constraint:node==node3"]
        dev_cluster.cli("create", "--name", fits, *on3, "busybox", "true")  # a stopped one counts too
        got = dev_cluster.cli("create", "--name", full, *on3, "busybox", "true", check=False)
        assert got.returncode != 0
        assert _daemon_error(got)[0] == UNABLE, got.stderr
        assert f"node3 has no free container slot ({slots} containers, containerslots={slots})" in got.stderr
        dev_cluster.cli("create", "--name", full, "busybox", "true")  # the other nodes have no cap
        assert _node_of(dev_cluster, full) != "node3"
    finally:
        _restart_agent(dev_cluster, "node3")
        wait_for(
            lambda: (line := _labels_line(dev_cluster, "node3")) and "containerslots" not in line,
            60,
            "node3's containerslots label never went",
        )


def test_names_are_checked_as_dockerd_checks_them(dev_cluster, gone):
    for bad in ("a b", "x", "_x", "-x", "a/b/c", "é1"):
        engine = dev_cluster.docker("node1", "create", f"--name={bad}", "busybox", check=False)
        via = dev_cluster.cli("create", f"--name={bad}", "busybox", check=False)
        assert via.returncode != 0 and engine.returncode != 0
        assert _daemon_error(via)[0] == _daemon_error(engine)[0], (bad, via.stderr, engine.stderr)
    # a 64-hex name is a name to dockerd: made, and found by it
    hexname = secrets.token_hex(32)
    gone["containers"].append(hexname)
    cid = dev_cluster.cli("create", "--name", hexname, "busybox", "true").stdout.strip()
    assert cid != hexname
    assert dev_cluster.cli("inspect", "-f", "{{.Id}} {{.Name}}", hexname).stdout.split() == [
        cid,
        f"/{hexname}",
    ]


def test_rename_onto_a_name_used_on_any_node_fails_in_dockerds_words(dev_cluster, gone):
    one, two, free = _name("rn"), _name("rn"), _name("rn")
    gone["containers"] += [one, two, free]
    dev_cluster.cli("create", "--name", one, "-e", "constraint:node==node1", "busybox", "true")
    other = dev_cluster.cli("create", "--name", two, "-e", "constraint:node==node2", "busybox", "true")
    got = dev_cluster.cli("rename", one, two, check=False)
    assert got.returncode != 0
    assert (
        f'Error when allocating new name: Conflict. The container name "/{two}" is already in use by '
        f'container "{other.stdout.strip()}"'
    ) in got.stderr, got.stderr
    names = dev_cluster.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert f"node1/{one}" in names and names.count(f"node2/{two}") == 1 and f"node1/{two}" not in names
    bad = dev_cluster.cli("rename", one, "bad name", check=False)
    assert "Invalid container name (/bad name)" in bad.stderr, bad.stderr
    dev_cluster.cli("rename", one, free)  # a free name renames as on one engine
    assert f"node1/{free}" in dev_cluster.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()


def test_dependencies_place_together_by_name_or_short_id_or_refuse_saying_where(dev_cluster, gone):
    base = _name("dep")
    gone["containers"].append(base)
    cid = dev_cluster.cli(
        "run", "-d", "--name", base, "-e", "constraint:node==node3", "busybox", "sleep", "120"
    ).stdout.strip()
    ways = {
        "volumes-from name": ["--volumes-from", base],
        "volumes-from short id": ["--volumes-from", f"{cid[:12]}:ro"],
        "net container: short id": ["--net", f"container:{cid[:5]}"],
        "pid container:": ["--pid", f"container:{base}"],
        "ipc container: id": ["--ipc", f"container:{cid}"],
        "net container: node/name, as docker ps shows it": ["--net", f"container:node3/{base}"],
        "link node/name": ["--link", f"node3/{base}:db3"],
        "link": ["--link", f"{base}:db"],
    }
    for way, flags in ways.items():
        name = _name("dependent")
        gone["containers"].append(name)
        dev_cluster.cli("create", "--name", name, *flags, "busybox", "true")
        assert _node_of(dev_cluster, name) == "node3", way
    # links resolve by alias and by name inside the container, as on one engine
    out = dev_cluster.cli("run", "--rm", "--link", f"{base}:db", "busybox", "sh", "-c",
                          f"ping -c1 -W2 db && ping -c1 -W2 {base}")  # fmt: skip
    assert out.stdout.count("1 packets received") == 2, out.stdout
    # a dependency elsewhere than the constraint allows: refused, saying where it is
    got = dev_cluster.cli(
        "create", "-e", "constraint:node==node1", "--volumes-from", cid[:12], "busybox", check=False
    )
    assert got.returncode != 0
    assert _daemon_error(got)[0] == UNABLE
    assert f"node1 does not hold {base} (a dependency: {base} is on node3)" in got.stderr, got.stderr
    ghost = dev_cluster.cli("create", "--link", "no-such-container:x", "busybox", check=False)
    assert "no node has container no-such-container (a dependency)" in ghost.stderr, ghost.stderr


def _ps(dev_cluster, *args: str) -> list[str]:
    return dev_cluster.cli("ps", *args, "--format", "{{.Names}}").stdout.split()


def test_ps_sorts_limits_and_filters_across_nodes_as_dockerd_does(dev_cluster, gone):
    tag = uuid.uuid4().hex[:6]
    made = []
    for i, node in enumerate(("node1", "node2", "node3", "node1", "node2")):  # newest last
        name = f"ps{i}-{tag}"
        gone["containers"].append(name)
        made.append(f"{node}/{name}")
        on = ["-e", f"constraint:node=={node}", "-l", f"ps={tag}", "-l", f"n{i % 2}={tag}"]
        if i == 3:
            dev_cluster.cli("create", "--name", name, *on, "busybox", "true")  # never started
        elif i % 2:
            dev_cluster.cli("run", "-d", "--name", name, *on, "busybox", "sleep", "120")
        else:
            dev_cluster.cli("run", "--name", name, *on, "busybox", "true")  # exited
    newest = made[::-1]
    assert _ps(dev_cluster, "-l") == newest[:1]  # -l and -n show stopped ones too, as dockerd's do
    assert _ps(dev_cluster, "-n", "3") == newest[:3]
    mine = ["--filter", f"label=ps={tag}"]
    assert _ps(dev_cluster, "-a", *mine) == newest
    assert _ps(dev_cluster, *mine) == [made[1]]  # the one running
    assert _ps(dev_cluster, "-a", *mine, "--filter", f"since=ps1-{tag}") == newest[:3]
    assert _ps(dev_cluster, "-a", *mine, "--filter", f"before=ps3-{tag}") == newest[2:]
    assert _ps(dev_cluster, "-a", "--filter", f"since=ps1-{tag}", "--filter", f"before=ps4-{tag}") == [
        made[3],
        made[2],
    ]
    assert _ps(dev_cluster, *mine, "--filter", "status=exited") == [made[4], made[2], made[0]]
    assert _ps(dev_cluster, *mine, "--filter", "status=created") == [made[3]]
    assert _ps(dev_cluster, "-a", *mine, "--filter", "node=node1") == [made[3], made[0]]
    assert _ps(dev_cluster, "-a", "--filter", f"label=n1={tag}", "-n", "1") == [made[3]]
    bad = dev_cluster.cli("ps", "--filter", "since=no-such-container", check=False)
    assert bad.returncode != 0 and "no such container no-such-container" in bad.stderr
    bogus = dev_cluster.cli("ps", "--filter", "bogus=1", check=False)
    assert bogus.returncode != 0 and "Invalid filter 'bogus'" in bogus.stderr


def test_ps_keeps_a_node_that_does_not_answer_listed_host_down_with_filters_too(dev_cluster, gone):
    """node3's engine hangs (SIGSTOP): `docker ps` with or without filters keeps listing its containers,
    their STATUS `Host Down` (classic Swarm's words for a node that does not answer)."""
    tag = uuid.uuid4().hex[:6]
    down, other = f"down-{tag}", f"stays-{tag}"
    gone["containers"] += [down, other]
    for name, node in ((down, "node3"), (other, "node1")):
        dev_cluster.cli("run", "-d", "--name", name, "-e", f"constraint:node=={node}", "-l", f"t={tag}",
                        "busybox", "sleep", "300")  # fmt: skip

    def rows(*extra: str) -> dict[str, str]:
        out = dev_cluster.cli("ps", *extra, "--format", "{{.Names}}\t{{.Status}}").stdout
        return dict(line.split("\t") for line in out.splitlines())

    pid = dev_cluster.pid("node3", "engine")
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: rows().get(f"node3/{down}") == "Host Down", 60, "node3's containers never Host Down")
        filtered = rows("--filter", f"label=t={tag}")
        assert filtered[f"node3/{down}"] == "Host Down" and filtered[f"node1/{other}"].startswith("Up ")
        assert list(rows("-a", "--filter", f"label=t={tag}", "--filter", "node=node3")) == [f"node3/{down}"]
        assert rows("--filter", f"name={down}") == {f"node3/{down}": "Host Down"}
        assert (
            rows("--filter", "status=running", "--filter", f"label=t={tag}")[f"node3/{down}"] == "Host Down"
        )
        assert f"node3/{down}" not in rows("--filter", "status=exited")  # it was last seen running
        # a filter the last known entry cannot answer leaves it out rather than showing it wrongly
        assert f"node3/{down}" not in rows("--filter", "ancestor=busybox")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(
        lambda: rows("--filter", f"name={down}").get(f"node3/{down}", "").startswith("Up "),
        60,
        "node3 never came back in the list",
    )


def test_compose_affinity_labels_escaped_as_in_bash_keep_a_service_away(dev_cluster, gone, tmp_path):
    anchor = _name("c1")
    gone["containers"].append(anchor)
    dev_cluster.cli("run", "-d", "--name", anchor, "-e", "constraint:node==node2", "busybox", "sleep", "60")
    project = f"aff{uuid.uuid4().hex[:6]}"
    (tmp_path / "docker-compose.yml").write_text(
        "version: '2'\n"
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        "    command: sleep 60\n"
        "    labels:\n"
        f"      com.docker.swarm.affinities: '[\"container\\!={anchor}\"]'\n"
    )
    env = dev_cluster.client_env()

    def compose(*args: str):
        return subprocess.run(["docker-compose", "-p", project, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    try:
        up = compose("up", "-d", "--scale", "web=3")
        assert up.returncode == 0, up.stderr
        names = [f"{project}_web_{i}" for i in (1, 2, 3)]
        assert all(_node_of(dev_cluster, n) != "node2" for n in names)
    finally:
        compose("down", "-t", "0")
