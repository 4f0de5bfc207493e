"""Data services through the manager with the real docker CLI and docker-compose: the seed's
snapshot workflow, compose with `volume_driver: flocker`, profiles that really limit I/O, and bad input
that leaves no record and no subvolume behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid

import consul
import pytest

from shoal.dev import host

pytestmark = pytest.mark.e2e


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _consul(dev_cluster) -> consul.Consul:
    h, p = dev_cluster.registry.split(":")
    return consul.Consul(host=h, port=int(p))


def _records(dev_cluster) -> dict[str, dict]:
    _, entries = _consul(dev_cluster).kv.get("shoal/datasets/", recurse=True)
    return {e["Key"].rsplit("/", 1)[-1]: json.loads(e["Value"]) for e in entries or []}


def _subvolumes(dev_cluster) -> dict[str, set[str]]:
    """What is on each node's pool, asked of btrfs itself."""
    out = {}
    for node in dev_cluster.nodes:
        listed = subprocess.run(
            ["btrfs", "subvolume", "list", str(dev_cluster.node_dir(node) / "pool")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        out[node] = {line.rsplit("/", 1)[-1] for line in listed.splitlines()}
    return out


def _wait(pred, timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return got


@pytest.fixture
def gone(dev_cluster):
    """Containers and volumes a test made, removed at the end (containers first)."""
    made = {"containers": [], "volumes": []}
    yield made
    if made["containers"]:
        dev_cluster.cli("rm", "-f", *made["containers"], check=False)
    for v in reversed(made["volumes"]):
        dev_cluster.cli("volume", "rm", v, check=False)


def test_the_seeds_snapshot_workflow(dev_cluster, gone):
    first, second, vol = _name("MySQL"), _name("snapdb"), _name("demoVol")
    gone["containers"] += [second, first]
    dev_cluster.cli(
        "run", "-d", "--name", first, "-v", f"{vol}@gold:/data", "--volume-driver=flocker", "redis"
    )
    gone["volumes"].append(f"{vol}@gold")
    mounts = dev_cluster.cli("inspect", "--format={{.Mounts}}", first).stdout
    dataset = json.loads(dev_cluster.cli("volume", "inspect", f"{vol}@gold").stdout)[0]["Status"]
    assert f"/flocker/{dataset['dataset_id']}" in mounts and dataset["profile"] == "gold"
    assert dataset["mounts"] == 1 and dataset["node"] == (node := dev_cluster.cli(
        "inspect", "-f", "{{.Node.Name}}", first).stdout.strip())  # fmt: skip
    _wait(lambda: dev_cluster.cli("exec", first, "redis-cli", "ping", check=False).stdout.strip() == "PONG")
    dev_cluster.cli("exec", first, "redis-cli", "set", "todo", "as-of-snapshot")
    dev_cluster.cli("exec", first, "redis-cli", "save")

    prefix = dataset["dataset_id"][:8]
    dev_cluster.cli(
        "run", "-d", "--name", second, "-v", f"{vol}-snap@snapshot-{prefix}:/data",
        "--volume-driver=flocker", "-e", f"affinity:container=={first}", "redis",
    )  # fmt: skip
    gone["volumes"].insert(0, f"{vol}-snap@snapshot-{prefix}")
    assert dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", second).stdout.strip() == node
    dev_cluster.cli("exec", first, "redis-cli", "set", "todo", "after-snapshot")
    dev_cluster.cli("exec", first, "redis-cli", "save")
    _wait(lambda: dev_cluster.cli("exec", second, "redis-cli", "ping", check=False).stdout.strip() == "PONG")
    assert dev_cluster.cli("exec", second, "redis-cli", "get", "todo").stdout.strip() == "as-of-snapshot"
    assert dev_cluster.cli("exec", first, "redis-cli", "get", "todo").stdout.strip() == "after-snapshot"

    clone_id = json.loads(dev_cluster.cli("volume", "inspect", f"{vol}-snap@snapshot-{prefix}").stdout)[0]
    clone = _records(dev_cluster)[clone_id["Status"]["dataset_id"]]
    snap = _records(dev_cluster)[clone["parent"]]
    assert snap["kind"] == "snapshot" and snap["parent"] == dataset["dataset_id"] and clone["node"] == node
    # the source has a snapshot made from it: it stays, and says why
    dev_cluster.cli("rm", "-f", second, first)
    gone["containers"].clear()
    refused = dev_cluster.cli("volume", "rm", f"{vol}@gold", check=False)
    assert refused.returncode != 0 and f"has snapshot {snap['id'][:8]} made from it" in refused.stderr


def test_compose_with_volume_driver_flocker_finds_its_data_again(dev_cluster, tmp_path, gone):
    vol = _name("shopdata")
    (tmp_path / "docker-compose.yml").write_text(
        f'db:\n  image: redis\n  volume_driver: flocker\n  volumes:\n    - "{vol}@gold:/data"\n'
    )  # the seed's (v1) compose format: volume_driver is a service key there
    gone["volumes"].append(f"{vol}@gold")
    env = {**os.environ, "DOCKER_HOST": dev_cluster.manager, "COMPOSE_PROJECT_NAME": "cd"}

    def compose(*args: str) -> str:
        p = subprocess.run(
            ["docker-compose", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert p.returncode == 0, p.stderr
        return p.stdout

    try:
        compose("up", "-d")
        _wait(lambda: compose("exec", "-T", "db", "redis-cli", "ping").strip() == "PONG")
        compose("exec", "-T", "db", "redis-cli", "set", "item", "apples")
        compose("exec", "-T", "db", "redis-cli", "save")
        compose("down")
        compose("up", "-d")
        _wait(lambda: compose("exec", "-T", "db", "redis-cli", "ping").strip() == "PONG")
        assert compose("exec", "-T", "db", "redis-cli", "get", "item").strip() == "apples"
    finally:
        subprocess.run(["docker-compose", "down"], cwd=tmp_path, env=env, capture_output=True)


def _throughput(dev_cluster, volume: str) -> tuple[float, float]:
    """MB/s writing then reading 20 MB with direct I/O (no page cache) in a container on node2."""
    out = dev_cluster.cli(
        "run", "--rm", "-e", "constraint:node==node2", "-v", f"{volume}:/data", "--volume-driver=flocker",
        "busybox", "sh", "-c",
        "time dd if=/dev/zero of=/data/f bs=1M count=20 oflag=direct; "
        "time dd if=/data/f of=/dev/null bs=1M iflag=direct",
    ).stderr  # fmt: skip
    secs = [float(m) * 60 + float(s) for m, s in re.findall(r"real\s+(\d+)m\s*([\d.]+)s", out)]
    assert len(secs) == 2, out
    return 20 / max(secs[0], 1e-3), 20 / max(secs[1], 1e-3)


def test_a_bronze_volume_is_measurably_slower_than_a_gold_one(dev_cluster, gone):
    gold, bronze = _name("fast") + "@gold", _name("slow") + "@bronze"
    gone["volumes"] += [gold, bronze]
    g_w, g_r = _throughput(dev_cluster, gold)
    b_w, b_r = _throughput(dev_cluster, bronze)
    print(f"gold write {g_w:.0f} MB/s read {g_r:.0f} MB/s; bronze write {b_w:.1f} MB/s read {b_r:.1f} MB/s")
    assert 8 < b_w < 12 and 8 < b_r < 12  # bronze: 10 MiB/s each way
    assert g_w > 3 * b_w and g_r > 3 * b_r
    name = _name("lim")
    gone["containers"].append(name)
    dev_cluster.cli("create", "--name", name, "-v", f"{bronze}:/d", "--volume-driver=flocker", "busybox")
    limits = json.loads(dev_cluster.cli("inspect", "-f", "{{json .HostConfig}}", name).stdout)
    device = limits["BlkioDeviceReadBps"][0]["Path"]
    assert device.startswith("/dev/loop") and limits["BlkioDeviceReadBps"][0]["Rate"] == 10 << 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "-v", "x@nosuchprofile:/d", "--volume-driver=flocker", "busybox", "true"],
         "unknown storage profile 'nosuchprofile'"),
        (["run", "-v", "x@snapshot-:/d", "--volume-driver=flocker", "busybox", "true"],
         "after @snapshot- give the first hex digits"),
        (["run", "-v", "x@snapshot-00000000ffff:/d", "--volume-driver=flocker", "busybox", "true"],
         "no dataset id starts with '00000000ffff'"),
        (["volume", "create", "-d", "flocker", "a/b"], "may not contain '/' or '..'"),
        (["volume", "create", "-d", "flocker", "a..b"], "may not contain '/' or '..'"),
        (["volume", "create", "-d", "flocker", "v" * 256], "256 bytes; at most 255"),
        (["volume", "create", "-d", "shoal", "--opt", "size=100G", "huge"], "is full"),
    ],
)  # fmt: skip
def test_bad_dataset_requests_are_refused_and_leave_nothing(dev_cluster, args, message):
    records, subvols = _records(dev_cluster), _subvolumes(dev_cluster)
    containers = dev_cluster.cli("ps", "-aq").stdout.split()
    out = dev_cluster.cli(*args, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert _records(dev_cluster) == records and _subvolumes(dev_cluster) == subvols
    assert dev_cluster.cli("ps", "-aq").stdout.split() == containers


def test_an_ambiguous_snapshot_prefix_lists_the_candidates(dev_cluster):
    c = _consul(dev_cluster)
    ids = [
        "abcdef01-0000-4000-8000-" + uuid.uuid4().hex[:12],
        "abcdef02-0000-4000-8000-" + uuid.uuid4().hex[:12],
    ]
    names = [_name("amb"), _name("amb")]
    try:
        for i, n in zip(ids, names, strict=True):  # two datasets made earlier, on node3
            doc = {"id": i, "name": n, "profile": "gold", "node": "node3", "kind": "dataset", "volume": n}
            c.kv.put(f"shoal/dataset-names/{n}", i)
            c.kv.put(f"shoal/datasets/{i}", json.dumps(doc))
        _wait(lambda: set(ids) <= _subvolumes(dev_cluster)["node3"], what="the agent never made them")
        out = dev_cluster.cli(
            "run", "-v", "x@snapshot-abcdef0:/d", "--volume-driver=flocker", "busybox", "true", check=False
        )
        assert out.returncode != 0
        assert (
            f"snapshot-abcdef0 is ambiguous: it matches {names[0]} ({ids[0]}), {names[1]} ({ids[1]})"
            in (out.stderr.replace("\n", " "))
            or f"{names[1]} ({ids[1]}), {names[0]} ({ids[0]})" in out.stderr
        )
    finally:
        for i, n in zip(ids, names, strict=True):
            c.kv.delete(f"shoal/datasets/{i}")
            c.kv.delete(f"shoal/dataset-names/{n}")
    _wait(lambda: not set(ids) & _subvolumes(dev_cluster)["node3"], what="the agent never removed them")


def test_a_mounted_dataset_is_not_removed(dev_cluster, gone):
    vol, ct = _name("busy") + "@silver", _name("holder")
    gone["containers"].append(ct)
    gone["volumes"].append(vol)
    dev_cluster.cli(
        "run", "-d", "--name", ct, "-v", f"{vol}:/d", "--volume-driver=shoal", "busybox", "sleep", "60"
    )
    refused = dev_cluster.cli("volume", "rm", vol, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr
    dev_cluster.cli("rm", "-f", ct)
    status = json.loads(dev_cluster.cli("volume", "inspect", vol).stdout)[0]["Status"]
    assert status["mounts"] == 0  # the container's Unmount released it
    dev_cluster.cli("volume", "rm", vol)
    gone["volumes"].clear()
    assert status["dataset_id"] not in _records(dev_cluster)
    _wait(lambda: all(status["dataset_id"] not in s for s in _subvolumes(dev_cluster).values()))


def test_an_agent_killed_mid_create_finishes_the_work_on_restart(dev_cluster):
    pool = dev_cluster.node_dir("node3") / "pool" / "datasets"
    agent = dev_cluster.pid("node3", "agent")
    pids = [p for p in host.netns_pids(f"{dev_cluster.name}-node3") if "shoal agent" in host.cmdline(p)] or [
        agent
    ]
    for p in pids:
        os.kill(p, signal.SIGKILL)
    dataset_id, name = str(uuid.uuid4()), _name("crash")
    c = _consul(dev_cluster)
    try:
        # what a crash between "record written" and "subvolume renamed into place" leaves behind
        c.kv.put(f"shoal/dataset-names/{name}", dataset_id)
        doc = {"id": dataset_id, "name": name, "profile": "gold", "node": "node3", "kind": "dataset"}
        c.kv.put(f"shoal/datasets/{dataset_id}", json.dumps(doc))
        subprocess.run(["btrfs", "subvolume", "create", str(pool / f".new-{dataset_id}")], check=True)
        dev_cluster.start_agent("node3")
        _wait(lambda: (pool / dataset_id).is_dir() and not (pool / f".new-{dataset_id}").exists(), 15)
        run = ["run", "--rm", "-v", f"{name}:/d", "--volume-driver=shoal", "busybox"]
        assert dev_cluster.docker("node3", *run, "sh", "-c", "echo ok > /d/f && cat /d/f").stdout == "ok\n"
    finally:
        c.kv.delete(f"shoal/datasets/{dataset_id}")
        c.kv.delete(f"shoal/dataset-names/{name}")
    _wait(lambda: not (pool / dataset_id).exists(), what="the record went but the subvolume stayed")
    assert not any(p.name.startswith(".new-") for p in pool.iterdir())


def _shoal(dev_cluster, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "shoal", "volume", *args, "--registry", dev_cluster.registry],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_shoal_volume_snapshot_clone_ls_rm(dev_cluster, gone):
    vol = _name("cli")
    gone["volumes"].append(f"{vol}@silver")
    run = ["run", "--rm", "-e", "constraint:node==node2", "--volume-driver=shoal", "busybox", "sh", "-c"]
    dev_cluster.cli(*run[:-3], "-v", f"{vol}@silver:/d", *run[-3:], "echo first > /d/f")
    snap = _shoal(dev_cluster, "snapshot", vol).stdout.strip()
    dev_cluster.cli(*run[:-3], "-v", f"{vol}@silver:/d", *run[-3:], "echo second > /d/f")
    copy = _name("copy")
    made = _shoal(dev_cluster, "clone", snap[:8], copy)
    assert made.returncode == 0, made.stderr
    listed = _shoal(dev_cluster, "ls").stdout
    assert vol in listed and copy in listed and snap[:8] in listed
    inspected = json.loads(_shoal(dev_cluster, "inspect", copy).stdout)
    assert inspected["parent"] == snap and inspected["node"] == "node2" and inspected["profile"] == "silver"
    _wait(lambda: (dev_cluster.node_dir("node2") / "pool" / "datasets" / inspected["id"]).is_dir())
    out = dev_cluster.cli(*run[:-3], "-v", f"{copy}:/d", *run[-3:], "cat /d/f").stdout
    assert out == "first\n"  # the clone holds the data as of the snapshot
    refused = _shoal(dev_cluster, "rm", vol)
    assert refused.returncode == 1 and f"has snapshot {snap[:8]} made from it" in refused.stderr
    for ref in (copy, snap):
        assert _shoal(dev_cluster, "rm", ref).returncode == 0
    missing = _shoal(dev_cluster, "inspect", copy)
    assert missing.returncode == 1 and "no dataset or snapshot named" in missing.stderr


def test_volume_create_with_profile_and_size_options(dev_cluster, gone):
    vol = _name("opts")
    gone["volumes"].append(vol)
    dev_cluster.cli("volume", "create", "-d", "shoal", "--opt", "profile=gold", "--opt", "size=64M", vol)
    status = json.loads(dev_cluster.cli("volume", "inspect", vol).stdout)[0]["Status"]
    assert status["profile"] == "gold" and status["size"] == 64 << 20
    node = status["node"]
    path = dev_cluster.node_dir(node) / "pool" / "datasets" / status["dataset_id"]
    _wait(path.is_dir)
    limit = subprocess.run(
        ["btrfs", "qgroup", "show", "-re", "--raw", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert str(64 << 20) in limit  # the size is a real qgroup limit on the subvolume
    on_engine = dev_cluster.docker(node, "volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout
    assert f"shoal {vol}" in on_engine.splitlines()  # made once, on its node only
    others = [n for n in dev_cluster.nodes if n != node]
    assert all(vol not in dev_cluster.docker(n, "volume", "ls", "-q").stdout.split() for n in others)
    bad = dev_cluster.cli("volume", "create", "-d", "shoal", "--opt", "speed=fast", _name("x"), check=False)
    assert bad.returncode != 0 and "unknown volume option speed" in bad.stderr
