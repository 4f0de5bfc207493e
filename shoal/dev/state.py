"""The dev cluster's state file: what was asked for and which processes were started.

Written before anything is made and after every step, so whatever `up` got to, `down` can undo.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shoal.dev.layout import ClusterSpec


@dataclass(frozen=True, slots=True)
class State:
    spec: ClusterSpec
    phase: str  # "creating" | "up"
    created: float = field(default_factory=time.time)
    pool: str = "btrfs"  # "btrfs" | "dir"
    # node name -> process name -> pid ("engine", then services); "" holds cluster-wide services;
    # "managerN" (with several managers) that manager's "etcd" and "manager"
    pids: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["spec"]["root"] = str(self.spec.root)
        if self.spec.managers == 1:  # a single-manager cluster's file stays as it was before `managers`
            del d["spec"]["managers"]
        return json.dumps(d, indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> State:
        d = json.loads(text)
        s = d["spec"]
        spec = ClusterSpec(
            name=s["name"],
            nodes=int(s["nodes"]),
            subnet=s["subnet"],
            root=Path(s["root"]),
            labels=tuple((n, tuple(lbls)) for n, lbls in s.get("labels", ())),
            agent_labels=tuple((n, tuple(lbls)) for n, lbls in s.get("agent_labels", ())),
            agent_interval=float(s.get("agent_interval", 5.0)),
            strategy=s.get("strategy", "spread"),
            secure=bool(s.get("secure", True)),
            managers=int(s.get("managers", 1)),  # a file written before several managers existed: one
        )
        return State(
            spec=spec,
            phase=d["phase"],
            created=d["created"],
            pool=d.get("pool", "btrfs"),
            pids={k: dict(v) for k, v in d.get("pids", {}).items()},
        )


def read(path: Path) -> State | None:
    try:
        return State.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: `down` falls back to finding leftovers by name


def write(path: Path, state: State) -> None:
    """Atomic: a crash mid-write leaves the previous state, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
