"""Data services through the manager with the real docker CLI and docker-compose: the seed's
snapshot workflow, compose with `volume_driver: flocker`, profiles that really limit I/O, and bad input
that leaves no record and no subvolume behind.

And the nodes are the truth about data: a registry wiped by hand, wiped on disk, or swapped for an empty
one is rebuilt from the pools; forged records are refused; a failing step is retried; only an explicit
deletion request deletes, and only when no container uses the dataset. Each of those tests ends by reading
every byte of every dataset back through a container."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace

import consul
import pytest
import requests

from shoal.dev import host
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _consul(dev_cluster, registry: str | None = None) -> consul.Consul:
    return dev_cluster.consul(registry)


def _records(dev_cluster, registry: str | None = None, valid_only: bool = False) -> dict[str, dict]:
    """The registry's dataset records (the ones that are JSON objects), by key."""
    _, entries = _consul(dev_cluster, registry).kv.get("shoal/datasets/", recurse=True)
    out = {}
    for e in entries or []:
        try:
            doc = json.loads(e["Value"] or b"null")
        except ValueError:
            continue
        if isinstance(doc, dict) and (not valid_only or doc.get("id") == e["Key"].rsplit("/", 1)[-1]):
            out[e["Key"].rsplit("/", 1)[-1]] = doc
    return out


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
    return wait_for(pred, timeout, what)


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

    def compose(*args: str) -> str:
        return dev_cluster.compose(tmp_path, "cd", *args).stdout

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
        dev_cluster.compose(tmp_path, "cd", "down", check=False)


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


def test_a_create_the_engine_refuses_leaves_no_dataset_behind(dev_cluster):
    """The manager writes a new dataset's records before the engine is asked; when the engine then refuses
    the container, the dataset is deleted again by its node (a deletion request: the node may have made it
    already), so neither a record nor a subvolume is left."""
    records, subvols = _records(dev_cluster), _subvolumes(dev_cluster)
    name = _name("refused")
    out = dev_cluster.cli(
        "run", "-d", "-m", "64m", "--memory-swap", "32m", "-v", f"{name}@gold:/data", "busybox", "true",
        check=False,
    )  # fmt: skip
    assert out.returncode != 0 and "memory" in out.stderr.lower(), out.stderr
    _wait(lambda: _records(dev_cluster) == records, 20, "the refused create's records were not taken back")
    _wait(lambda: _subvolumes(dev_cluster) == subvols, 20, "the refused create's dataset was not deleted")
    _, left = _consul(dev_cluster).kv.get("shoal/deletions/", recurse=True)
    _wait(
        lambda: not _consul(dev_cluster).kv.get("shoal/deletions/", recurse=True)[1],
        20,
        f"requests left: {left}",
    )


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
        _wait(lambda: _manager_knows(dev_cluster, set(ids)), 90, "the manager never saw them")
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
        for i, n in zip(ids, names, strict=True):  # records lost: the data is not
            c.kv.delete(f"shoal/datasets/{i}")
            c.kv.delete(f"shoal/dataset-names/{n}")
    back = _wait(
        lambda: set(ids) <= set(_records(dev_cluster)) and _records(dev_cluster), 30, "not re-published"
    )
    assert all(back[i]["recovered"] > 0 and back[i]["node"] == "node3" for i in ids)
    assert set(ids) <= _subvolumes(dev_cluster)["node3"]
    for i in ids:  # an explicit deletion removes them
        assert _shoal(dev_cluster, "rm", i).returncode == 0
    assert not set(ids) & _subvolumes(dev_cluster)["node3"] and not set(ids) & set(_records(dev_cluster))


