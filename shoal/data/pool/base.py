"""The pool interface, and what every pool does the same way: datasets at `<root>/datasets/<id>`, each
step made under a `.new-<id>` name and renamed into place (rename is atomic), so `discover` sees either
the finished dataset or a leftover it can discard."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from shoal.data.model import check_room
from shoal.data.plan import OnDisk, PoolState, Step

PARTIAL = ".new-"


class Pool(ABC):
    kind = "abstract"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.datasets = self.root / "datasets"
        self.datasets.mkdir(parents=True, exist_ok=True)

    def path(self, dataset_id: str) -> Path:
        return self.datasets / dataset_id

    def _partial(self, dataset_id: str) -> Path:
        return self.datasets / f"{PARTIAL}{dataset_id}"

    def discover(self) -> PoolState:
        ids, partial = [], []
        for p in self.datasets.iterdir():
            (partial if p.name.startswith(PARTIAL) else ids).append(p.name)
        return PoolState(self._describe(ids), tuple(sorted(partial)))

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def check_room(self, size: int, name: str) -> None:
        check_room(self.free_bytes(), size, name, f"the {self.kind} pool at {self.root}")

    def apply(self, step: Step) -> None:
        if step.op == "discard":
            self._remove(self.datasets / step.id)
        elif step.op == "create":
            tmp = self._partial(step.id)
            self._make(tmp)
            if step.size:
                self._limit(tmp, step.size)
            tmp.rename(self.path(step.id))
        elif step.op in ("snapshot", "clone"):
            tmp = self._partial(step.id)
            self._copy(self.path(step.source), tmp, readonly=step.op == "snapshot")
            if step.op == "clone" and step.size:
                self._limit(tmp, step.size)
            tmp.rename(self.path(step.id))
        elif step.op == "limit":
            self._limit(self.path(step.id), step.size)
        elif step.op == "delete":
            tmp = self._partial(f"del-{step.id}")
            self.path(step.id).rename(tmp)
            self._remove(tmp)
        else:
            raise ValueError(f"unknown step {step}")

    # --- what differs per pool -------------------------------------------------------------------

    @abstractmethod
    def _describe(self, ids: list[str]) -> dict[str, OnDisk]: ...

    @abstractmethod
    def _make(self, path: Path) -> None: ...

    @abstractmethod
    def _copy(self, source: Path, path: Path, readonly: bool) -> None: ...

    @abstractmethod
    def _limit(self, path: Path, size: int) -> None: ...

    @abstractmethod
    def _remove(self, path: Path) -> None: ...

    def device(self) -> str | None:
        """The block device under the pool (for the profiles' I/O limits), if there is one."""
        best, dev = "", None
        root = str(self.root.resolve())
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                mnt = parts[4]
                source = parts[parts.index("-") + 2]
                if (root == mnt or root.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, dev = mnt, source
        return dev if dev and dev.startswith("/dev/") else None


def rmtree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=False)
