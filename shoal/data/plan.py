"""Convergence as a pure function (Flocker's "calculate the changes"): what this node's pool should hold
(the registry's records for it) against what is on disk, to the steps that close the gap, in an order
that is safe to cut short — each step is atomic on disk, so an agent killed between two steps finds the
rest still to do on restart, and a half-made subvolume (a leftover `.new-*`) is deleted first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shoal.data.model import Dataset


@dataclass(frozen=True, slots=True)
class OnDisk:
    id: str
    readonly: bool = False
    limit: int = 0  # bytes, 0 = none


@dataclass(frozen=True, slots=True)
class PoolState:
    datasets: Mapping[str, OnDisk]
    partial: tuple[str, ...] = ()  # leftovers of an interrupted step


@dataclass(frozen=True, slots=True)
class Step:
    op: str  # "discard" | "create" | "snapshot" | "clone" | "limit" | "delete"
    id: str
    source: str = ""
    size: int = 0

    def __str__(self) -> str:
        return f"{self.op} {self.id}" + (f" from {self.source}" if self.source else "")


def plan(node: str, records: Iterable[Dataset], disk: PoolState) -> list[Step]:
    want = {d.id: d for d in records if d.node == node}
    steps = [Step("discard", p) for p in disk.partial]
    have = set(disk.datasets)
    # makes, parents before children; a child whose parent is not on this node (or not yet made) waits
    pending = [d for d in want.values() if d.id not in have]
    made = set(have)
    progress = True
    while pending and progress:
        progress = False
        for d in list(pending):
            if d.parent and d.parent not in made:
                continue
            if not d.parent:
                steps.append(Step("create", d.id, size=d.size))
            elif d.kind == "snapshot":
                steps.append(Step("snapshot", d.id, d.parent))
            else:
                steps.append(Step("clone", d.id, d.parent, d.size))
            made.add(d.id)
            pending.remove(d)
            progress = True
    for d in want.values():
        if d.id in disk.datasets and d.kind == "dataset" and disk.datasets[d.id].limit != d.size:
            steps.append(Step("limit", d.id, size=d.size))
    # deletes, children before parents (a snapshot's clone does not depend on it on disk, but keep order)
    gone = [i for i in have if i not in want]
    parents = {d.parent for d in want.values()}
    steps += [Step("delete", i) for i in sorted(gone, key=lambda i: i in parents)]
    return steps
