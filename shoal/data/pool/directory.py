"""The fallback pool: plain directories. Snapshots and clones are full copies (honestly slower: the
benchmark shows by how much) and size limits are recorded, not enforced (no quota on a plain directory)."""

from __future__ import annotations

import shutil
from pathlib import Path

from shoal.data.plan import OnDisk
from shoal.data.pool.base import Pool, rmtree

_READONLY = ".shoal-readonly"
_LIMIT = ".shoal-limit"


class DirectoryPool(Pool):
    kind = "directory"

    def _describe(self, ids: list[str]) -> dict[str, OnDisk]:
        out = {}
        for i in ids:
            p = self.path(i)
            limit = (p / _LIMIT).read_text() if (p / _LIMIT).exists() else "0"
            out[i] = OnDisk(i, (p / _READONLY).exists(), int(limit or 0))
        return out

    def _make(self, path: Path) -> None:
        path.mkdir()

    def _copy(self, source: Path, path: Path, readonly: bool) -> None:
        shutil.copytree(source, path, symlinks=True)
        (path / _READONLY).unlink(missing_ok=True)
        if readonly:
            (path / _READONLY).write_text("")

    def _limit(self, path: Path, size: int) -> None:
        (path / _LIMIT).write_text(str(size))

    def _remove(self, path: Path) -> None:
        rmtree(path)
