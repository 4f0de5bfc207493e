"""Registry KV PUT/s with ACLs on ÷ off (issue 13's figure; goal ≥ 0.9), in one run.

Two `shoal registry` processes on SQLite, one plain and one with `--acl` (default deny, an initial
management token), written to by 16 concurrent HTTP clients: without a token on the plain one; with
the management token and with a node token (`NodeIdentities` n1, writing `shoal/nodes/n1/...`, so every
PUT is decided by rules) on the other. Rounds interleave the three so drift on this shared machine
hits all of them alike; the figure is the median round's rate over the plain one's.
Run: `.venv/bin/python benchmarks/registry_acl.py [--seconds 3] [--rounds 3]` (under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.registry.conftest import start_registry, stop_registry

CLIENTS = 16
MANAGEMENT = "0b6f4c1e-8a7d-4c3b-9e2f-5a6b7c8d9e0f"


async def _rate(base: str, token: str, prefix: str, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds
    headers = {"X-Consul-Token": token} if token else {}

    async def client(i: int) -> None:
        nonlocal done
        async with aiohttp.ClientSession(headers=headers) as s:
            n = 0
            while time.monotonic() < stop:
                async with s.put(f"{base}/v1/kv/{prefix}{i}/{n % 1000}", data=b"x" * 64) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                n += 1
                done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return done / (time.monotonic() - t0)


def _node_token(base: str) -> str:
    body = json.dumps({"Description": "bench n1", "NodeIdentities": [{"NodeName": "n1"}]}).encode()
    req = urllib.request.Request(
        f"{base}/v1/acl/token", data=body, method="PUT", headers={"X-Consul-Token": MANAGEMENT}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["SecretID"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    plain = start_registry(f"sqlite://{tempfile.mkdtemp()}/registry.db")
    secured = start_registry(
        f"sqlite://{tempfile.mkdtemp()}/registry.db",
        "--acl",
        env={"CONSUL_ACL_INITIAL_MANAGEMENT": MANAGEMENT},
    )
    try:
        node = _node_token(secured.url)
        runs: dict[str, list[float]] = {"off": [], "management": [], "node": []}
        cases = {
            "off": (plain.url, "", "shoal/nodes/n1/bench/"),
            "management": (secured.url, MANAGEMENT, "shoal/nodes/n1/bench/"),
            "node": (secured.url, node, "shoal/nodes/n1/bench/"),
        }
        for _ in range(args.rounds):
            for name, (base, token, prefix) in cases.items():
                runs[name].append(asyncio.run(_rate(base, token, prefix, args.seconds)))
        off = statistics.median(runs["off"])
        print(
            f"registry PUT/s, {CLIENTS} clients, sqlite, {args.rounds} rounds of {args.seconds:g}s (median)"
        )
        print(f"  acl off:                 {off:8.0f}/s")
        for name in ("management", "node"):
            on = statistics.median(runs[name])
            verdict = "ok" if on / off >= 0.9 else "BELOW GOAL"
            label = f"{name} token:"
            print(f"  acl on, {label:17s}{on:8.0f}/s   on/off = {on / off:.2f} (goal >= 0.9, {verdict})")
    finally:
        stop_registry(plain)
        stop_registry(secured)


if __name__ == "__main__":
    main()
