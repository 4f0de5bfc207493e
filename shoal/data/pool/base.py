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

Copies that move between nodes (shoal.data.moves) live under `<root>/copies/<id>/`, where no container
reaches them: read-only transfer snapshots named by `copy_name` (the same name on the sender and on every
receiver, so the newest common one is the base of the next incremental send), `old-...` (a writable copy
put away by the fence: read-only, kept), and `.incoming/` (a receive under way; discarded if cut short).
A send is `send_argv` (btrfs send, or a tar of the snapshot on the directory pool) written to a stream; a
receive reads one into `.incoming/` and renames it into place only once the stream ended cleanly.
- promote: the record is marked `promoting` first, then the newest copy is snapshotted writable under
  `.new-<id>` and renamed to `datasets/<id>`, then the record says owner at the new epoch.
- demote: the record says replica first (the node no longer serves it from that instant), then the copy
  is made read-only and renamed into `copies/<id>/old-...`: kept, never deleted.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path

from shoal.data.faults import crash_point
from shoal.data.model import Dataset, Refused, check_room, is_dataset_id
from shoal.data.moves import is_copy_name
from shoal.data.plan import MAKES, OnDisk, PoolState, Step
from shoal.data.pool import ondisk
from shoal.errors import BadRequest, NotFound

PARTIAL = ".new-"
DELETING = ".new-del-"
INCOMING = ".incoming"
OLD = "old-"


