"""The agent's side of joining: present a join token once, get a node certificate for a key made here (it
never leaves the node), and keep what was granted in the state directory, so a restarted agent needs no
token. The token pins the cluster's node CA: the agent fetches the CA, checks its fingerprint against the
pin before it sends anything, then talks to the manager over TLS that CA vouches for. The certificate is
renewed (with the certificate itself) once two thirds of its life have passed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from shoal import pki
from shoal.certs import Files
from shoal.errors import PermissionDenied, RegistryUnreachable, ShoalError
from shoal.logs import kv
from shoal.registry.client import Access
from shoal.tokens import HOW_TO, parse_token

log = logging.getLogger("shoal.agent.join")
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)


@dataclass(frozen=True, slots=True)
class Credentials(Files):
    """What joining granted, as kept under the agent's state directory (Docker's ca/cert/key layout, as
    every certificate directory of the cluster)."""

    registry: str
    token: str
    manager: str

    def access(self) -> Access:
        return Access(self.registry, self.token, str(self.ca), str(self.cert), str(self.key))

    def due(self, now: float) -> bool:
        """Two thirds of the certificate's life have passed."""
        pem = self.cert.read_bytes()
        start, end = pki.issued(pem), pki.expires(pem)
        return now >= start + (end - start) * 2 / 3


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load(state_dir: Path) -> Credentials | None:
    try:
        doc = json.loads((state_dir / "credentials.json").read_text())
        creds = Credentials(state_dir, doc["registry"], doc.get("token", ""), doc.get("manager", ""))
    except (OSError, ValueError, KeyError):
        return None
    return creds if creds.cert.exists() and creds.key.exists() and creds.ca.exists() else None


def _save(creds: Credentials) -> None:
    doc = {k: v for k, v in asdict(creds).items() if k != "dir"}
    _private(creds.dir / "credentials.json", json.dumps(doc).encode())


def addresses() -> list[str]:
    """Every name and address this node can be reached by, for its certificate's SANs."""
    out = [socket.gethostname()]
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                out.append(a.address)
    return list(dict.fromkeys(out))


def _base(manager: str) -> str:
    return manager.rstrip("/") if manager.startswith("https://") else f"https://{manager.rstrip('/')}"


async def _fetch_ca(session: aiohttp.ClientSession, base: str) -> bytes:
    """The CA, fetched without trusting anything yet: only its fingerprint against the token's pin decides."""
    try:
        async with session.get(f"{base}/shoal/v1/ca", ssl=False, timeout=TIMEOUT) as r:
            if r.status != 200:
                raise ShoalError(
                    f"the manager at {base} answered {r.status} for its CA; is it a shoal manager?"
                )
            return await r.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise RegistryUnreachable(f"manager at {base} unreachable: {e or type(e).__name__}") from e


async def _grant(session: aiohttp.ClientSession, url: str, body: dict[str, Any], ctx: ssl.SSLContext) -> dict:
    try:
        async with session.post(url, json=body, ssl=ctx, timeout=TIMEOUT) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                message = data.get("message", "") if isinstance(data, dict) else str(data)
                raise (PermissionDenied if r.status in (401, 403) else ShoalError)(message)
            return data
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise RegistryUnreachable(f"manager at {url} unreachable: {e or type(e).__name__}") from e


async def join(manager: str, token_text: str, node: str, state_dir: Path) -> Credentials:
    token = parse_token(token_text)
    base = _base(manager)
    state_dir.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        ca = await _fetch_ca(session, base)
        pki.check_pinned(ca, f"sha256:{token.pin}")
        key = pki.new_key()
        _private(state_dir / "key.pem", pki.key_pem(key))
        (state_dir / "ca.pem").write_bytes(ca)
        ctx = pki.client_context(state_dir / "ca.pem")
        csr = pki.make_csr(key, node, [node, *addresses()])
        got = await _grant(
            session,
            f"{base}/shoal/v1/join",
            {"Token": token_text.strip(), "Node": node, "CSR": csr.decode()},
            ctx,
        )
    (state_dir / "cert.pem").write_bytes(got["Certificate"].encode())
    creds = Credentials(state_dir, got["Registry"], got.get("Token", ""), base)
    _save(creds)
    kv(log, "joined", node=node, manager=base, registry=creds.registry)
    return creds


async def renew(creds: Credentials, node: str) -> Credentials:
    key = pki.new_key()
    csr = pki.make_csr(key, node, [node, *addresses()])
    ctx = pki.client_context(creds.ca, creds.cert, creds.key)
    async with aiohttp.ClientSession() as session:
        got = await _grant(session, f"{creds.manager}/shoal/v1/renew", {"CSR": csr.decode()}, ctx)
    tmp = creds.dir / "key.pem.new"
    _private(tmp, pki.key_pem(key))
    (creds.dir / "cert.pem.new").write_bytes(got["Certificate"].encode())
    tmp.rename(creds.key)
    (creds.dir / "cert.pem.new").rename(creds.cert)
    kv(log, "certificate renewed", node=node, expires=round(pki.expires(creds.cert.read_bytes())))
    return creds


async def credentials(manager: str, token: str, node: str, state_dir: Path) -> Credentials:
    """What the agent publishes with: kept from an earlier join, or got now with the token."""
    have = load(state_dir)
    if have is not None:
        if have.due(time.time()):
            try:
                return await renew(have, node)
            except ShoalError as e:
                kv(log, "certificate renewal failed; using the current one", logging.WARNING, error=e.message)
        return have
    if not token:
        raise PermissionDenied(
            f"this agent has not joined the cluster (no credentials in {state_dir}): start it once with "
            f"--join TOKEN --manager https://MANAGER:2377; {HOW_TO}"
        )
    return await join(manager, token, node, state_dir)
