"""Dataset moves between real nodes: redis writing all the time while its dataset moves (every acknowledged
write is there after, the moved bytes checksum equal, the writer's downtime printed); a create placed
away from its dataset moves it; and kill -9 of the sending agent, the receiving agent or the manager at
named points of a move leaves exactly one writable copy, with the move finished or undone."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from shoal.dev import host
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e
SHOAL = [sys.executable, "-m", "shoal"]


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _wait(pred, timeout: float = 20.0, what: str = ""):
    return wait_for(pred, timeout, what)


def redis(address: str, *args: str, timeout: float = 0.5) -> object:
    """One command over RESP (redis's protocol), as any client sends it; raises OSError if no answer."""
    with socket.create_connection((address, 6379), timeout=timeout) as s:
        s.sendall(f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args))
        f = s.makefile("rb")
        line = f.readline()
        if not line:
            raise OSError("closed")
        kind, rest = line[:1], line[1:].strip()
        if kind == b"-":
            raise OSError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if kind == b":":
            return int(rest)
        return rest.decode()


class Writer(threading.Thread):
    """A client writing k<i> = i in a loop to redis wherever it runs (every node's address is tried),
    keeping which writes were acknowledged and the longest time without one."""

    def __init__(self, addresses: list[str], prefix: str) -> None:
        super().__init__(daemon=True)
        self.addresses, self.prefix = addresses, prefix
        self.acked: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.where = addresses[0]

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            for a in [self.where, *(x for x in self.addresses if x != self.where)]:
                try:
                    if redis(a, "SET", f"{self.prefix}{i}", str(i), timeout=0.3) == "OK":
                        self.acked.append((i, time.monotonic()))
                        self.where = a
                        i += 1
                        break
                except OSError:
                    continue
            else:
                time.sleep(0.05)
            time.sleep(0.01)

    def longest_gap(self, since: float = 0.0) -> float:
        times = [t for _, t in self.acked if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def missing(self, address: str) -> list[int]:
        return [i for i, _ in self.acked if redis(address, "GET", f"{self.prefix}{i}", timeout=2.0) != str(i)]


def tree_sha(path: Path) -> str:
    """A content checksum of a directory tree (names, sizes and bytes of every file)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(path)}\0{p.stat().st_size}\0".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def shoal(dev_cluster, *args: str, check: bool = True, env: dict | None = None, timeout: float = 180):
    """The `shoal` CLI as a user runs it after `eval "$(shoal dev env)"` (TLS and all)."""
    full = dev_cluster.client_env()
    p = subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=timeout, env={**full, **(env or {})}
    )
    assert not check or p.returncode == 0, f"shoal {' '.join(args)}: {p.stdout}\n{p.stderr}"
    return p


def inspect(dev_cluster, ref: str) -> dict:
    return json.loads(shoal(dev_cluster, "volume", "inspect", ref).stdout)


def pool_role(dev_cluster, node: str, dataset_id: str) -> tuple[str, int, bool]:
    """What a node's pool says of its copy: role, epoch, and whether a writable copy is in datasets/."""
    pool = dev_cluster.node_dir(node) / "pool"
    rec = pool / "records" / f"{dataset_id}.json"
    if not rec.exists():
        return "", 0, False
    doc = json.loads(rec.read_text())
    return doc.get("role", "owner"), doc.get("epoch", 0), (pool / "datasets" / dataset_id).is_dir()


def registry_json(dev_cluster, key: str) -> dict:
    """A registry key's JSON as py-consul reads it with the cluster's env ({} if missing)."""
    _, got = dev_cluster.consul().kv.get(key)
    try:
        return json.loads(got["Value"]) if got and got.get("Value") else {}
    except ValueError:
        return {}


def writable_copies(dev_cluster, dataset_id: str) -> list[str]:
    """The nodes that would serve the dataset writable: their pool holds it as owner at the epoch the
    registry's record names, and the record names them (the plugin's own rule)."""
    record = registry_json(dev_cluster, f"shoal/datasets/{dataset_id}")
    out = []
    for node in dev_cluster.nodes:
        role, epoch, live = pool_role(dev_cluster, node, dataset_id)
        if role == "owner" and live and record.get("node") == node and record.get("epoch", 0) == epoch:
            out.append(node)
    return out


def redis_run(name: str, node: str, volume: str, *extra: str) -> list[str]:
    """`docker run` arguments for a redis on `node` that keeps every acknowledged write (appendfsync
    always) in `volume` (NAME@PROFILE), on port 6379 of its node: the writer the move and failover tests
    and benchmarks/failover.py count writes against."""
    return [
        "run", "-d", "--name", name, "-p", "6379:6379", "-e", f"constraint:node=={node}", *extra,
        "-v", f"{volume}:/data", "--volume-driver=shoal",
        "redis", "redis-server", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no",
    ]  # fmt: skip


def _redis(dev_cluster, gone, node: str, vol: str, *extra: str, profile: str = "gold") -> str:
    name = _name("db")
    gone["containers"].append(name)
    gone["volumes"].append(f"{vol}@{profile}")
    dev_cluster.cli(*redis_run(name, node, f"{vol}@{profile}", *extra))
    _wait(lambda: _answers(dev_cluster.address(node)), 30, "redis never answered")
    return name


def _answers(address: str) -> bool:
    try:
        return redis(address, "PING") == "PONG"
    except OSError:
        return False


def test_a_running_writer_moves_with_its_dataset_and_loses_no_write(dev_cluster, gone):
    vol = _name("mv")
    name = _redis(dev_cluster, gone, "node2", vol)
    addresses = [dev_cluster.address(n) for n in ("node2", "node3", "node1")]
    w = Writer(addresses, "k")
    w.start()
    _wait(lambda: len(w.acked) > 200, 30, "the writer never wrote")
    i = inspect(dev_cluster, vol)["id"]
    before = time.monotonic()
    moved = shoal(dev_cluster, "volume", "move", vol, "node3")
    # the final increment as the target received it, read at once (the replica's pulls that follow the
    # move make newer copies, and the oldest are pruned after a few)
    finals = sorted((dev_cluster.node_dir("node3") / "pool" / "copies" / i).glob("s000000-*"))
    received = tree_sha(finals[-1] / "c")
    _wait(
        lambda: w.where == dev_cluster.address("node3")
        and len(w.acked) > 0
        and w.acked[-1][1] > before + 0.5,
        30,
        "the writer never reached redis on node3",
    )
    time.sleep(0.5)
    w.stop.set()
    w.join(5)
    assert f"moved {vol} from node2 to node3" in moved.stdout, moved.stdout
    node = dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", name).stdout.strip()
    assert node == "node3"
    doc = inspect(dev_cluster, vol)
    assert doc["node"] == "node3" and doc["epoch"] == 1 and doc["move"] is None
    assert w.missing(dev_cluster.address("node3")) == [], "acknowledged writes were lost in the move"
    # the bytes moved are the bytes that were there: the old copy (now read-only, kept) and the target's
    # copy of the final increment checksum equal
    _wait(lambda: pool_role(dev_cluster, "node2", i)[0] == "replica", 60, "node2's copy was not demoted")
    old = _wait(
        lambda: sorted((dev_cluster.node_dir("node2") / "pool" / "copies" / i).glob("old-*")),
        60,
        "node2's old copy was not put away",
    )[-1]
    assert tree_sha(old / "c") == received
    assert writable_copies(dev_cluster, i) == ["node3"]
    print(
        f"move: {moved.stdout.strip()}; the writer's longest gap {w.longest_gap(before):.2f}s, "
        f"{len(w.acked)} writes acknowledged, none lost"
    )


def test_a_create_placed_away_from_its_dataset_moves_it_there(dev_cluster, gone):
    vol = _name("away")
    gone["volumes"].append(f"{vol}@gold")
    dev_cluster.cli("volume", "create", "-d", "shoal", f"node1/{vol}@gold")
    dev_cluster.cli(
        "run",
        "--rm",
        "-e",
        "constraint:node==node1",
        "-v",
        f"{vol}@gold:/d",
        "--volume-driver=shoal",
        "busybox",
        "sh",
        "-c",
        "echo from-node1 > /d/f",
    )
    out = dev_cluster.cli(
        "run",
        "--rm",
        "-e",
        "constraint:node==node3",
        "-v",
        f"{vol}@gold:/d",
        "--volume-driver=shoal",
        "busybox",
        "cat",
        "/d/f",
    ).stdout.strip()
    assert out == "from-node1"
    doc = inspect(dev_cluster, vol)
    assert doc["node"] == "node3" and doc["epoch"] == 1
    assert writable_copies(dev_cluster, doc["id"]) == ["node3"]


def test_a_move_of_a_dataset_in_use_elsewhere_is_refused_with_the_way_out(dev_cluster, gone):
    vol = _name("busy")
    c = _name("holder")
    gone["containers"].append(c)
    gone["volumes"].append(f"{vol}@gold")
    dev_cluster.cli(
        "create",
        "--name",
        c,
        "-e",
        "constraint:node==node1",
        "-v",
        f"{vol}@gold:/d",
        "--volume-driver=shoal",
        "busybox",
        "true",
    )
    got = dev_cluster.cli(
        "run",
        "--rm",
        "-e",
        "constraint:node==node2",
        "-v",
        f"{vol}@gold:/d",
        "--volume-driver=shoal",
        "busybox",
        "true",
        check=False,
    )
    assert got.returncode != 0 and f"shoal volume move {vol} node2" in got.stderr, got.stderr
    assert inspect(dev_cluster, vol)["node"] == "node1"


def _restart_agent(dev_cluster, node: str, crash_at: str = "") -> int:
    # every agent in the node's namespace, not only the one the state file names: a second agent left
    # running would serve the move instead of the one started with the crash point
    pids = dev_cluster.agent_pids(node)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    host.wait_gone(pids, 10)
    old = os.environ.pop("SHOAL_MOVE_CRASH_AT", None)
    if crash_at:
        os.environ["SHOAL_MOVE_CRASH_AT"] = crash_at
    try:
        new = dev_cluster.start_agent(node)
    finally:
        os.environ.pop("SHOAL_MOVE_CRASH_AT", None)
        if old is not None:
            os.environ["SHOAL_MOVE_CRASH_AT"] = old
    _wait(lambda: _transfer_pid(dev_cluster, node) == new, 30, f"{node}'s agent never served transfers")
    return new


def _transfer_pid(dev_cluster, node: str) -> int:
    return registry_json(dev_cluster, f"shoal/nodes/{node}/transfer").get("pid", 0)


def _restart_manager(dev_cluster, crash_at: str = "") -> None:
    shoal(
        dev_cluster,
        "dev",
        "manager",
        "restart",
        "--name",
        dev_cluster.name,
        "--root",
        str(dev_cluster.root),
        env={"SHOAL_MOVE_CRASH_AT": crash_at},
    )


# kill -9 (os._exit at a named point) of: the manager as the move begins (its record written, nothing
# pulled), the sending agent mid-stream, the receiving agent mid-stream and after its copy is in place, the
# manager once the copy is there and the containers are created ahead on the target (the old ones renamed
# aside), after the final phase began (containers stopped), after the last increment landed and right after
# the fence; and the sending and the receiving agent mid-stream of the final increment (the containers
# stopped: the undo starts them again). Before the fence the move is undone (the source keeps the writable
# copy, its container runs again there); after it, a restarted manager finishes it (the container runs on
# the target).
CRASHES = [
    ("manager", "move-started", "node2"),
    ("source", "send-mid", "node2"),
    ("target", "receive-mid", "node2"),
    ("target", "receive-done", "node2"),
    ("manager", "move-copied", "node2"),
    ("manager", "move-final", "node2"),
    # the final pull's own points: the target's replica loop and the copy phase pull a varying number of
    # times before it, so "the Nth send" could not name it
    ("source", "send-final-mid", "node2"),
    ("target", "receive-final-mid", "node2"),
    ("manager", "move-pulled", "node2"),
    ("manager", "move-fenced", "node3"),
]


def _crash_armed(dev_cluster, who: str, point: str) -> int:
    """The process named by `who` started again with the crash point; returns its pid."""
    if who == "manager":
        _restart_manager(dev_cluster, point)
        return dev_cluster.pid("", "manager")
    return _restart_agent(dev_cluster, "node2" if who == "source" else "node3", point)


def _k9_redis(dev_cluster, gone) -> tuple[str, str, str]:
    """A redis on node2 with 50 keys in a silver dataset: its name, the volume's name and the dataset id.
    Silver keeps no replica: the move's own stream is the only one, and the target holds nothing yet, so
    the move streams and reaches every crash point (a replica in sync would answer "nothing new"; and
    gold's replica can land on the target at any moment, e.g. a second one while a node flaps)."""
    vol = _name("k9")
    name = _redis(dev_cluster, gone, "node2", vol, profile="silver")
    for i in range(50):
        redis(dev_cluster.address("node2"), "SET", f"x{i}", str(i))
    return name, vol, inspect(dev_cluster, vol)["id"]


def _ends_with_one_copy_on(dev_cluster, name: str, vol: str, i: str, ends_on: str) -> None:
    """What a user sees once the dead process is back: no move under way, one writable copy on `ends_on`,
    the container running there, and every key written before the move readable."""
    _wait(lambda: inspect(dev_cluster, vol)["move"] is None, 120, "the move was neither undone nor finished")
    _wait(lambda: writable_copies(dev_cluster, i) == [ends_on], 120, f"no single writable copy on {ends_on}")
    _wait(
        lambda: dev_cluster.cli(
            "inspect", "-f", "{{.State.Running}} {{.Node.Name}}", name, check=False
        ).stdout.strip()
        == f"true {ends_on}",
        120,
        f"{name} does not run on {ends_on}",
    )
    _wait(lambda: _answers(dev_cluster.address(ends_on)), 30, "redis never answered again")
    assert all(redis(dev_cluster.address(ends_on), "GET", f"x{k}") == str(k) for k in range(50))


@pytest.mark.parametrize(("who", "point", "ends_on"), CRASHES, ids=[c[1] for c in CRASHES])
def test_kill_9_at_a_point_of_a_move_leaves_one_writable_copy(dev_cluster, gone, who, point, ends_on):
    name, vol, i = _k9_redis(dev_cluster, gone)
    target = "node3"
    armed = _crash_armed(dev_cluster, who, point)
    try:
        got = shoal(dev_cluster, "volume", "move", vol, target, check=False)
        # the one who died never answers the move (if it did: what the volume looked like, for the log)
        if got.returncode == 0:  # (the manager may be the one that died: ask it only when it answered)
            pytest.fail(f"{got.stdout}{inspect(dev_cluster, vol)} {_transfer_pid(dev_cluster, target)}")
        assert host.wait_gone({armed}, 30), f"the {who} never reached {point}: {got.stdout}{got.stderr}"
        assert writable_copies(dev_cluster, i) in ([], ["node2"], [target])  # never two
    finally:
        if who == "manager":
            _restart_manager(dev_cluster)  # a new manager undoes or finishes the move it finds
        else:
            _restart_agent(dev_cluster, "node2" if who == "source" else target)
    _ends_with_one_copy_on(dev_cluster, name, vol, i, ends_on)


def test_kill_9_of_the_target_promoting_after_the_fence_finishes_the_move_there(dev_cluster, gone):
    """The fence is committed, then the target's agent dies making its copy writable (its pool's record says
    promoting). The manager lives on and may answer the move either way; once the agent is back its pool
    finishes the promotion, and the move ends on the target: never on the source again, whose copy the
    fence retired."""
    name, vol, i = _k9_redis(dev_cluster, gone)
    armed = _crash_armed(dev_cluster, "target", "promote-mid")
    try:
        got = shoal(dev_cluster, "volume", "move", vol, "node3", check=False)
        assert host.wait_gone(
            {armed}, 60
        ), f"node3's agent never reached promote-mid: {got.stdout}{got.stderr}"
        # the fence is the registry's word: the record names node3 at the next epoch, and node3's pool
        # holds the copy as promoting, not yet writable
        record = registry_json(dev_cluster, f"shoal/datasets/{i}")
        assert (record.get("node"), record.get("epoch")) == ("node3", 1), record
        assert pool_role(dev_cluster, "node3", i)[0] == "promoting"
        assert writable_copies(dev_cluster, i) == []
    finally:
        _restart_agent(dev_cluster, "node3")
    _ends_with_one_copy_on(dev_cluster, name, vol, i, "node3")
