"""The btrfs pool: one subvolume a dataset, read-only snapshots, writable snapshots as clones (both
copy-on-write, milliseconds), size limits with qgroups. I/O through btrfs-progs, the edge of this module."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from shoal.data.model import Dataset
from shoal.data.plan import OnDisk
from shoal.data.pool.base import Pool, rmtree
from shoal.errors import ShoalError

BTRFS_MAGIC = 0x9123683E


def is_btrfs(path: Path) -> bool:
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%t", str(path)], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return int(out.stdout.strip() or "0", 16) == BTRFS_MAGIC


def _btrfs(*args: str) -> str:
    p = subprocess.run(["btrfs", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise ShoalError(f"btrfs {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


class BtrfsPool(Pool):
    kind = "btrfs"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        _btrfs("quota", "enable", str(self.root))

    def _describe(self, ids: list[str], records: dict[str, Dataset]) -> dict[str, OnDisk]:
        if not ids:
            return {}
        readonly = set()
        for line in _btrfs("subvolume", "list", "-r", str(self.root)).splitlines():
            readonly.add(line.rsplit("/", 1)[-1])
        subvol = {}
        for line in _btrfs("subvolume", "list", str(self.root)).splitlines():
            m = re.match(r"ID (\d+) .* path (.+)$", line)
            if m:
                subvol[m.group(1)] = m.group(2).rsplit("/", 1)[-1]
        limits: dict[str, int] = {}
        for line in _btrfs("qgroup", "show", "-re", "--raw", str(self.root)).splitlines():
            parts = line.split()
            if parts and parts[0].startswith("0/") and parts[0][2:] in subvol:
                limit = parts[3] if len(parts) > 3 else "none"
                limits[subvol[parts[0][2:]]] = 0 if limit == "none" else int(limit)
        return {i: OnDisk(i, i in readonly, limits.get(i, 0)) for i in ids}

    def _make(self, path: Path) -> None:
        _btrfs("subvolume", "create", str(path))

    def _copy(self, source: Path, path: Path, readonly: bool) -> None:
        _btrfs("subvolume", "snapshot", *(["-r"] if readonly else []), str(source), str(path))

    def _limit(self, path: Path, size: int) -> None:
        _btrfs("qgroup", "limit", str(size) if size else "none", str(path))

    def _remove(self, path: Path) -> None:
        if _is_subvolume(path):
            _btrfs("subvolume", "delete", str(path))
        elif path.exists():
            rmtree(path)


def _is_subvolume(path: Path) -> bool:
    try:
        return os.stat(path).st_ino == 256
    except OSError:
        return False
