"""Volumes, networks, images and the container side-doors (cp, top, stats) through the manager, `shoal why`,
and a node that leaves the registry leaving the manager's view."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.e2e


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _on_nodes(dev_cluster, *args: str) -> dict[str, list[str]]:
    """What each engine itself lists (not the manager)."""
    return {n: dev_cluster.docker(n, *args).stdout.split() for n in dev_cluster.nodes}


def test_volumes_live_on_nodes_and_pull_their_containers(dev_cluster):
    everywhere, one = _name("vol"), _name("vol")
    try:
        dev_cluster.cli("volume", "create", everywhere)
        dev_cluster.cli("volume", "create", f"node3/{one}")
        held = _on_nodes(dev_cluster, "volume", "ls", "-q")
        assert all(everywhere in v for v in held.values())
        assert [n for n, v in held.items() if one in v] == ["node3"]
        listed = dev_cluster.cli("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert {everywhere, f"node3/{one}"} <= set(listed)  # one cluster-wide volume; node3's own as node3/
        assert not any(n.endswith(f"/{everywhere}") for n in listed)
        inspected = json.loads(dev_cluster.cli("volume", "inspect", one).stdout)[0]
        assert inspected["Name"] == one and inspected["Driver"] == "local"

        # a container mounting the node3 volume goes to node3, where its data is
        ct = _name("withvol")
        dev_cluster.cli(
            "run", "--rm", "--name", ct, "-v", f"{one}:/data", "busybox", "sh", "-c", "echo kept > /data/f"
        )
        out = dev_cluster.cli("run", "--rm", "-v", f"{one}:/data", "busybox", "cat", "/data/f").stdout
        assert out == "kept\n"

        dev_cluster.cli("volume", "rm", everywhere)
        assert not any(everywhere in v for v in _on_nodes(dev_cluster, "volume", "ls", "-q").values())
        gone = dev_cluster.cli("volume", "inspect", everywhere, check=False)
        assert gone.returncode != 0 and "no such volume" in gone.stderr
    finally:
        dev_cluster.cli("volume", "rm", f"node3/{one}", check=False)
        dev_cluster.cli("volume", "rm", everywhere, check=False)


def test_networks_are_made_on_every_node_and_bad_ones_refused(dev_cluster):
    net, ct = _name("net"), _name("onnet")
    try:
        dev_cluster.cli("network", "create", net)
        assert all(
            net in v for v in _on_nodes(dev_cluster, "network", "ls", "--format", "{{.Name}}").values()
        )
        dup = dev_cluster.cli("network", "create", net, check=False)
        assert dup.returncode != 0 and f"network with name {net} already exists" in dup.stderr
        overlay = dev_cluster.cli("network", "create", "-d", "overlay", _name("ov"), check=False)
        assert overlay.returncode != 0 and "network driver 'overlay' is not supported" in overlay.stderr
        nowhere = dev_cluster.cli("run", "-d", "--net", "no-such-net", "busybox", "true", check=False)
        assert nowhere.returncode != 0 and "network no-such-net not found" in nowhere.stderr

        dev_cluster.cli("run", "-d", "--name", ct, "--net", net, "busybox", "sleep", "60")
        nets = dev_cluster.cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", ct).stdout
        assert net in json.loads(nets)
        dev_cluster.cli("network", "connect", "bridge", ct)
        assert "bridge" in json.loads(
            dev_cluster.cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", ct).stdout
        )
        dev_cluster.cli("network", "disconnect", "bridge", ct)
        dev_cluster.cli("rm", "-f", ct)
        dev_cluster.cli("network", "rm", net)
        assert not any(
            net in v for v in _on_nodes(dev_cluster, "network", "ls", "--format", "{{.Name}}").values()
        )
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)
        dev_cluster.cli("network", "rm", net, check=False)


def test_image_tag_and_remove_reach_every_node(dev_cluster):
    tag = f"mybox:{uuid.uuid4().hex[:6]}"
    dev_cluster.cli("tag", "busybox", tag)
    assert all(
        tag in v for v in _on_nodes(dev_cluster, "images", "--format", "{{.Repository}}:{{.Tag}}").values()
    )
    assert tag in dev_cluster.cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    dev_cluster.cli("rmi", tag)
    assert not any(
        tag in v for v in _on_nodes(dev_cluster, "images", "--format", "{{.Repository}}:{{.Tag}}").values()
    )
    missing = dev_cluster.cli("rmi", "nosuch:image", check=False)
    assert missing.returncode != 0 and "No such image: nosuch:image" in missing.stderr


def test_cp_top_and_stats_reach_the_containers_node(dev_cluster, tmp_path):
    ct = _name("side")
    try:
        dev_cluster.cli("run", "-d", "--name", ct, "-e", "constraint:node==node2", "busybox", "sleep", "60")
        (tmp_path / "in.txt").write_text("through the manager\n")
        dev_cluster.cli("cp", str(tmp_path / "in.txt"), f"{ct}:/tmp/in.txt")
        assert dev_cluster.docker("node2", "exec", ct, "cat", "/tmp/in.txt").stdout == "through the manager\n"
        dev_cluster.cli("cp", f"{ct}:/tmp/in.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_text() == "through the manager\n"
        assert "sleep 60" in dev_cluster.cli("top", ct).stdout
        stats = dev_cluster.cli("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", ct).stdout
        assert stats.split() == [ct, "1"]
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)


def test_shoal_why_prints_each_filter_and_the_reasons(dev_cluster):
    ct = _name("why")
    try:
        dev_cluster.cli(
            "run",
            "-d",
            "--name",
            ct,
            "-e",
            "constraint:node!=node1",
            "-p",
            "18080:80",
            "busybox",
            "sleep",
            "60",
        )
        out = subprocess.run(
            [sys.executable, "-m", "shoal", "why", ct, "-H", dev_cluster.manager],
            capture_output=True,
            text=True,
            env=dev_cluster.client_env(),
        )
        node = dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", ct).stdout.strip()
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == f"{ct} → {node}"
        assert "asks constraint:node!=node1" in out.stdout and "ports 18080/tcp" in out.stdout
        assert "filters: 3 nodes → health 3 → constraint 2" in out.stdout
        assert "✗ node1  [constraint] node=node1 (needs !=node1)" in out.stdout
        unknown = subprocess.run(
            [sys.executable, "-m", "shoal", "why", "nosuchcontainer", "-H", dev_cluster.manager],
            capture_output=True,
            text=True,
            env=dev_cluster.client_env(),
        )
        assert unknown.returncode == 1 and "No such container: nosuchcontainer" in unknown.stderr
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)


def test_a_node_whose_records_are_deleted_leaves_the_managers_view(dev_cluster):
    c = dev_cluster.consul()
    facts = json.loads(c.kv.get("shoal/nodes/node2/facts")[1]["Value"])
    info = json.loads(c.kv.get("shoal/nodes/node2/info")[1]["Value"])
    info["node"] = facts["node"] = "ghost"
    c.kv.put("shoal/nodes/ghost/facts", json.dumps(facts))
    c.kv.put("shoal/nodes/ghost/info", json.dumps(info))
    try:
        deadline = time.monotonic() + 5
        while "ghost:" not in dev_cluster.cli("info").stdout:
            assert time.monotonic() < deadline, "the manager never saw the new node"
            time.sleep(0.1)
    finally:
        c.kv.delete("shoal/nodes/ghost", recurse=True)
    deadline = time.monotonic() + 5
    while "ghost" in (info_out := dev_cluster.cli("info").stdout):
        assert time.monotonic() < deadline, info_out
        time.sleep(0.1)
    assert "Nodes: 3" in info_out


def test_system_df_agrees_with_the_lists(dev_cluster):
    df = json.loads(dev_cluster.cli("system", "df", "--format", "{{json .}}").stdout.splitlines()[0])
    assert df["Type"] == "Images"
    images = set(dev_cluster.cli("images", "-q", "--no-trunc").stdout.split())
    assert int(df["TotalCount"]) == len(images)  # one image on three nodes is one image
    lines = [
        json.loads(x) for x in dev_cluster.cli("system", "df", "--format", "{{json .}}").stdout.splitlines()
    ]
    containers = next(x for x in lines if x["Type"] == "Containers")
    assert int(containers["TotalCount"]) == len(dev_cluster.cli("ps", "-aq").stdout.split())
    info = dev_cluster.cli("info", "--format", "{{.Containers}} {{.Images}}").stdout.split()
    assert info == [containers["TotalCount"], df["TotalCount"]]


def test_save_history_attach_and_prune_through_the_manager(dev_cluster, tmp_path):
    archive = tmp_path / "busybox.tar"
    dev_cluster.cli("save", "-o", str(archive), "busybox")
    assert archive.stat().st_size > 1_000_000  # busybox-static and its layer
    missing = dev_cluster.cli("save", "-o", str(tmp_path / "x.tar"), "busybox", "nosuch:img", check=False)
    assert missing.returncode != 0 and "No such image: nosuch:img" in missing.stderr
    history = dev_cluster.cli("history", "--format", "{{.ID}}", "busybox").stdout.split()
    assert history and history[0].startswith(dev_cluster.cli("images", "-q", "busybox").stdout.strip()[:12])

    ct = _name("talker")
    try:
        dev_cluster.cli(
            "run", "-d", "--name", ct, "-e", "constraint:node==node3", "busybox",
            "sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done",
        )  # fmt: skip
        attach = subprocess.Popen(
            [*dev_cluster.docker_argv(), "attach", "--no-stdin", ct],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            first = [attach.stdout.readline().strip() for _ in range(2)]
        finally:
            attach.kill()
            attach.wait()
        assert all(line.startswith("tick-") for line in first), first
    finally:
        dev_cluster.cli("rm", "-f", ct, check=False)

    vol, net = _name("prunev"), _name("prunen")
    dev_cluster.cli("volume", "create", f"node2/{vol}")
    dev_cluster.cli("network", "create", net)
    pruned = dev_cluster.cli("volume", "prune", "-f").stdout
    assert f"node2/{vol}" in pruned
    pruned_nets = dev_cluster.cli("network", "prune", "-f").stdout.split()
    assert net in pruned_nets and f"node1/{net}" not in pruned_nets  # one network, reported once
    assert not any(
        net in v for v in _on_nodes(dev_cluster, "network", "ls", "--format", "{{.Name}}").values()
    )
