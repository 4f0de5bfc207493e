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

    def _seal(self, path: Path) -> None:
        if _is_subvolume(path):
            _btrfs("property", "set", "-ts", str(path), "ro", "true")

    def send_argv(self, dataset_id: str, name: str, parent: str) -> list[str]:
        base = ["-p", str(self.copy_path(dataset_id, parent))] if parent else []
        return ["btrfs", "send", "-q", *base, str(self.copy_path(dataset_id, name))]

    def receive_argv(self, dataset_id: str, name: str) -> list[str]:
        # btrfs receive checks the stream itself (its checksummed commands, the parent by uuid)
        return ["btrfs", "receive", "-q", "-e", str(self._incoming(dataset_id) / name)]

    def incremental(self) -> bool:
        return True

    def changed_since(self, dataset_id: str, name: str) -> bool:
        """btrfs keeps a generation per subvolume: the writable copy's, once committed, against the one
        the snapshot was taken at (a snapshot does not raise its source's generation)."""
        try:
            _btrfs("filesystem", "sync", str(self.root))
            live = _generation(_btrfs("subvolume", "show", str(self.path(dataset_id))), "Generation")
            taken = _generation(
                _btrfs("subvolume", "show", str(self.copy_path(dataset_id, name))), "Gen at creation"
            )
        except ShoalError:
            return True
        return live is None or taken is None or live > taken

    def _remove(self, path: Path) -> None:
        if _is_subvolume(path):
            _btrfs("subvolume", "delete", str(path))
        elif path.exists():
            rmtree(path)


def _generation(show: str, field: str) -> int | None:
    for line in show.splitlines():
        key, _, value = line.strip().partition(":")
        if key == field and value.strip().isdigit():
            return int(value.strip())
    return None


def _is_subvolume(path: Path) -> bool:
    try:
        return os.stat(path).st_ino == 256
    except OSError:
        return False