class Pool(ABC):
    kind = "abstract"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.datasets = self.root / "datasets"
        self.records = self.root / "records"
        self.copies_root = self.root / "copies"
        self.datasets.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)
        self.copies_root.mkdir(parents=True, exist_ok=True)

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
        datasets, pending, deleting, replicas, roles = {}, {}, {}, {}, {}
        for i, rec in records.items():
            if rec.deleting:
                deleting[i] = rec.dataset
            elif rec.role != "owner":
                replicas[i] = rec.dataset
                roles[i] = "demoting" if rec.role == "replica" and i in described else rec.role
                if rec.role == "promoting" and i in described:
                    datasets[i] = replace_record(described[i], rec.dataset)
            elif i in described:
                datasets[i] = OnDisk(i, described[i].readonly, described[i].limit, rec.dataset)
            else:
                pending[i] = rec.dataset
        for i in described.keys() - records.keys():
            datasets[i] = described[i]  # a dataset without a record (a pool from before records)
        copies = {}
        for d in sorted(self.copies_root.iterdir()):
            if is_dataset_id(d.name):
                names = tuple(sorted(c.name for c in d.iterdir() if _is_copy(c.name)))
                if names:
                    copies[d.name] = names
        return PoolState(datasets, tuple(partial), pending, deleting, tuple(strays), replicas, roles, copies)

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
        elif step.op == "epoch":
            assert step.record is not None
            ondisk.write(self.records, step.record)
        elif step.op == "promote":
            self._promote(step)
        elif step.op == "demote":
            self._demote(step)
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
        self._remove_copies(step.id)
        ondisk.remove(self.records, step.id)

    # --- copies between nodes (shoal.data.moves) ---------------------------------------------------

    def copies_dir(self, dataset_id: str) -> Path:
        return self.copies_root / self.path(dataset_id).name

    def copies(self, dataset_id: str) -> list[str]:
        """The transfer snapshots held of a dataset, oldest first."""
        d = self.copies_dir(dataset_id)
        return sorted(c.name for c in d.iterdir() if is_copy_name(c.name)) if d.is_dir() else []

    def copy_path(self, dataset_id: str, name: str) -> Path:
        """A copy's data: `copies/<id>/<name>/c` (a read-only subvolume on btrfs). Each copy sits in a
        directory of its own, because btrfs cannot move a read-only subvolume to another directory, and
        a copy is only put in place (by renaming that directory) once it is complete."""
        if not (is_copy_name(name) or name.startswith(OLD)) or "/" in name:
            raise BadRequest(f"{name[:60]!r} is not a copy's name; refused")
        return self.copies_dir(dataset_id) / name / "c"

    def take_copy(self, dataset_id: str, name: str) -> Path:
        """A read-only snapshot of the writable copy, to send (and to keep as the next send's base)."""
        source, target = self.path(dataset_id), self.copy_path(dataset_id, name)
        if not source.is_dir():
            raise NotFound(f"dataset {dataset_id} is not on this node's pool to copy")
        if not target.exists():
            staging = self.receiving(dataset_id, name)
            self._copy(source, staging / "c", readonly=True)
            staging.rename(target.parent)
        return target

    def _incoming(self, dataset_id: str) -> Path:
        d = self.copies_dir(dataset_id) / INCOMING
        d.mkdir(parents=True, exist_ok=True)
        return d

    def receiving(self, dataset_id: str, name: str) -> Path:
        """The directory a receive of copy `name` lands in (emptied first); `received` puts it in place."""
        self.copy_path(dataset_id, name)  # the name is checked before it becomes a path
        staging = self._incoming(dataset_id)
        for leftover in list(staging.iterdir()):
            self._remove_copy_dir(leftover)
        (staging / name).mkdir()
        return staging / name

    def received(self, dataset_id: str, name: str) -> None:
        staging, target = self._incoming(dataset_id) / name, self.copy_path(dataset_id, name)
        if not (staging / "c").exists():
            raise NotFound(f"the stream for copy {name} of {dataset_id} made nothing")
        self._seal(staging / "c")
        if target.exists():
            self._remove_copy_dir(staging)
        else:
            staging.rename(target.parent)

    def prune(self, dataset_id: str, names: list[str]) -> None:
        for n in names:
            p = self.copy_path(dataset_id, n).parent
            if p.exists():
                self._remove_copy_dir(p)

    def _remove_copy_dir(self, d: Path) -> None:
        if (d / "c").exists() or (d / "c").is_symlink():
            self._remove(d / "c")
        if d.is_dir():
            for leftover in list(d.iterdir()):
                self._remove(leftover)
            d.rmdir()
        elif d.exists():
            d.unlink()

    def _remove_copies(self, dataset_id: str) -> None:
        d = self.copies_dir(dataset_id)
        if not d.is_dir():
            return
        for c in sorted(d.iterdir(), reverse=True):
            if c.name == INCOMING:
                for x in list(c.iterdir()):
                    self._remove_copy_dir(x)
                c.rmdir()
            else:
                self._remove_copy_dir(c)
        d.rmdir()

    def _promote(self, step: Step) -> None:
        assert step.record is not None
        target = self.path(step.id)
        if not target.exists():
            source = self.copy_path(step.id, step.source)
            if not source.is_dir():
                raise NotFound(f"promote {step.id}: its copy {step.source} is not on this node's pool")
            ondisk.write(self.records, step.record, role="promoting", source=step.source)
            crash_point("promote-mid")
            tmp = self._partial(step.id)
            if tmp.exists():
                self._remove(tmp)
            self._copy(source, tmp, readonly=False)
            if step.size:
                self._limit(tmp, step.size)
            tmp.rename(target)
        ondisk.write(self.records, step.record)

    def _demote(self, step: Step) -> None:
        """The record says replica first; then the old copy goes into copies/ (moved while still writable:
        btrfs moves no read-only subvolume) and is made read-only there. Done again, it finishes."""
        assert step.record is not None
        have = ondisk.read(self.records, step.id)
        record = have.dataset if have is not None else step.record
        ondisk.write(self.records, record, role="replica")
        crash_point("demote-mid")
        live = self.path(step.id)
        if live.exists():
            put = self.copies_dir(step.id) / f"{OLD}e{record.epoch:06d}-{int(time.time() * 1000):013d}"
            put.mkdir(parents=True, exist_ok=True)
            live.rename(put / "c")
        if self.copies_dir(step.id).is_dir():
            for old in self.copies_dir(step.id).glob(f"{OLD}*"):
                self._seal(old / "c")

    def _seal(self, path: Path) -> None:  # noqa: B027 (a pool without read-only copies has nothing to do)
        """Makes a copy read-only where the pool can (btrfs: the subvolume's ro property)."""

    def send_argv(self, dataset_id: str, name: str, parent: str) -> list[str]:
        """The command whose stdout is the stream of copy `name` (incremental from `parent` if the pool
        can): every pool can send in full."""
        return ["tar", "-C", str(self.copy_path(dataset_id, name)), "-c", "."]

    def receive_argv(self, dataset_id: str, name: str) -> list[str]:
        """The command that reads a stream on stdin into `receiving()`'s directory (as its `c`)."""
        staging = self._incoming(dataset_id) / name / "c"
        staging.mkdir(parents=True, exist_ok=True)
        return ["tar", "-C", str(staging), "-x", "--no-same-owner" if os.geteuid() else "--same-owner"]

    def incremental(self) -> bool:
        return False

    def flush(self) -> None:
        """Writes what the pool holds in the page cache to its disk (syncfs of the pool's filesystem): a
        received copy is durable once flushed, and flushing as a stream lands keeps the writeback beside
        the stream instead of after it."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def changed_since(self, dataset_id: str, name: str) -> bool:
        """Whether the writable copy may hold writes that copy `name` does not (True when unsure)."""
        return True

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


def _is_copy(name: str) -> bool:
    return is_copy_name(name) or name.startswith(OLD)


def replace_record(disk: OnDisk, record: Dataset) -> OnDisk:
    return OnDisk(disk.id, disk.readonly, disk.limit, record)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _syncfs(fd: int) -> None:
    """syncfs(2) (Python has os.sync for every filesystem, not this one's)."""
    if _LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def rmtree(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=False)
