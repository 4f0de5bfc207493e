"""Pools: where a node keeps its datasets. `btrfs` (subvolumes, copy-on-write snapshots, qgroup limits)
and `directory` (plain directories, snapshots by copy) behind one interface (`base.Pool`)."""

from __future__ import annotations

from pathlib import Path

from shoal.data.pool.base import Pool


def open_pool(root: Path, kind: str = "auto") -> Pool:
    from shoal.data.pool.btrfs import BtrfsPool, is_btrfs
    from shoal.data.pool.directory import DirectoryPool

    if kind == "btrfs" or (kind == "auto" and is_btrfs(root)):
        return BtrfsPool(root)
    return DirectoryPool(root)
