"""Placements held across managers: what one manager has placed on a node and not yet seen in that
node's container list, so another manager sharing the registry counts it too.

Several managers each keep their own cache of the engines; two creates from two managers racing for
the last host port or the last GB of a node would each see the node free. So before it asks the engine,
a manager adds its placement to the node's one document, `shoal/reservations/<node>`, with a
compare-and-set on the document's ModifyIndex (one Consul txn). Only one of two racers wins; the other
reads the document again, counts the winner's hold, and places again (the port or memory filter then
says why the node no longer fits). Creates on one node serialize; creates on different nodes never
touch the same key.

A hold counts until the node's engine lists the container (its `com.docker.swarm.id`), or until
`HOLD_FOR` seconds after it was taken (a manager that died mid-create), whichever comes first. A
manager's own holds are in its cache already (`Cluster._pending`) and are not counted twice.

Plain data in, plain data out; the cluster cache does the I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

SWARM_ID = "com.docker.swarm.id"  # the label every create through a manager carries: what a hold is keyed by
HOLD_FOR = 30.0  # seconds: far beyond an engine's create, and the most a dead manager's hold blocks


@dataclass(frozen=True, slots=True)
class Hold:
    swarm_id: str
    manager: str
    at: float  # wall-clock seconds: the managers compare each other's (NTP on real hosts)
    cpus: float = 0.0
    memory: int = 0
    ports: tuple[tuple[int, str], ...] = ()
    name: str = ""
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


def _hold(swarm_id: str, v: Any) -> Hold | None:
    """One entry as another manager wrote it; anything malformed is no hold (it cannot block a node)."""
    if not isinstance(v, dict):
        return None
    try:
        ports = tuple((int(p), str(proto)) for p, proto in v.get("ports") or ())
        labels = v.get("labels") or {}
        if not isinstance(labels, dict):
            return None
        return Hold(
            swarm_id,
            str(v.get("manager", "")),
            float(v["at"]),
            float(v.get("cpus") or 0.0),
            int(v.get("memory") or 0),
            ports,
            str(v.get("name") or ""),
            str(v.get("image") or ""),
            {str(k): str(x) for k, x in labels.items()},
        )
    except (KeyError, TypeError, ValueError):
        return None


def parse(doc: Any) -> dict[str, Hold]:
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, dict):
        return {}
    return {k: h for k, v in items.items() if (h := _hold(str(k), v)) is not None}


def dump(holds: Mapping[str, Hold]) -> dict[str, Any]:
    return {
        "items": {
            h.swarm_id: {
                "manager": h.manager,
                "at": h.at,
                "cpus": h.cpus,
                "memory": h.memory,
                "ports": [list(p) for p in h.ports],
                "name": h.name,
                "image": h.image,
                "labels": dict(h.labels),
            }
            for h in holds.values()
        }
    }


def live(holds: Mapping[str, Hold], now: float, listed: Collection[str]) -> dict[str, Hold]:
    """The holds that still stand: not expired, and not yet in the engine's list."""
    return {
        k: h for k, h in holds.items() if now - h.at < HOLD_FOR and h.at <= now + HOLD_FOR and k not in listed
    }


def counted(holds: Mapping[str, Hold], now: float, me: str, listed: Collection[str]) -> list[Hold]:
    """What a manager named `me` adds to a node's state: the other managers' standing holds."""
    return [h for h in live(holds, now, listed).values() if h.manager != me]


def admit(holds: Mapping[str, Hold], hold: Hold, now: float, listed: Collection[str]) -> dict[str, Hold]:
    """The document with `hold` taken, and whatever no longer stands dropped."""
    return {**live(holds, now, listed), hold.swarm_id: hold}


def without(holds: Mapping[str, Hold], swarm_id: str) -> dict[str, Hold]:
    return {k: h for k, h in holds.items() if k != swarm_id}
