"""The agent's side of the registry: it speaks only the Consul HTTP API, so a site with a real Consul
can point agents at it.

Key layout (documented in README):

    shoal/nodes/<node>/agent   the agent's claim: held by its session (a Consul lock), value = who holds it
    shoal/nodes/<node>/facts   {"node", "gathered_at", "facts": {...}, "failed_sources": [...]}
    shoal/nodes/<node>/info    {"node", "address", "engine", "cpus", "memory_mb", "labels", "engine_labels",
                                "agent": {"version", "pid", "started_at"}}

and in the catalog: node <node> (its address; NodeMeta engine, cpus, memory_mb), service `shoal-agent`,
check `shoal-agent` with a TTL of 3 intervals that every publish renews (the seed's "update service":
an agent that goes silent turns its node critical).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from shoal import __version__
from shoal.errors import Conflict, ShoalError

SERVICE = "shoal-agent"
PREFIX = "shoal/nodes"


class ManagerUnreachable(ShoalError):
    """The registry did not answer; the agent retries with backoff."""


def facts_key(node: str) -> str:
    return f"{PREFIX}/{node}/facts"


def info_key(node: str) -> str:
    return f"{PREFIX}/{node}/info"


def claim_key(node: str) -> str:
    return f"{PREFIX}/{node}/agent"


@dataclass
class Registry:
    """A small async Consul client for the agent (aiohttp; py-consul is synchronous)."""

    base: str
    session: aiohttp.ClientSession

    async def _req(self, method: str, path: str, *, data: Any = None, params: dict | None = None) -> Any:
        body = data if isinstance(data, bytes | str) or data is None else json.dumps(data)
        try:
            async with self.session.request(
                method,
                f"{self.base}{path}",
                data=body,
                params=params,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r:
                text = await r.text()
                if r.status == 404:
                    return None
                if r.status >= 400:
                    raise ShoalError(f"registry {method} {path}: {r.status} {text.strip()}")
                return json.loads(text) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ManagerUnreachable(f"registry at {self.base} unreachable: {e or type(e).__name__}") from e

    async def kv_put(self, key: str, value: bytes | str, **params: str) -> bool:
        return bool(await self._req("PUT", f"/v1/kv/{key}", data=value, params=params or None))

    async def kv_get(self, key: str) -> dict | None:
        got = await self._req("GET", f"/v1/kv/{key}")
        return got[0] if got else None

    async def session_create(self, name: str, ttl: str) -> str:
        body = {"Name": name, "TTL": ttl, "LockDelay": "0s", "Behavior": "release"}
        got = await self._req("PUT", "/v1/session/create", data=body)
        if not isinstance(got, dict) or "ID" not in got:
            raise ShoalError(
                f"{self.base} does not answer as a Consul registry (session create gave {got!r}); "
                "check --manager"
            )
        return got["ID"]

    async def session_renew(self, sid: str) -> bool:
        return await self._req("PUT", f"/v1/session/renew/{sid}") is not None

    async def session_destroy(self, sid: str) -> None:
        await self._req("PUT", f"/v1/session/destroy/{sid}")

    async def session_info(self, sid: str) -> dict | None:
        got = await self._req("GET", f"/v1/session/info/{sid}")
        return got[0] if got else None

    async def catalog_register(self, body: dict) -> None:
        await self._req("PUT", "/v1/catalog/register", data=body)


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


async def claim(reg: Registry, node: str, address: str, state_file: Path | None) -> Claim:
    """Takes the node's lock, reusing our own earlier session (after a crash) if it still holds it;
    refuses with a clear error when another live agent holds it."""
    me = identity(node, address)
    sid = _saved_session(state_file)
    if sid and await reg.session_info(sid) is not None:
        held = await reg.kv_get(claim_key(node))
        if held and held.get("Session") == sid:
            await reg.kv_put(claim_key(node), json.dumps(me), acquire=sid)
            return Claim(node, sid, me)
    sid = await reg.session_create(f"shoal-agent {node}", "10s")
    if not await reg.kv_put(claim_key(node), json.dumps(me), acquire=sid):
        held = await reg.kv_get(claim_key(node))
        await reg.session_destroy(sid)
        who = ""
        if held and held.get("Value"):
            import base64

            other = json.loads(base64.b64decode(held["Value"]))
            who = f" by the agent on {other.get('host')} ({other.get('address')}, pid {other.get('pid')})"
        raise Conflict(
            f"node name {node!r} is already claimed{who}; stop that agent first, "
            "or start this one with another --node"
        )
    if state_file:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"session": sid, "node": node}))
    return Claim(node, sid, me)


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
