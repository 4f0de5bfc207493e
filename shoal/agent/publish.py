"""The agent's side of the registry: its claim on the node name, and the catalog entry that says the
node is alive. Keys are in shoal.keys; the client is shoal.registry.client (Consul's API only, so a site
with a real Consul can point agents at it).

In the catalog: node <node> (its address; NodeMeta engine, cpus, memory_mb), service `shoal-agent`,
check `shoal-agent` with a TTL of 3 intervals that every publish renews (the seed's "update service":
an agent that goes silent turns its node critical).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal import __version__, keys
from shoal.errors import Conflict, RegistryUnreachable
from shoal.registry.client import RegistryClient

SERVICE = keys.AGENT_SERVICE
CLAIM_TRIES = 3  # acquires of a lock that was being released, or held by our own ended session


@dataclass
class Claim:
    """Who runs the agent for a node: one agent per node name, enforced with a Consul lock."""

    node: str
    session_id: str
    identity: dict[str, Any]


def identity(node: str, address: str) -> dict[str, Any]:
    return {
        "node": node,
        "host": socket.gethostname(),
        "address": address,
        "pid": os.getpid(),
        "started_at": time.time(),
        "version": __version__,
    }


def session_ttl(interval: float) -> str:
    """The claim's session TTL: at least 3 intervals (renewed each publish, so one late publish on a
    loaded host does not lose the node), and never under Consul's minimum of 10 s."""
    return f"{max(10.0, 3 * interval):g}s"


def is_mine(held: dict[str, Any], me: dict[str, Any]) -> bool:
    """A claim this very process made (same node, host and pid): one whose PUT was applied but whose
    answer never came, which a retry must take back rather than refuse as another agent's."""
    return all(held.get(k) == me[k] for k in ("node", "host", "pid"))


async def claim(
    reg: RegistryClient, node: str, address: str, state_file: Path | None, ttl: str = "10s"
) -> Claim:
    """Takes the node's lock, reusing our own earlier session (after a crash, or after a PUT whose answer
    was lost) if it still holds it; refuses with a clear error when another live agent holds it."""
    me = identity(node, address)
    sid = _saved_session(state_file)
    if sid and await reg.session_info(sid) is not None:
        held = await reg.get(keys.node_claim(node))
        if held and held.session == sid:
            await reg.put(keys.node_claim(node), me, acquire=sid)
            return Claim(node, sid, me)
    for attempt in range(CLAIM_TRIES):
        sid = await reg.session_create(f"shoal-agent {node}", ttl)
        if await reg.put(keys.node_claim(node), me, acquire=sid):
            break
        held = await reg.get(keys.node_claim(node))
        await reg.session_destroy(sid)
        other = held.json() if held else None
        other = other if isinstance(other, dict) else {}
        if held is not None and held.session and not is_mine(other, me):
            who = f" by the agent on {other.get('host')} ({other.get('address')}, pid {other.get('pid')})"
            raise Conflict(
                f"node name {node!r} is already claimed{who if other else ''}; stop that agent first, "
                "or start this one with another --node"
            )
        if held is not None and held.session and await reg.session_info(held.session) is not None:
            sid = held.session  # our own earlier claim (its answer was lost): kept, under its session
            await reg.put(keys.node_claim(node), me, acquire=sid)
            break
        # released meanwhile, or our own claim under a session that has ended and is being released
        await asyncio.sleep(0.2 * (attempt + 1))
    else:
        raise RegistryUnreachable(
            f"the claim on node {node!r} is still held by this agent's own ended session; retrying"
        )
    _save_session(state_file, sid, node)
    return Claim(node, sid, me)


def _save_session(state_file: Path | None, sid: str, node: str) -> None:
    if state_file:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"session": sid, "node": node}))


def _saved_session(state_file: Path | None) -> str:
    if not state_file:
        return ""
    try:
        return str(json.loads(state_file.read_text()).get("session", ""))
    except (OSError, ValueError):
        return ""


def registration(
    node: str, address: str, info: dict[str, Any], interval: float, status: str, output: str
) -> dict[str, Any]:
    """The catalog entry that says this node is alive (pure)."""
    ttl = f"{max(3 * interval, 1.0):g}s"
    return {
        "Node": node,
        "Address": address,
        "NodeMeta": {
            "engine": info.get("engine", ""),
            "cpus": str(info.get("cpus", "")),
            "memory_mb": str(int(info.get("memory_mb", 0))),
            "shoal_agent": __version__,
        },
        "Service": {"ID": SERVICE, "Service": SERVICE, "Port": 0, "Tags": [f"v{__version__}"]},
        "Check": {
            "CheckID": SERVICE,
            "Name": "shoal agent publishing facts",
            "ServiceID": SERVICE,
            "Status": status,
            "Output": output,
            "Definition": {"TTL": ttl},
        },
    }
