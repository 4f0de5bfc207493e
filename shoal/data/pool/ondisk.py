"""The pool's own record of each dataset and snapshot: `<pool>/records/<id>.json`, beside (never inside)
the directory a container mounts, so a registry that lost everything is rebuilt from the nodes.

    {"format": "shoal-dataset/1", "id": "<uuid>", "name": "demoVol", "kind": "dataset",
     "profile": "gold", "parent": "", "created": 1718000000.0, "size": 0, "volume": "demoVol@gold"}

plus `"epoch"` (the fencing epoch the node holds it at), `"role"` ("owner" — omitted —, "replica": a
read-only copy whose data is under `<pool>/copies/<id>/`, or "promoting": becoming the writable copy from
the snapshot named `"from"`), and `"deleting": <time>` once a checked deletion has started. The node is
not in it (the pool is on the node that reads it). Written atomically: a temporary file in the same
directory, fsync, rename, fsync of the directory; a leftover temporary file is an unfinished write and is
removed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from shoal.data.model import Dataset, Refused, is_dataset_id, parse_record

FORMAT = "shoal-dataset/1"
FIELDS = ("id", "name", "kind", "profile", "parent", "created", "size", "volume", "epoch")
ROLES = ("owner", "replica", "promoting")
TMP = ".tmp-"
SUFFIX = ".json"
MAX_BYTES = 64 << 10  # a record is a few hundred bytes; anything far larger is not one
_CHECKED_AS = "pool"  # records are checked with the registry's rules; the node is filled in by the reader


@dataclass(frozen=True, slots=True)
class PoolRecord:
    dataset: Dataset  # node "" (it is this pool's node)
    deleting: float = 0.0
    role: str = "owner"
    source: str = ""  # promoting: the copy it is made from


def to_doc(d: Dataset, deleting: float = 0.0, role: str = "owner", source: str = "") -> dict[str, object]:
    doc: dict[str, object] = {"format": FORMAT, **{k: getattr(d, k) for k in FIELDS}}
    if not d.epoch:
        del doc["epoch"]  # a dataset that never moved reads as it did before moves
    if deleting:
        doc["deleting"] = deleting
    if role != "owner":
        doc["role"] = role
    if source:
        doc["from"] = source
    return doc


def from_doc(dataset_id: str, doc: object) -> PoolRecord | Refused:
    """A record file's content to a PoolRecord, or why it is not one (pure)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return Refused(f"records/{dataset_id}{SUFFIX}", f"not a {FORMAT} record")
    got = parse_record(dataset_id, {**{k: doc[k] for k in FIELDS if k in doc}, "node": _CHECKED_AS})
    if isinstance(got, Refused):
        return Refused(f"records/{dataset_id}{SUFFIX}", got.reason)
    deleting = doc.get("deleting", 0.0)
    if not isinstance(deleting, int | float) or isinstance(deleting, bool) or deleting < 0:
        return Refused(f"records/{dataset_id}{SUFFIX}", "deleting is not a time")
    role, source = doc.get("role", "owner"), doc.get("from", "")
    if role not in ROLES or not isinstance(source, str) or len(source) > 64 or "/" in source:
        return Refused(f"records/{dataset_id}{SUFFIX}", "role or from is not what a pool record holds")
    return PoolRecord(replace(got, node="", recovered=0.0, conflict=""), float(deleting), role, source)


def path(records: Path, dataset_id: str) -> Path:
    if not is_dataset_id(dataset_id):
        raise ValueError(f"{dataset_id[:60]!r} is not a dataset id")
    return records / f"{dataset_id}{SUFFIX}"


def read(records: Path, dataset_id: str) -> PoolRecord | None:
    got = _load(path(records, dataset_id), dataset_id)
    return got if isinstance(got, PoolRecord) else None


def _load(p: Path, dataset_id: str) -> PoolRecord | Refused | None:
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        return Refused(f"records/{p.name}", f"unreadable: {e.strerror}")
    if len(raw) > MAX_BYTES:
        return Refused(f"records/{p.name}", f"over {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:
        return Refused(f"records/{p.name}", "not JSON")
    return from_doc(dataset_id, doc)


def read_all(records: Path) -> tuple[dict[str, PoolRecord], list[Refused]]:
    """Every record on the pool, and what in the records directory is not one (reported, left alone)."""
    out: dict[str, PoolRecord] = {}
    strays: list[Refused] = []
    for p in sorted(records.iterdir()):
        if p.name.startswith(TMP):
            p.unlink(missing_ok=True)  # a write cut short: the record it was replacing is still there
            continue
        dataset_id = p.name.removesuffix(SUFFIX)
        if not p.name.endswith(SUFFIX) or not is_dataset_id(dataset_id):
            strays.append(Refused(f"records/{p.name[:60]}", "not a dataset record's name"))
            continue
        got = _load(p, dataset_id)
        if isinstance(got, PoolRecord):
            out[dataset_id] = got
        elif got is not None:
            strays.append(got)
    return out, strays


def write(records: Path, d: Dataset, deleting: float = 0.0, role: str = "owner", source: str = "") -> None:
    final = path(records, d.id)
    tmp = records / f"{TMP}{final.name}"
    data = json.dumps(to_doc(d, deleting, role, source), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _sync_dir(records)


def remove(records: Path, dataset_id: str) -> None:
    path(records, dataset_id).unlink(missing_ok=True)
    _sync_dir(records)


def _sync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
