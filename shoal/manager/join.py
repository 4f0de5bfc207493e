"""Joining a node: a join token buys a node certificate, signed from the agent's own CSR (its key never
leaves the node), and the registry address (and, with ACLs, a node-scoped token) it publishes with.

A token (shoal.tokens) pins the node CA, so a joining agent checks it reached this cluster before it sends
anything (no trust on first use); its id names the registry record that keeps only the secret's hash and
when the token expires. A node name is joined once: the fingerprint of the certificate it got is kept,
and a second agent claiming that name without that node's certificate is refused. Agents renew their
certificate with the certificate itself (mutual TLS on the join listener), before it expires; the one it
was renewed from stays the node's too, until it expires (TLS refuses it then) or the next renewal: the
agent's open connections made with it are still its node's, and a renewal whose answer was lost is asked
again with it, instead of locking the node out ("join again").
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from shoal import keys, pki
from shoal.errors import BadRequest, Conflict, NotFound, PermissionDenied
from shoal.logs import kv
from shoal.registry import acl
from shoal.tokens import HOW_TO, PREFIX, Token, parse_token, secret_hash

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager.join")
DEFAULT_TTL = 24 * 3600.0
MAX_TTL = 365 * 24 * 3600.0
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_node_name(node: str) -> None:
    if not _NODE.match(node):
        raise BadRequest(
            f"node name {node!r} must start with a letter or digit and hold at most 63 letters, digits, "
            "'_', '.' and '-'"
        )


def _holds(held: dict[str, Any], presented: bytes) -> bool:
    """`presented` is a certificate the node's identity record keeps: the current one, or the one it was
    renewed from (compared in constant time, both)."""
    shown = pki.fingerprint(presented)
    kept = (str(held.get(field) or "") for field in ("fingerprint", "previous"))
    return any(k and hmac.compare_digest(k, shown) for k in kept)


class Joins:
    def __init__(self, manager: Manager, node_ca: pki.Pair, registry_url: str) -> None:
        self.m = manager
        self.node_ca = node_ca
        self.pin = pki.fingerprint(node_ca.cert).removeprefix("sha256:")
        self.registry_url = registry_url  # what a joined agent publishes to

    @property
    def _reg(self):
        return self.m.cluster.client

    async def create_token(self, ttl: float = DEFAULT_TTL) -> dict[str, Any]:
        if not 60 <= ttl <= MAX_TTL:
            raise BadRequest(f"a join token lives between 60 s and a year; {ttl:g} s asked")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self.m.cluster.now()
        record = {"hash": secret_hash(secret), "created": now, "expires": now + ttl}
        await self._reg.put(keys.join_token(token_id), record, cas=0)
        kv(log, "join token created", token_id=token_id, expires=round(now + ttl))
        return {"Token": f"{PREFIX}{self.pin}-{token_id}.{secret}", "Expires": now + ttl}

    async def list_tokens(self) -> list[dict[str, Any]]:
        """Every join token's id and lifetime (never its secret, nor the secret's hash), oldest first."""
        pairs, _ = await self._reg.list_prefix(keys.JOIN_TOKENS)
        now = self.m.cluster.now()
        out = []
        for pair in pairs:
            record = pair.json()
            if not isinstance(record, dict):
                continue
            expires = float(record.get("expires", 0))
            out.append(
                {
                    "ID": keys.last_part(pair.key),
                    "Created": float(record.get("created", 0)),
                    "Expires": expires,
                    "Expired": expires < now,
                }
            )
        return sorted(out, key=lambda t: t["Created"])

    async def revoke_token(self, token_id: str) -> None:
        """A join token can no longer be used; nodes that joined with it keep their certificates."""
        if not re.fullmatch(r"[0-9a-f]{16}", token_id):
            raise BadRequest(f"{token_id!r} is not a join token id (16 hex digits: see `shoal token ls`)")
        if await self._reg.get(keys.join_token(token_id)) is None:
            raise NotFound(f"no join token {token_id}; `shoal token ls` lists them")
        await self._reg.delete(keys.join_token(token_id))
        kv(log, "join token revoked", token_id=token_id)

    async def _check_token(self, text: str) -> Token:
        token = parse_token(text)
        if not hmac.compare_digest(token.pin, self.pin):
            raise PermissionDenied(
                f"this join token is for another cluster (its CA is not this manager's); {HOW_TO}"
            )
        record = await self._reg.get_json(keys.join_token(token.id))
        if not isinstance(record, dict) or not hmac.compare_digest(
            str(record.get("hash", "")), secret_hash(token.secret)
        ):
            raise PermissionDenied(f"this join token is not valid (unknown, revoked or mistyped); {HOW_TO}")
        if float(record.get("expires", 0)) < self.m.cluster.now():
            raise PermissionDenied(f"this join token expired; {HOW_TO}")
        return token

    async def join(self, token_text: str, node: str, csr_pem: bytes) -> dict[str, Any]:
        """A node certificate for `node`, from its CSR, once the token holds and the name is free."""
        await self._check_token(token_text)
        check_node_name(node)
        request = pki.read_csr(csr_pem)
        if request.common_name != node:
            raise BadRequest(f"the certificate request names {request.common_name!r}, not node {node!r}")
        if len(request.sans) > 32:
            raise BadRequest("the certificate request names more than 32 addresses")
        held = await self._reg.get(keys.identity(node))
        if held is not None:
            raise Conflict(
                f"node name {node!r} has joined already (with another key): an agent can take it only with "
                f"that node's credentials (its state directory); to give the name to a new machine, delete "
                f"the registry key {keys.identity(node)} first (with the management token)"
            )
        cert = pki.sign_request(self.node_ca, request)
        now = self.m.cluster.now()
        record = {"fingerprint": pki.fingerprint(cert), "joined": now, "expires": pki.expires(cert)}
        if not await self._reg.put(keys.identity(node), record, cas=0):
            raise Conflict(f"node name {node!r} was joined by another agent meanwhile")
        token = self._node_token(node)
        kv(log, "node joined", node=node, fingerprint=record["fingerprint"][:23], sans=request.sans)
        return self._grant(cert, token)

    def _node_token(self, node: str) -> str:
        """The node's registry ACL token: derived from the manager's own (management) token, so the
        registry checks it without keeping it (shoal.registry.acl.derived_node_token); "" without one."""
        token = self.m.cluster.access.token
        return acl.derived_node_token(token, node) if token else ""

    async def node_of(self, presented: bytes) -> str:
        """The node a certificate shown at the handshake (TLS checked it against the node CA) speaks for:
        its common name, when the node's identity record keeps that certificate. With no record (a registry
        that lost it: the agent keeps its certificate and re-publishes what its pool holds), the CA's
        signature alone vouches for the name, as it did at join."""
        node = pki.common_name(presented)
        check_node_name(node)
        held = await self._reg.get_json(keys.identity(node))
        if isinstance(held, dict) and not _holds(held, presented):
            raise PermissionDenied(f"that certificate is not the one node {node!r} holds; join again")
        return node

    async def renew(self, presented: bytes, csr_pem: bytes) -> dict[str, Any]:
        """A fresh certificate for the node whose certificate was shown at the handshake (its current one,
        or the one it was renewed from: the answer to that renewal may never have reached it)."""
        node = pki.common_name(presented)
        held = await self._reg.get_json(keys.identity(node))
        if not isinstance(held, dict) or not _holds(held, presented):
            raise PermissionDenied(f"that certificate is not the one node {node!r} holds; join again")
        request = pki.read_csr(csr_pem)
        if request.common_name != node:
            raise BadRequest(f"the certificate request names {request.common_name!r}, not node {node!r}")
        cert = pki.sign_request(self.node_ca, request)
        record = {
            **held,
            "fingerprint": pki.fingerprint(cert),
            "previous": pki.fingerprint(presented),
            "expires": pki.expires(cert),
            "renewed": self.m.cluster.now(),
        }
        await self._reg.put(keys.identity(node), record)
        kv(log, "node certificate renewed", node=node, expires=round(pki.expires(cert)))
        return self._grant(cert)

    def _grant(self, cert: bytes, token: str = "") -> dict[str, Any]:
        """What the agent keeps; a renewal carries no token (the agent keeps the one it joined with)."""
        return {
            "Certificate": cert.decode(),
            "CA": self.node_ca.cert.decode(),
            "Registry": self.registry_url,
            "Token": token,
        }
