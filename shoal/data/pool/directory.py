"""The fallback pool: plain directories. Snapshots and clones are full copies (honestly slower: the
benchmark shows by how much); read-only and size limits are recorded in the pool's records, not enforced
(a plain directory has neither)."""

from __future__ import annotations

import shutil
from pathlib import Path

from shoal.data.model import Dataset
from shoal.data.plan import OnDisk
from shoal.data.pool.base import Pool, rmtree


class DirectoryPool(Pool):
    kind = "directory"

    def _describe(self, ids: list[str], records: dict[str, Dataset]) -> dict[str, OnDisk]:
        out = {}
        for i in ids:
            r = records.get(i)
            out[i] = OnDisk(i, r is not None and r.kind == "snapshot", r.size if r is not None else 0)
        return out

    def _make(self, path: Path) -> None:
        path.mkdir()

    def _copy(self, source: Path, path: Path, readonly: bool) -> None:
        shutil.copytree(source, path, symlinks=True)

    def _limit(self, path: Path, size: int) -> None:
        """Recorded in the dataset's record (the step writes it); a directory has no quota to set."""

    def _remove(self, path: Path) -> None:
        rmtree(path)
