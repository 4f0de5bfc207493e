"""The agent's side of joining: present a join token once, get a node certificate for a key made here (it
never leaves the node), and keep what was granted in the state directory, so a restarted agent needs no
token. The token pins the cluster's node CA: the agent fetches the CA, checks its fingerprint against the
pin before it sends anything, then talks to the manager over TLS that CA vouches for. The certificate is
renewed (with the certificate itself) once two thirds of its life have passed.

`--manager` may list every manager's join listener (`https://a:2377,https://b:2377`): the agent joins
through the first that answers, keeps the whole list, and renews through any of them. A join or renewal
whose connection could not be made goes to the next manager; one that failed after it was sent is not
sent again (the name may be taken already): the agent retries as it does with one manager.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from shoal import pki
from shoal.certs import Files
from shoal.errors import PermissionDenied, ShoalError
from shoal.logs import kv
from shoal.registry.client import CONNECT, Access, Rotation, first_answer
from shoal.registry.client import addresses as address_list
from shoal.tokens import HOW_TO, parse_token

log = logging.getLogger("shoal.agent.join")
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=CONNECT)


@dataclass(frozen=True, slots=True)
class Credentials(Files):
    """What joining granted, as kept under the agent's state directory (Docker's ca/cert/key layout, as
    every certificate directory of the cluster)."""

    registry: str  # the registry's address, or a comma-separated list of them
    token: str
    manager: str  # the managers' join listeners, comma-separated

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
        f.flush()
        os.fsync(f.fileno())


def _finish_renewal(state_dir: Path) -> None:
    """A renewal cut short between its renames (kill -9, power loss) is finished or dropped, so the key and
    the certificate loaded are always a pair: `renew` writes key.pem.new and cert.pem.new whole, then
    renames the key, then the certificate. Only cert.pem.new left: the key is the new one, so the new
    certificate goes in too. Both left: nothing was renamed; the old pair stands and the new one is
    dropped (the manager still takes the old certificate: the node's `previous`)."""
    new_cert, new_key = state_dir / "cert.pem.new", state_dir / "key.pem.new"
    if not new_cert.exists():
        new_key.unlink(missing_ok=True)
    elif new_key.exists():
        new_cert.unlink()
        new_key.unlink()
    else:
        new_cert.rename(state_dir / "cert.pem")


def load(state_dir: Path) -> Credentials | None:
    with contextlib.suppress(OSError):
        _finish_renewal(state_dir)
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


def managers(manager: str) -> tuple[str, ...]:
    """`--manager`'s join listeners: one or a comma-separated list, HOST:PORT or https:// URLs."""
    return address_list(manager, scheme="https", schemes=("https",), what="manager", port=2377)


def _from(bases: tuple[str, ...], base: str) -> Rotation:
    """The managers from `base` on (it answered last), then the others."""
    rotation = Rotation(bases)
    rotation.at = bases.index(base)
    return rotation


async def _fetch_ca(session: aiohttp.ClientSession, base: str) -> bytes:
    """The CA, fetched without trusting anything yet: only its fingerprint against the token's pin decides."""
    async with session.get(f"{base}/shoal/v1/ca", ssl=False, timeout=TIMEOUT) as r:
        if r.status != 200:
            raise ShoalError(f"the manager at {base} answered {r.status} for its CA; is it a shoal manager?")
        return await r.read()


async def _grant(session: aiohttp.ClientSession, url: str, body: dict[str, Any], ctx: ssl.SSLContext) -> dict:
    async with session.post(url, json=body, ssl=ctx, timeout=TIMEOUT) as r:
        try:
            data = await r.json(content_type=None)
        except ValueError:
            raise ShoalError(f"{url} answered {r.status} with no JSON; is it a shoal manager?") from None
        if r.status >= 400:
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            raise (PermissionDenied if r.status in (401, 403) else ShoalError)(message)
        return data


async def join(manager: str, token_text: str, node: str, state_dir: Path) -> Credentials:
    token = parse_token(token_text)
    bases = managers(manager)
    state_dir.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        base, ca = await first_answer(
            Rotation(bases), lambda b: _fetch_ca(session, b), read=True, what="manager"
        )
        pki.check_pinned(ca, f"sha256:{token.pin}")
        key = pki.new_key()
        _private(state_dir / "key.pem", pki.key_pem(key))
        (state_dir / "ca.pem").write_bytes(ca)
        ctx = pki.client_context(state_dir / "ca.pem")
        csr = pki.make_csr(key, node, [node, *addresses()])
        body = {"Token": token_text.strip(), "Node": node, "CSR": csr.decode()}
        base, got = await first_answer(
            _from(bases, base),
            lambda b: _grant(session, f"{b}/shoal/v1/join", body, ctx),
            read=False,
            what="manager",
        )
    (state_dir / "cert.pem").write_bytes(got["Certificate"].encode())
    creds = Credentials(state_dir, got["Registry"], got.get("Token", ""), ",".join(bases))
    _save(creds)
    kv(log, "joined", node=node, manager=base, registry=creds.registry)
    return creds


async def renew(creds: Credentials, node: str) -> Credentials:
    key = pki.new_key()
    csr = pki.make_csr(key, node, [node, *addresses()])
    ctx = pki.client_context(creds.ca, creds.cert, creds.key)
    body = {"CSR": csr.decode()}
    async with aiohttp.ClientSession() as session:
        _, got = await first_answer(
            Rotation(managers(creds.manager)),
            lambda b: _grant(session, f"{b}/shoal/v1/renew", body, ctx),
            read=False,
            what="manager",
        )
    # both written whole (and synced) before either is renamed: `_finish_renewal` relies on that order
    new_key, new_cert = creds.dir / "key.pem.new", creds.dir / "cert.pem.new"
    _private(new_key, pki.key_pem(key))
    _private(new_cert, got["Certificate"].encode())
    new_key.rename(creds.key)
    new_cert.rename(creds.cert)
    kv(log, "certificate renewed", node=node, expires=round(pki.expires(creds.cert.read_bytes())))
    return creds


async def credentials(manager: str, token: str, node: str, state_dir: Path) -> Credentials:
    """What the agent publishes with: kept from an earlier join, or got now with the token. The managers
    `--manager` lists now are the ones it renews through (a site may have added one since it joined)."""
    have = load(state_dir)
    if have is not None:
        if manager:
            have = replace(have, manager=",".join(managers(manager)))
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
