"""The manager through the real docker CLI: placement on live facts, proxied operations, hijacked streams,
and bad requests that leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import AGENT_INTERVAL

pytestmark = pytest.mark.e2e


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _node_of(dev_cluster, container: str) -> str:
    return dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", container).stdout.strip()


def _all_containers(dev_cluster) -> set[str]:
    """Every container name on every engine, asked of the engines themselves (not the manager)."""
    names = set()
    for node in dev_cluster.nodes:
        names |= set(dev_cluster.docker(node, "ps", "-a", "--format", "{{.Names}}").stdout.split())
    return names


@pytest.fixture
def cleanup(dev_cluster):
    made: list[str] = []
    yield made
    if made:
        dev_cluster.cli("rm", "-f", *made, check=False)


def test_constraints_on_a_fact_a_label_and_the_node_name(dev_cluster, cleanup):
    by_fact, by_label, by_node = _name("fact"), _name("label"), _name("node")
    by_agent_label = _name("agentlabel")
    cleanup += [by_fact, by_label, by_node, by_agent_label]
    dev_cluster.cli(
        "run", "-d", "--name", by_agent_label, "-e", "constraint:zone==b", "busybox", "sleep", "60"
    )
    assert _node_of(dev_cluster, by_agent_label) == "node3"  # `shoal agent --label zone=b` on node3
    dev_cluster.cli(
        "run", "-d", "--name", by_fact, "-e", "constraint:hostname==node2", "busybox", "sleep", "60"
    )
    dev_cluster.cli("run", "-d", "--name", by_label, "-e", "constraint:disk==ssd", "busybox", "sleep", "60")
    dev_cluster.cli("run", "-d", "--name", by_node, "-e", "constraint:node==node3", "busybox", "sleep", "60")
    assert [_node_of(dev_cluster, c) for c in (by_fact, by_label, by_node)] == ["node2", "node1", "node3"]
    env = dev_cluster.cli("inspect", "-f", "{{json .Config.Env}} {{json .Config.Labels}}", by_node).stdout
    assert "constraint:" not in env.split(" ")[0]  # taken out of Env...
    assert (
        json.loads(env.split(" ", 1)[1])["com.docker.swarm.constraints"] == '["node==node3"]'
    )  # ...into a label


def test_the_seeds_constraints_and_the_numeric_form(dev_cluster, cleanup):
    facts = json.loads(
        subprocess.run(
            ["curl", "-s", "--cacert", dev_cluster.env["CONSUL_CACERT"],
             "-H", f"X-Consul-Token: {dev_cluster.env.get('CONSUL_HTTP_TOKEN', '')}",
             f"{dev_cluster.registry_url}/v1/kv/shoal/nodes/node1/facts?raw"],
            capture_output=True,
            text=True,
        ).stdout
    )["facts"]  # fmt: skip
    seed, numeric = _name("seed"), _name("numeric")
    cleanup += [seed, numeric]
    dev_cluster.cli(
        "run",
        "-d",
        "--name",
        seed,
        "-e",
        "constraint:system_overload_10min==/[0-9]*/",
        "-e",
        f"constraint:hardwaremodel=={facts['hardwaremodel']}",
        "-e",
        f"constraint:virtual={facts['virtual']}",
        "-e",
        "constraint:selinux_enforced=false",
        "-e",
        "constraint:is_virtual==True",
        "busybox",
        "sleep",
        "60",
    )
    dev_cluster.cli(
        "run",
        "-d",
        "--name",
        numeric,
        "-e",
        "constraint:system_overload_10min<1000",
        "busybox",
        "sleep",
        "60",
    )
    assert (
        _node_of(dev_cluster, seed) in dev_cluster.nodes
        and _node_of(dev_cluster, numeric) in dev_cluster.nodes
    )


def test_affinity_to_a_container_and_to_an_image(dev_cluster, cleanup):
    db, app, tagged = _name("db"), _name("app"), _name("only3")
    cleanup += [db, app, tagged]
    dev_cluster.cli("run", "-d", "--name", db, "-e", "constraint:node==node2", "busybox", "sleep", "60")
    dev_cluster.cli("run", "-d", "--name", app, "-e", f"affinity:container=={db}", "busybox", "sleep", "60")
    assert _node_of(dev_cluster, app) == "node2"
    image = f"{tagged}:v1"
    dev_cluster.docker("node3", "tag", "busybox:latest", image)  # an image only node3 has
    try:
        dev_cluster.cli(
            "run", "-d", "--name", tagged, "-e", f"affinity:image=={image}", "busybox", "sleep", "60"
        )
        assert _node_of(dev_cluster, tagged) == "node3"
        implicit = _name("implicit")
        cleanup.append(implicit)
        dev_cluster.cli("run", "-d", "--name", implicit, image, "sleep", "60")  # only node3 can run it
        assert _node_of(dev_cluster, implicit) == "node3"
    finally:
        dev_cluster.cli("rm", "-f", tagged, check=False)
        dev_cluster.docker("node3", "rmi", image, check=False)


def test_foreground_run_prints_output_and_returns_the_exit_code(dev_cluster):
    out = dev_cluster.cli("run", "--rm", "busybox", "sh", "-c", "echo out-line; echo err-line >&2")
    assert out.stdout == "out-line\n" and out.stderr == "err-line\n"
    piped = dev_cluster.cli("run", "-i", "--rm", "busybox", "cat", input="from-stdin\n")
    assert piped.stdout == "from-stdin\n"
    failed = dev_cluster.cli("run", "--rm", "busybox", "sh", "-c", "exit 7", check=False)
    assert failed.returncode == 7


def _tmux(session: str, command: str) -> None:
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True)


def _screen(session: str, want: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = subprocess.run(
            ["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True
        ).stdout
        if want in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{want!r} never appeared on {session}: {text!r}")


def test_run_it_and_exec_it_give_a_shell(dev_cluster):
    name = _name("tty")
    run, ex = f"run-{name}", f"exec-{name}"
    try:
        docker = " ".join(dev_cluster.docker_argv())
        _tmux(run, f"{docker} run -it --rm --name {name} busybox sh")
        _screen(run, "/ #")
        subprocess.run(["tmux", "send-keys", "-t", run, "echo run-$((6*7))", "Enter"], check=True)
        assert "run-42" in _screen(run, "run-42")
        _tmux(ex, f"{docker} exec -it {name} sh")
        _screen(ex, "/ #")
        subprocess.run(
            ["tmux", "send-keys", "-t", ex, "echo exec-$((2*21)) $(hostname)", "Enter"], check=True
        )
        assert "exec-42" in _screen(ex, "exec-42")
        subprocess.run(["tmux", "send-keys", "-t", ex, "exit", "Enter"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", run, "exit", "Enter"], check=True)
        deadline = time.monotonic() + 10
        while name in _all_containers(dev_cluster):  # --rm through the manager
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        for s in (run, ex):
            subprocess.run(["tmux", "kill-session", "-t", s], capture_output=True)
        dev_cluster.cli("rm", "-f", name, check=False)


def test_ps_inspect_logs_exec_stop_rm(dev_cluster, cleanup):
    name = _name("life")
    cleanup.append(name)
    dev_cluster.cli(
        "run",
        "-d",
        "--name",
        name,
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done",
    )
    node = _node_of(dev_cluster, name)
    assert f"{node}/{name}" in dev_cluster.cli("ps", "--format", "{{.Names}}").stdout.split()
    follow = subprocess.Popen(
        [*dev_cluster.docker_argv(), "logs", "-f", name], stdout=subprocess.PIPE, text=True
    )
    try:
        lines = [follow.stdout.readline().strip() for _ in range(4)]  # new lines keep arriving
    finally:
        follow.kill()
        follow.wait()
    assert lines[:4] == ["line-0", "line-1", "line-2", "line-3"]
    assert (
        dev_cluster.cli("exec", name, "hostname").stdout.strip()
        == dev_cluster.cli("inspect", "-f", "{{.Config.Hostname}}", name).stdout.strip()
    )
    dev_cluster.cli("stop", "-t", "1", name)
    assert f"{node}/{name}" not in dev_cluster.cli("ps", "--format", "{{.Names}}").stdout.split()
    assert f"{node}/{name}" in dev_cluster.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
    dev_cluster.cli("rm", name)
    assert name not in _all_containers(dev_cluster)


def test_info_shows_the_nodes_and_events_say_their_node(dev_cluster):
    info = dev_cluster.cli("info").stdout
    assert "Nodes: 3" in info and "Pending" not in info, info
    for node in ("node1", "node2", "node3"):
        assert f" {node}: {dev_cluster.nodes[node].removeprefix('tcp://')}" in info
    assert info.count("└ Status: Healthy") == 3
    events = subprocess.Popen(
        [
            *dev_cluster.docker_argv(),
            "events",
            "--format",
            "{{json .}}",
            "--filter",
            "type=container",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        name = _name("ev")
        dev_cluster.cli("run", "--rm", "--name", name, "-e", "constraint:node==node3", "busybox", "true")
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ev = json.loads(events.stdout.readline())
            if ev.get("Actor", {}).get("Attributes", {}).get("name") == name:
                seen.append((ev["Action"], ev["Actor"]["Attributes"]["node.name"]))
                if ev["Action"] == "destroy":
                    break
    finally:
        events.kill()
        events.wait()
    assert ("create", "node3") in seen and ("start", "node3") in seen and ("destroy", "node3") in seen


def test_spread_lands_nine_containers_three_per_node(dev_cluster, cleanup):
    names = [_name(f"s{i}") for i in range(9)]
    cleanup += names
    for n in names:
        dev_cluster.cli("run", "-d", "--name", n, "busybox", "sleep", "60")
    placed = [_node_of(dev_cluster, n) for n in names]
    assert sorted(placed.count(n) for n in ("node1", "node2", "node3")) == [3, 3, 3], placed


def test_binpack_fills_one_node_first_by_reservations(dev_cluster, cleanup):
    port = "2399"
    argv = dev_cluster.manager_argv(f"{dev_cluster.gateway}:{port}", "--strategy", "binpack")
    # the operator's environment: the registry's token (CONSUL_HTTP_TOKEN) is how the manager reads it
    env = dev_cluster.client_env()
    mgr = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    host = f"tcp://{dev_cluster.gateway}:{port}"
    try:
        deadline = time.monotonic() + 60
        while dev_cluster.cli("version", host=host, check=False).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        names = [_name(f"b{i}") for i in range(4)]
        cleanup += names
        for n in names:
            dev_cluster.cli("run", "-d", "-m", "64m", "--name", n, "busybox", "sleep", "60", host=host)
        placed = {_node_of(dev_cluster, n) for n in names}
        assert len(placed) == 1, placed
        assert "Strategy: binpack" in dev_cluster.cli("info", host=host).stdout
    finally:
        mgr.terminate()
        mgr.wait(10)


def test_a_published_port_keeps_a_second_container_off_that_node(dev_cluster, cleanup):
    names = [_name(f"p{i}") for i in range(3)]
    cleanup += names
    for n in names:
        dev_cluster.cli("run", "-d", "-p", "18080:80", "--name", n, "busybox", "httpd", "-f", "-p", "80")
    assert {_node_of(dev_cluster, n) for n in names} == {"node1", "node2", "node3"}
    fourth = _name("p4")
    out = dev_cluster.cli("run", "-d", "-p", "18080:80", "--name", fourth, "busybox", "true", check=False)
    assert out.returncode != 0
    assert "Unable to find a node that satisfies the following conditions" in out.stderr
    assert "port 18080/tcp (Host mode) is in use" in out.stderr
    assert fourth not in _all_containers(dev_cluster)


def test_a_fact_change_moves_the_next_placement_within_one_interval(dev_cluster, cleanup):
    fact = dev_cluster.node_dir("node2") / "facts.d" / "colour.txt"
    name = _name("moved")
    cleanup.append(name)
    try:
        fact.write_text("colour=blue\n")
        t0 = time.monotonic()
        while True:
            out = dev_cluster.cli(
                "run",
                "-d",
                "--name",
                name,
                "-e",
                "constraint:colour==blue",
                "busybox",
                "sleep",
                "60",
                check=False,
            )
            if out.returncode == 0:
                break
            assert time.monotonic() - t0 < AGENT_INTERVAL + 1.0, out.stderr
            time.sleep(0.1)
        assert _node_of(dev_cluster, name) == "node2"
    finally:
        fact.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "env,message",
    [
        ("constraint:foo", "'constraint:foo' has no operator"),
        ("constraint:==x", "'constraint:==x' has no key"),
        ("affinity:container==", "'affinity:container==' has no value"),
        ("constraint:zone==/[/", "invalid regular expression /[/"),
        ("constraint:zone=>x", "unknown operator '=>'"),
        (
            "constraint:node==nosuchnode",
            "no node fits: node1 node=node1 (needs ==nosuchnode); node2 node=node2",
        ),
    ],
)
def test_bad_expressions_get_docker_errors_and_create_nothing(dev_cluster, env, message):
    name = _name("bad")
    out = dev_cluster.cli("run", "-d", "--name", name, "-e", env, "busybox", "true", check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert name not in _all_containers(dev_cluster)


def test_an_image_on_no_node_and_a_name_in_use_are_refused(dev_cluster, cleanup):
    # an image no node holds is pulled from the cluster's registry; one the registry lacks is its error
    ref = f"{dev_cluster.env['SHOAL_IMAGE_REGISTRY']}/nosuchimage:v9"
    missing = dev_cluster.cli("run", "-d", ref, check=False)
    assert missing.returncode != 0 and f"manifest for {ref} not found" in missing.stderr, missing.stderr
    name = _name("taken")
    cleanup.append(name)
    dev_cluster.cli("run", "-d", "--name", name, "-e", "constraint:node==node1", "busybox", "sleep", "60")
    again = dev_cluster.cli(
        "run", "-d", "--name", name, "-e", "constraint:node==node2", "busybox", "true", check=False
    )
    assert again.returncode != 0 and f'The container name "/{name}" is already in use' in again.stderr
    assert dev_cluster.docker("node2", "ps", "-a", "--format", "{{.Names}}").stdout.split().count(name) == 0


def test_ps_from_the_cache_reads_as_the_engines_and_sees_changes_made_on_a_node(dev_cluster, cleanup):
    up, done, new = _name("up"), _name("done"), _name("new")
    cleanup += [up, done, new]
    on = ["-e", "constraint:node==node2"]
    dev_cluster.cli("run", "-d", "--name", up, *on, "busybox", "sleep", "60")
    dev_cluster.cli("run", "--name", done, *on, "busybox", "sh", "-c", "exit 3", check=False)
    dev_cluster.cli("create", "--name", new, *on, "busybox")

    def statuses(host: str | None) -> dict[str, str]:
        out = dev_cluster.cli("ps", "-a", "--format", "{{.Names}}\t{{.Status}}", host=host).stdout
        return {n.rsplit("/", 1)[-1]: s for n, s in (line.split("\t") for line in out.splitlines())}

    before = statuses(dev_cluster.nodes["node2"])
    via = statuses(None)
    after = statuses(dev_cluster.nodes["node2"])
    for name in (up, done, new):
        assert via[name] in (before[name], after[name]), (name, via[name], before[name])
    assert via[done].startswith("Exited (3)") and via[new] == "Created" and via[up].startswith("Up ")

    dev_cluster.docker("node2", "stop", "-t", "0", up)  # behind the manager's back
    deadline = time.monotonic() + 2
    while not statuses(None)[up].startswith("Exited (137)"):
        assert time.monotonic() < deadline, statuses(None)[up]
        time.sleep(0.05)


def test_each_dev_node_reports_its_own_load_and_a_busy_node_is_passed_over(dev_cluster, cleanup):
    """Dev nodes share one kernel (one loadavg); their agents measure their own cgroup's CPU use instead."""
    burner, light = _name("burner"), _name("light")
    cleanup += [burner, light]

    def overload(node: str) -> int:
        out = subprocess.run(
            [sys.executable, "-m", "shoal", "facts", node, "--get", "system_overload_1min",
             "--registry", dev_cluster.registry_url],
            capture_output=True, text=True, check=True, env=dev_cluster.client_env(),
        )  # fmt: skip
        return int(out.stdout)

    source = subprocess.run(
        [sys.executable, "-m", "shoal", "facts", "node2", "--get", "shoal_load_source",
         "--registry", dev_cluster.registry_url],
        capture_output=True, text=True, check=True, env=dev_cluster.client_env(),
    ).stdout.strip()  # fmt: skip
    assert source == f"cgroup:/shoal-{dev_cluster.name}/node2"
    dev_cluster.cli(
        "run",
        "-d",
        "--name",
        burner,
        "-e",
        "constraint:node==node2",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    )
    deadline = time.monotonic() + 20
    while overload("node2") < 3:  # one CPU of two, a few seconds into a one-minute window
        assert time.monotonic() < deadline, "node2's load never rose"
        time.sleep(0.5)
    assert overload("node1") < overload("node2") and overload("node3") < overload("node2")
    dev_cluster.cli(
        "run", "-d", "--name", light, "-e", "constraint:system_overload_1min<2", "busybox", "sleep", "60"
    )
    assert _node_of(dev_cluster, light) != "node2"
