"""What one node offers for a key: the strings an expression is matched against, read from a NodeState.

This is the meaning the filters' `check` uses; ClusterIndex indexes exactly these values (and nothing
else), so its vectorised masks and the per-node checks cannot drift apart.
"""

from __future__ import annotations

import json
import math

from shoal.scheduler.model import ContainerRef, NodeState

# host-mode containers publish no ports in the engine's list; the manager writes what they expose here
HOST_PORTS_LABEL = "shoal.host-ports"
SLOTS_LABELS = ("containerslots", "com.docker.swarm.containerslots")  # classic Swarm's, and namespaced

_BOOL = {True: ("true", "True"), False: ("false", "False")}
_MISSING = object()


def candidates(node: NodeState, key: str) -> tuple[str, ...]:
    """Every string a node offers a constraint on `key`: its name/id for `node`; else its label and its fact
    (both, when both exist: `operatingsystem` is Docker's "Debian GNU/Linux 12" and Facter's "Debian")."""
    if key == "node":
        return (node.name, node.id) if node.id else (node.name,)
    out: list[str] = []
    if key in node.labels:
        out.append(str(node.labels[key]))
    if key in node.facts:
        v = node.facts[key]
        out.extend(_BOOL[v] if isinstance(v, bool) else (_fmt(v),))
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10:
            out.append(f"0{v}")  # also as two digits: the seed's /[0-2][0-5]/ reads a 2-digit percentage
    return tuple(out)


def constraint_keys(node: NodeState) -> dict[str, tuple[str, ...]]:
    """Every key a constraint can name on this node, with its candidates."""
    keys = {"node": candidates(node, "node")}
    for key in {*node.facts, *node.labels}:
        keys[key] = candidates(node, key)
    return keys


def changed_facts(old: NodeState, new: NodeState) -> set[str]:
    """The facts whose values differ between two states of one node (pure): 1 and True and 1.0 are
    equal to Python but not to a constraint, so a change of type counts."""
    a, b = old.facts, new.facts
    return {
        k
        for k in a.keys() | b.keys()
        if (x := a.get(k, _MISSING)) is not (y := b.get(k, _MISSING)) and (type(x) is not type(y) or x != y)
    }


def number(node: NodeState, key: str) -> float | None:
    """The node's value for `key` as a number, for < <= > >= (None: missing or not a number; `node` is
    the node's name, never a number)."""
    if key == "node":
        return None
    v = node.facts.get(key, node.labels.get(key))
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def affinity_strings(node: NodeState, key: str) -> tuple[str, ...]:
    """What an affinity on `key` matches: `container` every container's name and id, `image` the images
    present, any other key the values of that label on the node's containers."""
    if key == "container":
        return tuple(s for c in node.containers for s in (c.name, c.id))
    if key == "image":
        return tuple(sorted(node.images))
    return tuple(c.labels[key] for c in node.containers if key in c.labels)


def affinity_keys(node: NodeState) -> dict[str, tuple[str, ...]]:
    """Every key an affinity can name on this node, with its strings (keys with none are left out)."""
    keys = {"container": affinity_strings(node, "container"), "image": affinity_strings(node, "image")}
    for key in {k for c in node.containers for k in c.labels} - {"container", "image"}:
        keys[key] = affinity_strings(node, key)
    return {k: v for k, v in keys.items() if v}


def container_ports(c: ContainerRef) -> tuple[tuple[int, str], ...]:
    """The host ports a container takes: those it publishes, and those a host-mode container exposes
    (written in HOST_PORTS_LABEL at create; the engine's list shows none for it)."""
    raw = c.labels.get(HOST_PORTS_LABEL)
    if not raw:
        return c.ports
    return (*c.ports, *parse_host_ports(raw))


def parse_host_ports(raw: str) -> tuple[tuple[int, str], ...]:
    """`["80/tcp", "53/udp"]` as (port, proto) pairs; anything unreadable counts as none."""
    try:
        items = json.loads(raw)
    except ValueError:
        return ()
    out = []
    for item in items if isinstance(items, list) else ():
        port, _, proto = str(item).partition("/")
        if port.isdigit():
            out.append((int(port), proto or "tcp"))
    return tuple(out)


def published_ports(node: NodeState) -> set[tuple[int, str]]:
    return {p for c in node.containers for p in container_ports(c)}


def container_slots(node: NodeState) -> int | None:
    """The node's container slots label as a number (None: no label, or not a whole number)."""
    for key in SLOTS_LABELS:
        raw = node.labels.get(key)
        if raw is not None:
            try:
                return int(str(raw).strip())
            except ValueError:
                return None
    return None


def holds_container(node: NodeState, ref: str) -> bool:
    """Does the node hold a container with this name or id (a dependency's meaning)?"""
    return any(ref in (c.name, c.id) for c in node.containers)


def _fmt(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else str(v)
    return str(v)
