"""One contract for both pools: btrfs on a real loop-mounted filesystem, and the plain directory. Every
dataset carries its own record on the pool (outside the directory a container mounts), every step is
atomic, and nothing but a dataset id ever becomes a path."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from shoal.data.model import Dataset, PoolFull
from shoal.data.plan import Cluster, PoolState, Step, plan
from shoal.data.pool import ondisk, open_pool
from shoal.errors import BadRequest, NotFound


@pytest.fixture(params=["btrfs", "directory"])
def pool(request, tmp_path):
    if request.param == "directory":
        yield open_pool(tmp_path / "dir", "directory")
        return
    assert os.geteuid() == 0, "the btrfs pool contract needs root (to mount a btrfs image)"
    img, mnt = tmp_path / "pool.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "512M", str(img)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", str(img)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield open_pool(mnt, "btrfs")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _id() -> str:
    return str(uuid.uuid4())


def _rec(i: str, name: str = "", kind: str = "dataset", parent: str = "", size: int = 0) -> Dataset:
    return Dataset(i, name or (f"v{i[:6]}" if kind == "dataset" else ""), "gold", "", size, parent, kind,
                   1718000000.5, f"{name}@gold" if name else "")  # fmt: skip


def _make(pool, d: Dataset) -> None:
    op = "create" if not d.parent else ("snapshot" if d.kind == "snapshot" else "clone")
    pool.apply(Step(op, d.id, d.parent, d.size, record=d))


def _write(p: Path, text: str) -> None:
    (p / "f.txt").write_text(text)


def test_create_snapshot_clone_delete(pool):
    a, s, c = _rec(_id(), "a"), None, None
    _make(pool, a)
    _write(pool.path(a.id), "v1")
    s = _rec(_id(), kind="snapshot", parent=a.id)
    _make(pool, s)
    _write(pool.path(a.id), "v2")  # later writes stay out of the snapshot
    c = _rec(_id(), "c", parent=s.id)
    _make(pool, c)
    assert (pool.path(s.id) / "f.txt").read_text() == "v1"
    assert (pool.path(c.id) / "f.txt").read_text() == "v1"
    _write(pool.path(c.id), "clone's own")
    assert (pool.path(a.id) / "f.txt").read_text() == "v2"
    disk = pool.discover()
    assert set(disk.datasets) == {a.id, s.id, c.id} and disk.partial == () and disk.strays == ()
    assert disk.datasets[s.id].readonly and not disk.datasets[c.id].readonly
    assert not disk.datasets[a.id].readonly
    for d in (c, s, a):
        pool.apply(Step("delete", d.id, record=d))
    assert pool.discover() == PoolState({}, ())
    assert list(pool.records.iterdir()) == []


def test_every_dataset_carries_its_own_record_outside_what_a_container_mounts(pool):
    a = _rec(_id(), "mine", size=32 << 20)
    _make(pool, a)
    snap = _rec(_id(), kind="snapshot", parent=a.id)
    _make(pool, snap)
    assert sorted(p.name for p in pool.path(a.id).iterdir()) == []  # nothing of shoal's in the dataset
    doc = json.loads((pool.records / f"{a.id}.json").read_text())
    assert doc == {
        "format": "shoal-dataset/1", "id": a.id, "name": "mine", "kind": "dataset", "profile": "gold",
        "parent": "", "created": 1718000000.5, "size": 32 << 20, "volume": "mine@gold",
    }  # fmt: skip
    disk = pool.discover()
    assert disk.datasets[a.id].record == a and disk.datasets[snap.id].record == snap
    assert disk.datasets[a.id].limit == 32 << 20


def test_size_limit_is_recorded(pool):
    d = _rec(_id(), "lim", size=64 << 20)
    _make(pool, d)
    assert pool.discover().datasets[d.id].limit == 64 << 20
    pool.apply(Step("limit", d.id, size=128 << 20, record=replace(d, size=128 << 20)))
    disk = pool.discover()
    assert disk.datasets[d.id].limit == 128 << 20 and disk.datasets[d.id].record.size == 128 << 20


def test_a_leftover_of_an_interrupted_step_is_found_and_discarded(pool):
    done, todo, half = _rec(_id(), "x"), _rec(_id(), "y"), _id()
    _make(pool, done)
    (pool.datasets / f".new-{half}").mkdir()  # as if the agent died between make and rename
    disk = pool.discover()
    assert disk.partial == (f".new-{half}",) and set(disk.datasets) == {done.id}
    recs = {d.id: replace(d, node="n1") for d in (done, todo)}
    steps = plan("n1", Cluster(recs, {"x": done.id, "y": todo.id}), disk, {}).steps
    assert [str(s) for s in steps] == [f"discard .new-{half}", f"create {todo.id}"]
    for s in steps:
        pool.apply(s)
    assert set(pool.discover().datasets) == {done.id, todo.id} and pool.discover().partial == ()


def test_a_record_without_its_dataset_is_a_make_still_to_do(pool):
    d = _rec(_id(), "cut")
    ondisk.write(pool.records, d)  # the record goes first: a crash here leaves just it
    (pool.datasets / f".new-{d.id}").mkdir()
    disk = pool.discover()
    assert disk.pending == {d.id: d} and disk.datasets == {}
    steps = plan("n1", Cluster({}), disk, {}, now=5.0).steps  # the registry lost it meanwhile
    assert [s.op for s in steps] == ["discard", "create", "publish"]
    for s in steps[:2]:
        pool.apply(s)
    assert pool.discover().datasets[d.id].record == d


def test_a_deletion_cut_short_is_finished_from_its_mark(pool):
    d = _rec(_id(), "going")
    _make(pool, d)
    _write(pool.path(d.id), "x")
    ondisk.write(pool.records, d, deleting=1.0)  # the mark, then the crash
    pool.path(d.id).rename(pool.datasets / f".new-del-{d.id}")
    disk = pool.discover()
    assert disk.deleting == {d.id: d} and disk.partial == (f".new-del-{d.id}",)
    steps = plan("n1", Cluster({}), disk, {}).steps
    assert [s.op for s in steps] == ["delete", "forget"]
    pool.apply(steps[0])
    assert pool.discover() == PoolState({}, ())


def test_a_make_whose_parent_is_missing_fails_and_leaves_nothing(pool):
    clone = _rec(_id(), "orphan", parent=_id())
    with pytest.raises(NotFound, match="its parent snapshot .* is not on this node's pool"):
        _make(pool, clone)
    assert pool.discover() == PoolState({}, ())


def test_what_the_pool_does_not_understand_is_reported_and_left_alone(pool):
    keep = _rec(_id(), "keep")
    _make(pool, keep)
    (pool.datasets / "someones-dir").mkdir()
    (pool.datasets / "someones-dir" / "data").write_text("theirs")
    (pool.records / "notes.txt").write_text("hello")
    bad = _id()
    (pool.records / f"{bad}.json").write_text(json.dumps({"format": "shoal-dataset/1", "id": "../../etc"}))
    disk = pool.discover()
    assert {s.key for s in disk.strays} == {
        "datasets/someones-dir",
        "records/notes.txt",
        f"records/{bad}.json",
    }
    assert set(disk.datasets) == {keep.id}
    p = plan("n1", Cluster({}), disk, {})
    assert not [s for s in p.steps if s.op in ("delete", "discard")]
    assert any("someones-dir" in r for r in p.reports)
    assert (pool.datasets / "someones-dir" / "data").read_text() == "theirs"


@pytest.mark.parametrize("bad", ["../../etc", "/etc", "a\x00b", "a" * 4096, "not-a-uuid", ".new-x", ""])
def test_nothing_but_a_dataset_id_becomes_a_path(pool, bad):
    with pytest.raises(BadRequest, match="is not a dataset id"):
        pool.path(bad)
    with pytest.raises(BadRequest):
        pool.apply(Step("create", bad, record=Dataset(bad, "x", "gold", "")))
    with pytest.raises(BadRequest):
        pool.apply(Step("delete", bad))


def test_a_dataset_from_before_records_is_adopted_never_deleted(pool):
    old = _id()
    pool._make(pool.path(old))  # as an older shoal made it: no record
    _write(pool.path(old), "old data")
    disk = pool.discover()
    assert disk.datasets[old].record is None
    steps = plan("n1", Cluster({}), disk, {}, now=9.0, default_profile="bronze").steps
    assert [s.op for s in steps] == ["adopt", "publish"]
    pool.apply(steps[0])
    rec = pool.discover().datasets[old].record
    assert rec is not None and rec.name == f"recovered-{old[:8]}" and rec.profile == "bronze"
    assert (pool.path(old) / "f.txt").read_text() == "old data"


def test_room_is_checked_before_making(pool):
    with pytest.raises(PoolFull, match="is full"):
        pool.check_room(1 << 50, "huge")
    pool.check_room(1 << 20, "small")


# --- copies between pools (moves and replicas): the same protocol on both ---------------------------------


@pytest.fixture
def pools(request, tmp_path, pool):
    """A second pool of the same kind beside `pool`: the other end of a move."""
    if pool.kind == "directory":
        yield pool, open_pool(tmp_path / "dir2", "directory")
        return
    img, mnt = tmp_path / "pool2.img", tmp_path / "mnt2"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "512M", str(img)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", str(img)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield pool, open_pool(mnt, "btrfs")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _ship(src, dst, i: str, name: str, truncate: int | None = None) -> bool:
    """One copy from `src` to `dst` as the agents do it (take, send | receive, put in place); with
    `truncate`, the stream is cut after that many bytes, as a sender killed half-way would leave it."""
    from shoal.data.moves import newest_common

    src.take_copy(i, name)
    parent = newest_common(src.copies(i), dst.copies(i)) if src.incremental() else ""
    parent = "" if parent == name else parent
    dst.receiving(i, name)
    send = subprocess.run(src.send_argv(i, name, parent), capture_output=True, check=True).stdout
    stream = send[:truncate] if truncate is not None else send
    got = subprocess.run(dst.receive_argv(i, name), input=stream, capture_output=True)
    if got.returncode != 0:
        return False
    dst.received(i, name)
    return True


def test_a_copy_moves_between_pools_and_only_the_promoted_one_is_writable(pools):
    from shoal.data.moves import copy_name

    a, b = pools
    d = _rec(_id(), "mv")
    _make(a, d)
    (a.path(d.id) / "blob").write_bytes(os.urandom(1 << 20))
    first = copy_name(0, 1000.0)
    assert _ship(a, b, d.id, first)
    (a.path(d.id) / "later").write_text("written while the first copy went")  # phase 1 runs with writes
    second = copy_name(0, 1001.0)
    assert _ship(a, b, d.id, second)  # the increment (btrfs: sent with the first as parent)
    assert b.copies(d.id) == [first, second] and not b.path(d.id).exists()
    ondisk.write(b.records, replace(d, epoch=0), role="replica")
    assert d.id in b.discover().replicas and b.discover().roles[d.id] == "replica"

    a.apply(Step("demote", d.id, record=d))  # the fence: the old copy read-only, put away, kept
    b.apply(Step("promote", d.id, second, record=replace(d, epoch=1)))
    assert not a.path(d.id).exists() and any(n.startswith("old-") for n in a.discover().copies[d.id])
    old = next(a.copies_dir(d.id).glob("old-*")) / "c"
    assert (old / "later").read_text() == "written while the first copy went"
    assert (b.path(d.id) / "blob").read_bytes() == (old / "blob").read_bytes()
    assert (b.path(d.id) / "later").read_text() == "written while the first copy went"
    disk_a, disk_b = a.discover(), b.discover()
    assert d.id in disk_a.replicas and d.id not in disk_a.datasets
    assert disk_b.datasets[d.id].record.epoch == 1 and d.id not in disk_b.replicas
    if a.kind == "btrfs":
        with pytest.raises(OSError):
            (old / "new").write_text("the demoted copy is read-only")

    (b.path(d.id) / "back").write_text("the new owner writes")
    third = copy_name(1, 1002.0)
    assert _ship(b, a, d.id, third)  # and back by increment, onto the old owner's copies
    assert (a.copy_path(d.id, third) / "back").read_text() == "the new owner writes"


def test_a_stream_cut_short_leaves_no_copy(pools):
    from shoal.data.moves import copy_name

    a, b = pools
    d = _rec(_id(), "cut")
    _make(a, d)
    (a.path(d.id) / "blob").write_bytes(os.urandom(4 << 20))
    name = copy_name(0, 2000.0)
    ok = _ship(a, b, d.id, name, truncate=1 << 20)
    if ok:  # tar reads a cut archive as a shorter one: the transport's own framing refuses it (agent)
        assert b.kind == "directory"
    else:
        assert b.copies(d.id) == []
    fresh = b.receiving(d.id, name)  # a new receive starts from nothing an earlier one left
    assert list(fresh.parent.iterdir()) == [fresh] and list(fresh.iterdir()) == []


def test_a_promotion_cut_short_is_finished_never_made_empty(pools):
    from shoal.data.moves import copy_name

    a, b = pools
    d = _rec(_id(), "half")
    _make(a, d)
    (a.path(d.id) / "f").write_text("data")
    name = copy_name(0, 3000.0)
    assert _ship(a, b, d.id, name)
    ondisk.write(b.records, replace(d, epoch=1), role="promoting", source=name)  # as if killed here
    disk = b.discover()
    assert disk.roles[d.id] == "promoting" and d.id not in disk.pending
    p = plan("", Cluster({d.id: replace(d, node="", epoch=1)}), disk, {})
    assert [s.op for s in p.steps] == ["promote"]
    b.apply(p.steps[0])
    assert (b.path(d.id) / "f").read_text() == "data" and b.discover().datasets[d.id].record.epoch == 1
