"""One contract for both pools: btrfs on a real loop-mounted filesystem, and the plain directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shoal.data.model import Dataset, PoolFull
from shoal.data.plan import PoolState, Step, plan
from shoal.data.pool import open_pool


@pytest.fixture(params=["btrfs", "directory"])
def pool(request, tmp_path):
    if request.param == "directory":
        yield open_pool(tmp_path / "dir", "directory")
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a btrfs image needs root")
    img, mnt = tmp_path / "pool.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "512M", str(img)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", str(img)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield open_pool(mnt, "btrfs")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _write(p: Path, text: str) -> None:
    (p / "f.txt").write_text(text)


def test_create_snapshot_clone_delete(pool):
    pool.apply(Step("create", "a"))
    _write(pool.path("a"), "v1")
    pool.apply(Step("snapshot", "s", "a"))
    _write(pool.path("a"), "v2")  # later writes stay out of the snapshot
    pool.apply(Step("clone", "c", "s"))
    assert (pool.path("s") / "f.txt").read_text() == "v1"
    assert (pool.path("c") / "f.txt").read_text() == "v1"
    _write(pool.path("c"), "clone's own")
    assert (pool.path("a") / "f.txt").read_text() == "v2"
    disk = pool.discover()
    assert set(disk.datasets) == {"a", "s", "c"} and disk.partial == ()
    assert disk.datasets["s"].readonly and not disk.datasets["c"].readonly and not disk.datasets["a"].readonly
    for i in ("c", "s", "a"):
        pool.apply(Step("delete", i))
    assert pool.discover() == PoolState({}, ())


def test_size_limit_is_recorded(pool):
    pool.apply(Step("create", "lim", size=64 << 20))
    assert pool.discover().datasets["lim"].limit == 64 << 20
    pool.apply(Step("limit", "lim", size=128 << 20))
    assert pool.discover().datasets["lim"].limit == 128 << 20


def test_a_leftover_of_an_interrupted_step_is_found_and_discarded(pool):
    pool.apply(Step("create", "done"))
    (pool.datasets / ".new-halfway").mkdir()  # as if the agent died between make and rename
    disk = pool.discover()
    assert disk.partial == (".new-halfway",) and set(disk.datasets) == {"done"}
    steps = plan("n1", [Dataset("done", "x", "gold", "n1"), Dataset("todo", "y", "gold", "n1")], disk)
    assert [str(s) for s in steps] == ["discard .new-halfway", "create todo"]
    for s in steps:
        pool.apply(s)
    assert set(pool.discover().datasets) == {"done", "todo"} and pool.discover().partial == ()


def test_room_is_checked_before_making(pool):
    with pytest.raises(PoolFull, match="is full"):
        pool.check_room(1 << 50, "huge")
    pool.check_room(1 << 20, "small")