def test_a_mounted_dataset_is_not_removed(dev_cluster, gone):
    vol, ct = _name("busy") + "@silver", _name("holder")
    gone["containers"].append(ct)
    gone["volumes"].append(vol)
    dev_cluster.cli(
        "run", "-d", "--name", ct, "-v", f"{vol}:/d", "--volume-driver=shoal", "busybox", "sleep", "60"
    )
    refused = dev_cluster.cli("volume", "rm", vol, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr
    also = _shoal(dev_cluster, "rm", vol.partition("@")[0])
    assert also.returncode == 1 and "is mounted by 1 container(s)" in also.stderr
    dev_cluster.cli("rm", "-f", ct)
    status = json.loads(dev_cluster.cli("volume", "inspect", vol).stdout)[0]["Status"]
    assert status["mounts"] == 0  # the container's Unmount released it
    dev_cluster.cli("volume", "rm", vol)
    gone["volumes"].clear()
    assert status["dataset_id"] not in _records(dev_cluster)
    assert all(status["dataset_id"] not in s for s in _subvolumes(dev_cluster).values())
    assert not (
        dev_cluster.node_dir(status["node"]) / "pool" / "records" / f"{status['dataset_id']}.json"
    ).exists()


def test_an_agent_killed_mid_create_finishes_the_work_on_restart(dev_cluster):
    pool = dev_cluster.node_dir("node3") / "pool" / "datasets"
    for p in dev_cluster.agent_pids("node3"):
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
        c.kv.delete(f"shoal/datasets/{dataset_id}")  # the record lost: the data stays, re-published
        c.kv.delete(f"shoal/dataset-names/{name}")
        _wait(lambda: dataset_id in _records(dev_cluster), 30, "the agent never re-published it")
        assert _records(dev_cluster)[dataset_id]["recovered"] > 0 and (pool / dataset_id).is_dir()
        assert dev_cluster.docker("node3", *run, "cat", "/d/f").stdout == "ok\n"
        assert _shoal(dev_cluster, "rm", name).returncode == 0  # an explicit deletion removes it
    finally:
        _shoal(dev_cluster, "rm", dataset_id)
        dev_cluster.docker("node3", "volume", "rm", "-f", name, check=False)
    assert not (pool / dataset_id).exists() and dataset_id not in _records(dev_cluster)
    assert not (pool.parent / "records" / f"{dataset_id}.json").exists()
    assert not any(p.name.startswith(".new-") for p in pool.iterdir())


def _shoal(dev_cluster, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "shoal", "volume", *args, "--registry", dev_cluster.registry_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=dev_cluster.client_env(),
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


# --- the nodes are the truth about data -------------------------------------------------------------------

BLOB = "head -c 1048576 /dev/urandom > /d/blob && sync && sha256sum /d/blob | cut -d' ' -f1"
READ = "sha256sum /d/blob | cut -d' ' -f1"


@dataclass(frozen=True)
class Kept:
    """A dataset a test wrote known bytes to: where, and the checksum to read back."""

    name: str
    node: str
    id: str
    sha: str


@pytest.fixture
def kept(dev_cluster):
    """Datasets written by `_seed` (and any a test adds), deleted at the end: docker volumes first (the
    plugin deletes their datasets), then by id what is left, children first."""
    made: dict[str, list] = {"volumes": [], "ids": [], "containers": []}
    yield made
    if made["containers"]:
        dev_cluster.cli("rm", "-f", *made["containers"], check=False)
    for v in reversed(made["volumes"]):
        dev_cluster.cli("volume", "rm", "-f", v, check=False)
    for i in reversed(made["ids"]):
        if i in _records(dev_cluster):
            _shoal(dev_cluster, "rm", i)


def _in_container(dev_cluster, volume: str, script: str, node: str = "", direct: bool = False) -> str:
    args = ["run", "--rm", "-v", f"{volume}:/d", "--volume-driver=shoal", "busybox", "sh", "-c", script]
    if direct:
        return dev_cluster.docker(node, *args).stdout.strip()
    if node:
        args[2:2] = ["-e", f"constraint:node=={node}"]
    return dev_cluster.cli(*args).stdout.strip()


def _seed(dev_cluster, kept, nodes=("node1", "node2", "node3")) -> list[Kept]:
    """A dataset with 1 MiB of random bytes on each node, and on the first a snapshot of it and a clone
    of that snapshot (so the chains are rebuilt too)."""
    out = []
    for node in nodes:
        name = _name("keep")
        kept["volumes"].append(f"{name}@gold")
        sha = _in_container(dev_cluster, f"{name}@gold", BLOB, node)
        [rec] = [r for r in _records(dev_cluster).values() if r["name"] == name]
        kept["ids"].append(rec["id"])
        out.append(Kept(name, node, rec["id"], sha))
    snap = _shoal(dev_cluster, "snapshot", out[0].name).stdout.strip()
    kept["ids"].append(snap)
    copy = _name("copy")
    made = _shoal(dev_cluster, "clone", snap, copy)
    assert made.returncode == 0, made.stderr
    kept["ids"].append(made.stdout.strip())
    _wait(lambda: (dev_cluster.node_dir(nodes[0]) / "pool" / "datasets" / made.stdout.strip()).is_dir(), 30)
    return [*out, Kept(copy, nodes[0], made.stdout.strip(), out[0].sha)]


def _ids_of(kept_list: list[Kept]) -> set[str]:
    return {k.id for k in kept_list}


def _manager_knows(dev_cluster, ids: set[str]) -> bool:
    """The manager's cache (what it places by) lists every one of `ids` again."""
    try:
        doc = dev_cluster.http("GET", "/shoal/v1/overview", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    return ids <= {d["id"] for d in doc.get("datasets", [])}


def _read_back(dev_cluster, kept_list: list[Kept], direct: bool = False) -> None:
    """Every byte of every dataset, read by a container (through the manager, which places it on the
    dataset's node; or straight on the node's engine)."""
    if not direct:
        _wait(lambda: _manager_knows(dev_cluster, _ids_of(kept_list)), 90, "the manager never saw them again")
    for k in kept_list:
        last: list[str] = [""]

        def read(k: Kept = k, last: list[str] = last) -> str | None:
            try:
                return _in_container(dev_cluster, k.name, READ, k.node if direct else "", direct)
            except AssertionError as e:
                last[0] = str(e)[-600:]
                return None

        try:
            got = _wait(read, 60)
        except AssertionError:
            raise AssertionError(f"{k.name} unreadable; the last try said: {last[0]}") from None
        assert got == k.sha, f"{k.name} ({k.id}) on {k.node}: read {got}, wrote {k.sha}"


def _try(fn):
    try:
        return fn()
    except AssertionError:
        return None


def _agent_log(dev_cluster, node: str) -> str:
    return (dev_cluster.node_dir(node) / "log" / "agent.log").read_text(errors="replace")


def _log_since(dev_cluster, node: str, mark: int) -> str:
    return _agent_log(dev_cluster, node)[mark:]


def _marks(dev_cluster) -> dict[str, int]:
    return {n: len(_agent_log(dev_cluster, n)) for n in dev_cluster.nodes}


def _recovered(dev_cluster, ids: set[str], registry: str | None = None) -> dict[str, dict]:
    def back() -> dict[str, dict] | None:
        recs = _records(dev_cluster, registry)
        return recs if ids <= set(recs) and all(recs[i]["recovered"] > 0 for i in ids) else None

    return _wait(back, 60, "the nodes never re-published their datasets")


def _state_of(listing: str, dataset_id: str) -> str:
    row = next(line for line in listing.splitlines() if dataset_id[:8] in line)
    return row


def test_a_wiped_registry_is_rebuilt_from_the_nodes(dev_cluster, kept):
    """(a) `curl -X DELETE .../v1/kv/shoal/datasets/?recurse` (and the name claims) deletes no data."""
    seeded = _seed(dev_cluster, kept)
    marks = _marks(dev_cluster)
    for prefix in ("shoal/datasets/", "shoal/dataset-names/"):
        subprocess.run(
            [
                "curl",
                "-sf",
                "--cacert",
                dev_cluster.env["CONSUL_CACERT"],
                "-H",  # the operator's management token: anyone else is refused (test_security)
                f"X-Consul-Token: {dev_cluster.env.get('CONSUL_HTTP_TOKEN', '')}",
                "-X",
                "DELETE",
                f"{dev_cluster.registry_url}/v1/kv/{prefix}?recurse",
            ],
            check=True,
        )
    recs = _recovered(dev_cluster, _ids_of(seeded))
    names = {k.name for k in seeded}

    def claimed() -> bool:  # the name claims come back beside the records, not necessarily with them
        _, claims = _consul(dev_cluster).kv.get("shoal/dataset-names/", recurse=True)
        return names <= {c["Key"].rsplit("/", 1)[-1] for c in claims or []}

    _wait(claimed, 60, "the nodes never claimed their datasets' names again")
    # while a node re-claims a name its record says "being claimed"; once claimed, no conflict is left

    def settled() -> dict | None:
        r = _records(dev_cluster)
        return r if all(r[k.id]["conflict"] == "" for k in seeded) else None

    recs = _wait(settled, 60, "a re-published record kept a conflict")
    for k in seeded:
        assert recs[k.id]["node"] == k.node and recs[k.id]["name"] == k.name and recs[k.id]["conflict"] == ""
        assert k.id in _subvolumes(dev_cluster)[k.node]
        assert f'event="dataset re-published" dataset={k.id}' in _log_since(
            dev_cluster, k.node, marks[k.node]
        )
    listing = _shoal(dev_cluster, "ls").stdout
    assert all("recovered" in _state_of(listing, k.id) for k in seeded)
    snap = recs[recs[seeded[-1].id]["parent"]]
    assert snap["kind"] == "snapshot" and snap["parent"] == seeded[0].id and snap["recovered"] > 0
    _read_back(dev_cluster, seeded)


def _restart_registry(dev_cluster, wipe: bool, kill: bool = False) -> None:
    """Stops the cluster's registry (with `kill`, kill -9 mid-work) and starts it again as `dev up` does
    (recording its pid, so `dev down` still stops it); with `wipe`, its SQLite file is deleted in between:
    it starts empty."""
    from shoal.dev import engine, state
    from shoal.dev.node import cluster_services, start

    layout = dev_cluster.layout()
    st = state.read(layout.state_file)
    assert st is not None
    if kill:
        host.kill({st.pids[""]["registry"]})
    else:
        host.terminate({st.pids[""]["registry"]}, grace=10.0)
    if wipe:
        for f in layout.root.glob("registry.db*"):
            f.unlink()
    [svc] = [s for s in cluster_services(layout) if s.name == "registry"]
    pid = start(svc)
    state.write(layout.state_file, replace(st, pids={**st.pids, "": {**st.pids[""], "registry": pid}}))
    engine.wait_http(svc.ready_url, pid, svc.log, "registry", ca=svc.ready_ca, cert=svc.ready_cert)


def test_kill_9_of_the_registry_under_dataset_creates_loses_no_acknowledged_one(dev_cluster, kept):
    """Dataset creates through the manager while the registry is killed -9 and started again: every create
    the manager acknowledged is in the registry afterwards, on its node's pool, and usable."""
    import threading

    acked: list[str] = []
    stop = threading.Event()

    def create(worker: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"dur{worker}x{i}{uuid.uuid4().hex[:4]}"
            i += 1
            out = dev_cluster.cli("volume", "create", "-d", "shoal", name, check=False, timeout=60)
            if out.returncode == 0:
                acked.append(name)

    workers = [threading.Thread(target=create, args=(w,)) for w in range(3)]
    for t in workers:
        t.start()
    try:
        _wait(lambda: len(acked) >= 5, 60, "no dataset create was acknowledged")
        _restart_registry(dev_cluster, wipe=False, kill=True)
        seen = len(acked)
        _wait(lambda: len(acked) >= seen + 3, 60, "creates did not resume after the registry came back")
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=90)
    kept["volumes"] += acked
    by_name = {}

    def all_there() -> bool:
        by_name.clear()
        by_name.update({d["name"]: d for d in _records(dev_cluster).values() if d.get("kind") == "dataset"})
        return all(n in by_name for n in acked)

    _wait(all_there, 30, f"acknowledged creates missing: {sorted(set(acked) - set(by_name))}")
    on_pools = lambda: all(by_name[n]["id"] in _subvolumes(dev_cluster)[by_name[n]["node"]] for n in acked)  # noqa: E731
    _wait(on_pools, 30, "an acknowledged dataset is not on its node's pool")
    probe = acked[len(acked) // 2]
    assert _in_container(dev_cluster, probe, "echo ok > /d/f && cat /d/f", by_name[probe]["node"]) == "ok"


def test_a_registry_restarted_empty_is_rebuilt_from_the_nodes(dev_cluster, kept):
    """(b) the registry stopped, its SQLite file deleted, started empty: every dataset comes back."""
    seeded = _seed(dev_cluster, kept)
    _restart_registry(dev_cluster, wipe=True)
    recs = _recovered(dev_cluster, _ids_of(seeded))
    assert all(recs[k.id]["node"] == k.node and recs[k.id]["name"] == k.name for k in seeded)
    _wait(
        lambda: all(_consul(dev_cluster).kv.get(f"shoal/nodes/{n}/facts")[1] for n in dev_cluster.nodes), 60
    )
    assert all(k.id in _subvolumes(dev_cluster)[k.node] for k in seeded)
    _read_back(dev_cluster, seeded)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@pytest.fixture
def other_registry(dev_cluster, tmp_path):
    """A second, empty registry on the cluster's gateway (its own SQLite file and port)."""
    port = _free_port(dev_cluster.gateway)
    address = f"{dev_cluster.gateway}:{port}"
    with open(tmp_path / "registry.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "registry", "--store", f"sqlite://{tmp_path / 'other.db'}",
             "--http", address, "--dns", f"{dev_cluster.gateway}:0", "--node", "other",
             "--advertise", dev_cluster.gateway],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait(
            lambda: _try_get(f"http://{address}/v1/status/leader"), 30, "the second registry never answered"
        )
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _try_get(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _restart_agent(dev_cluster, node: str, registry: str | None = None) -> None:
    """Stops the node's agent (SIGTERM: it leaves cleanly) and starts it as `dev up` does, pointed at
    `registry` instead of the cluster's if given."""
    host.terminate(dev_cluster.agent_pids(node), grace=15.0)
    # the agent publishes there instead of where joining told it to; the state file keeps its pid
    dev_cluster.start_agent(node, *(("--registry", f"http://{registry}") if registry is not None else ()))
    c = _consul(dev_cluster, registry)
    _wait(lambda: _try(lambda: c.kv.get(f"shoal/nodes/{node}/facts")[1]), 60, f"{node}'s agent never came up")


def test_an_agent_pointed_at_an_empty_registry_keeps_its_data_and_a_name_claimed_twice_is_a_conflict(
    dev_cluster, kept, other_registry
):
    """(c) node3's agent pointed at another, empty registry re-publishes its datasets there and deletes
    nothing; a name made there that the cluster's registry already holds comes back as a conflict."""
    seeded = _seed(dev_cluster, kept, nodes=("node3", "node1"))
    on3 = [k for k in seeded if k.node == "node3"]
    before = _records(dev_cluster)
    marks = _marks(dev_cluster)
    try:
        _restart_agent(dev_cluster, "node3", other_registry)
        there = _recovered(dev_cluster, _ids_of(on3), other_registry)
        assert all(there[k.id]["node"] == "node3" for k in on3)
        assert set(there) <= {i for i, r in before.items() if r["node"] == "node3"}  # only node3's own
        assert {i: r for i, r in _records(dev_cluster).items() if i in before} == before  # nothing lost here
        for k in on3:
            kept["volumes"].append(k.name)
        _read_back(dev_cluster, on3, direct=True)  # node3's engine, through the other registry
        # a name the cluster's registry holds (node1's dataset), free in the other one: made on node3
        twice = seeded[1]
        kept["volumes"].append(f"{twice.name}@gold")
        _in_container(dev_cluster, f"{twice.name}@gold", "echo node3 > /d/who", "node3", direct=True)
        [dup] = [r for r in _records(dev_cluster, other_registry).values() if r["name"] == twice.name]
        kept["ids"].append(dup["id"])
    finally:
        _restart_agent(dev_cluster, "node3")
    recs = _wait(
        lambda: dup["id"] in (r := _records(dev_cluster)) and r, 60, "the new dataset never came back"
    )
    assert recs[dup["id"]]["conflict"] == f"name {twice.name} is held by dataset {twice.id}"
    assert recs[twice.id]["conflict"] == "" and recs[twice.id]["node"] == "node1"
    listing = _shoal(dev_cluster, "ls").stdout
    assert "conflict" in _state_of(listing, dup["id"])
    assert (
        f"node3: conflict: {twice.name} ({dup['id']}): name {twice.name} is held by dataset {twice.id}"
        in listing
    )
    assert f'event="name conflict" dataset={dup["id"]}' in _log_since(dev_cluster, "node3", marks["node3"])
    assert dup["id"] in _subvolumes(dev_cluster)["node3"] and twice.id in _subvolumes(dev_cluster)["node1"]
    _read_back(dev_cluster, seeded)  # the name still means node1's dataset, bytes and all
    rescued = _name("rescued")  # the conflicting one is reached by its id, never deleted for the clash
    made = _shoal(dev_cluster, "clone", dup["id"][:8], rescued)
    assert made.returncode == 0, made.stderr
    kept["ids"] += [_records(dev_cluster)[made.stdout.strip()]["parent"], made.stdout.strip()]
    kept["volumes"].append(rescued)
    _wait(lambda: (dev_cluster.node_dir("node3") / "pool" / "datasets" / made.stdout.strip()).is_dir(), 30)
    _wait(lambda: _manager_knows(dev_cluster, {made.stdout.strip()}), 90, "the manager never saw the clone")
    assert _in_container(dev_cluster, rescued, "cat /d/who") == "node3"


def test_forged_records_are_refused_and_the_rest_converges(dev_cluster, kept):
    """(d) records whose id or path tries to leave the pool are refused and reported; nothing outside the
    pools changes, the node's other datasets stay, and a new one alongside them is made."""
    seeded = _seed(dev_cluster, kept, nodes=("node1", "node2"))
    c = _consul(dev_cluster)
    pools = {n: sorted(os.listdir(dev_cluster.node_dir(n))) for n in dev_cluster.nodes}
    etc = os.stat("/etc").st_mtime_ns
    u = [str(uuid.uuid4()) for _ in range(6)]
    base = {"profile": "gold", "kind": "dataset", "name": "forged", "created": 1.0}
    forged = {
        f"shoal/datasets/{u[0]}": {**base, "id": "../../etc", "node": "node1"},
        f"shoal/datasets/{u[1]}": {**base, "id": "/etc", "node": "node1"},
        f"shoal/datasets/{u[2]}": {**base, "id": u[2][:-1] + "\u0000", "node": "node2"},
        "shoal/datasets/" + "a" * 4096: {**base, "id": "a" * 4096, "node": "node2"},
        "shoal/datasets/not-a-uuid": {**base, "id": "not-a-uuid", "node": "node1"},
        f"shoal/datasets/{u[3]}": {**base, "id": u[3], "node": "node1", "parent": "../../etc"},
        f"shoal/datasets/{u[4]}": {**base, "id": u[4], "node": "node2", "name": "../../etc"},
        f"shoal/datasets/{u[5]}": "this is not a record",
        f"shoal/deletions/{seeded[0].id}": {"id": "../../etc", "node": "node1"},
    }
    marks = _marks(dev_cluster)
    try:
        for key, value in forged.items():
            assert c.kv.put(key, value if isinstance(value, str) else json.dumps(value)), key
        fresh = _name("alongside")  # a good record written with them
        kept["volumes"].append(f"{fresh}@gold")
        dev_cluster.cli("volume", "create", "-d", "shoal", f"node2/{fresh}@gold")
        assert _in_container(dev_cluster, f"{fresh}@gold", "echo made > /d/f && cat /d/f", "node2") == "made"
        [rec] = [r for r in _records(dev_cluster, valid_only=True).values() if r["name"] == fresh]
        kept["ids"].append(rec["id"])
        listing = _wait(
            lambda: (out := _shoal(dev_cluster, "ls").stdout).count("refused record") >= 8 and out, 30
        )
        for key in forged:
            assert f"refused record {key[:40]}" in listing, key
        assert f"refused record shoal/datasets/{u[0]}" in _log_since(dev_cluster, "node1", marks["node1"])
        assert "not a dataset id" in _log_since(dev_cluster, "node2", marks["node2"])
    finally:
        for key in forged:
            c.kv.delete(key)
    assert os.stat("/etc").st_mtime_ns == etc
    assert {n: sorted(os.listdir(dev_cluster.node_dir(n))) for n in dev_cluster.nodes} == pools
    for n in dev_cluster.nodes:  # nothing on any pool but datasets and records named by their ids
        pool = dev_cluster.node_dir(n) / "pool"
        assert sorted(p.name for p in pool.iterdir()) == ["copies", "datasets", "records"]
        names = [p.name for sub in ("copies", "datasets", "records") for p in (pool / sub).iterdir()]
        assert all(_is_uuid(_bare(name)) for name in names), names
    assert seeded[0].id in _records(dev_cluster)  # the forged deletion request deleted nothing
    _read_back(dev_cluster, seeded)


def _bare(name: str) -> str:
    """A pool entry's dataset id: without the marks of a step in progress or the record suffix."""
    for mark in (".new-del-", ".new-", ".tmp-"):
        name = name.removeprefix(mark)
    return name.removesuffix(".json")


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def test_a_failing_step_is_retried_with_backoff_and_holds_up_nothing_else(dev_cluster, kept):
    """(e) a clone whose parent snapshot is missing fails, and is tried again and again (not forgotten
    until the next change) while the node's other datasets converge; once its parent exists it is made."""
    [source] = _seed(dev_cluster, kept, nodes=("node2",))[:1]
    c = _consul(dev_cluster)
    snap_id, clone_id, name = str(uuid.uuid4()), str(uuid.uuid4()), _name("orphan")
    kept["ids"] += [snap_id, clone_id]
    kept["volumes"].append(name)
    mark = _marks(dev_cluster)["node2"]
    doc = {"id": clone_id, "name": name, "profile": "gold", "node": "node2", "kind": "dataset",
           "parent": snap_id, "created": time.time(), "volume": name}  # fmt: skip
    c.kv.put(f"shoal/dataset-names/{name}", clone_id)
    c.kv.put(f"shoal/datasets/{clone_id}", json.dumps(doc))
    failing = (
        f'event="step failed" step=clone dataset={clone_id} name={name} source={snap_id} node=node2 attempt='
    )
    _wait(lambda: f"{failing}3" in _log_since(dev_cluster, "node2", mark), 60, "the step was not retried")
    log = _log_since(dev_cluster, "node2", mark)
    assert "is not on this node's pool" in log and f"{failing}1" in log and f"{failing}2" in log
    other = _name("meanwhile")  # the node's other datasets converge meanwhile
    kept["volumes"].append(f"{other}@gold")
    assert _in_container(dev_cluster, f"{other}@gold", "echo fine > /d/f && cat /d/f", "node2") == "fine"
    listing = _shoal(dev_cluster, "ls").stdout
    assert f"node2: failing: clone {clone_id} from {snap_id}" in listing
    # the parent arrives: the held step is made on its next try, with the parent's bytes
    snap = {"id": snap_id, "name": "", "profile": "gold", "node": "node2", "kind": "snapshot",
            "parent": source.id, "created": time.time()}  # fmt: skip
    c.kv.put(f"shoal/datasets/{snap_id}", json.dumps(snap))
    pool = dev_cluster.node_dir("node2") / "pool" / "datasets"
    _wait(lambda: (pool / clone_id).is_dir(), 90, "the clone was never made")
    assert f'event="step recovered" step=clone dataset={clone_id}' in _log_since(dev_cluster, "node2", mark)
    _wait(lambda: "failing: clone" not in _shoal(dev_cluster, "ls").stdout, 30)
    _read_back(dev_cluster, [source, Kept(name, "node2", clone_id, source.sha)])


def test_shoal_volume_rm_asks_the_nodes_engine_first(dev_cluster, kept):
    """A container that uses a dataset but has not mounted it (created, not started) keeps it: the node's
    agent asks its engine before deleting, refuses with the reason, and takes nothing away."""
    vol, ct = _name("held"), _name("holder")
    kept["volumes"].append(f"{vol}@gold")
    kept["containers"].append(ct)
    dev_cluster.cli("create", "--name", ct, "-v", f"{vol}@gold:/d", "--volume-driver=shoal", "busybox")
    [rec] = [r for r in _records(dev_cluster).values() if r["name"] == vol]
    kept["ids"].append(rec["id"])
    node = rec["node"]
    refused = _shoal(dev_cluster, "rm", vol)
    assert refused.returncode == 1, refused.stdout
    assert f"dataset {vol} is in use by container(s) {ct} on {node}" in refused.stderr
    assert rec["id"] in _records(dev_cluster) and rec["id"] in _subvolumes(dev_cluster)[node]
    assert not _consul(dev_cluster).kv.get(f"shoal/deletions/{rec['id']}")[1]  # the refused request withdrawn
    dev_cluster.cli("rm", ct)
    kept["containers"].clear()
    done = _shoal(dev_cluster, "rm", vol)
    assert done.returncode == 0 and done.stdout.strip() == rec["id"], done.stderr
    assert rec["id"] not in _records(dev_cluster) and rec["id"] not in _subvolumes(dev_cluster)[node]
