"""The pool interface, and what every pool does the same way.

A pool is self-describing: beside `<root>/datasets/<id>` (what a container mounts, as /flocker/<id>) each
dataset and snapshot has its own record, `<root>/records/<id>.json` (see shoal.data.pool.ondisk), outside
anything a container can reach. Every step is ordered so that a crash at any point leaves a state
`discover` reads back and the plan finishes:

- make (create, snapshot, clone): the record is written first (atomically: a temporary file, fsync,
  rename), then the dataset is made under `.new-<id>` and renamed into place. A dataset never exists
  without its record; a record without a dataset is a make still to do.
- delete: the record is marked `deleting` first (the node's own copy of the checked request), then the
  dataset is renamed to `.new-del-<id>` (no container can mount it from then on), removed, and the record
  goes last.

Only dataset ids (canonical uuids) become paths; anything else on the pool is reported and left alone.
"""

from __future__ import annotations

import os
import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path

from shoal.data.model import Dataset, Refused, check_room, is_dataset_id
from shoal.data.plan import MAKES, OnDisk, PoolState, Step
from shoal.data.pool import ondisk
from shoal.errors import BadRequest, NotFound

PARTIAL = ".new-"
DELETING = ".new-del-"


class Pool(ABC):
    kind = "abstract"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.datasets = self.root / "datasets"
        self.records = self.root / "records"
        self.datasets.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)

    def path(self, dataset_id: str) -> Path:
        """Where a dataset lives; anything but a dataset id is refused (it never becomes a path)."""
        if not is_dataset_id(dataset_id):
            raise BadRequest(f"{dataset_id[:60]!r} is not a dataset id; refused")
        return self.datasets / dataset_id

    def _partial(self, dataset_id: str) -> Path:
        return self.datasets / f"{PARTIAL}{self.path(dataset_id).name}"

    def _deleting(self, dataset_id: str) -> Path:
        return self.datasets / f"{DELETING}{self.path(dataset_id).name}"

    # --- discover ---------------------------------------------------------------------------------

    def discover(self) -> PoolState:
        records, strays = ondisk.read_all(self.records)
        ids, partial = [], []
        for p in sorted(self.datasets.iterdir()):
            owner = p.name.removeprefix(DELETING) if p.name.startswith(DELETING) else p.name
            owner = owner.removeprefix(PARTIAL)
            if not is_dataset_id(owner):
                strays.append(Refused(f"datasets/{p.name}", "not a dataset id"))
            elif p.name.startswith(PARTIAL):
                partial.append(p.name)
            else:
                ids.append(p.name)
        described = self._describe(ids, {i: r.dataset for i, r in records.items()})
        datasets, pending, deleting = {}, {}, {}
        for i, rec in records.items():
            if rec.deleting:
                deleting[i] = rec.dataset
            elif i in described:
                datasets[i] = OnDisk(i, described[i].readonly, described[i].limit, rec.dataset)
            else:
                pending[i] = rec.dataset
        for i in described.keys() - records.keys():
            datasets[i] = described[i]  # a dataset without a record (a pool from before records)
        return PoolState(datasets, tuple(partial), pending, deleting, tuple(strays))

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def check_room(self, size: int, name: str) -> None:
        check_room(self.free_bytes(), size, name, f"the {self.kind} pool at {self.root}")

    # --- apply ------------------------------------------------------------------------------------

    def apply(self, step: Step) -> None:
        if step.op == "discard":
            self._discard(step.id)
        elif step.op in MAKES:
            self._make_step(step)
        elif step.op == "limit":
            self._limit(self.path(step.id), step.size)
            if step.record is not None:
                ondisk.write(self.records, step.record)
        elif step.op == "adopt":
            if step.record is None or not self.path(step.id).exists():
                raise NotFound(f"dataset {step.id} is not on the pool to adopt")
            ondisk.write(self.records, step.record)
        elif step.op == "delete":
            self._delete(step)
        else:
            raise ValueError(f"{step} is not a pool step")

    def _discard(self, name: str) -> None:
        owner = name.removeprefix(PARTIAL).removeprefix("del-")
        if not name.startswith(PARTIAL) or not is_dataset_id(owner):
            raise BadRequest(f"{name[:60]!r} is not a leftover of a step; refused")
        self._remove(self.datasets / name)

    def _make_step(self, step: Step) -> None:
        if step.record is None or step.record.id != step.id:
            raise BadRequest(f"{step} needs the record it writes")
        target, tmp = self.path(step.id), self._partial(step.id)
        source = self.path(step.source) if step.source else None
        if source is not None and not source.is_dir():
            what = "snapshot" if step.op == "clone" else "dataset"
            raise NotFound(f"{step.op} {step.id}: its parent {what} {step.source} is not on this node's pool")
        ondisk.write(self.records, step.record)
        if tmp.exists():
            self._remove(tmp)
        if source is None:
            self._make(tmp)
        else:
            self._copy(source, tmp, readonly=step.op == "snapshot")
        if step.op != "snapshot" and step.size:
            self._limit(tmp, step.size)
        tmp.rename(target)

    def _delete(self, step: Step) -> None:
        path = self.path(step.id)
        have = ondisk.read(self.records, step.id)
        record = have.dataset if have is not None else step.record
        if record is not None and not (have is not None and have.deleting):
            ondisk.write(self.records, record, deleting=time.time())
        hidden = self._deleting(step.id)
        if path.exists() or path.is_symlink():
            path.rename(hidden)
        for leftover in (hidden, self._partial(step.id)):
            if leftover.exists() or leftover.is_symlink():
                self._remove(leftover)
        ondisk.remove(self.records, step.id)

    # --- what differs per pool -------------------------------------------------------------------

    @abstractmethod
    def _describe(self, ids: list[str], records: dict[str, Dataset]) -> dict[str, OnDisk]: ...

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
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=False)
