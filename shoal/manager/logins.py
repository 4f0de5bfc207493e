"""Dashboard logins for browsers that hold no client certificate: the registry's management token (what
`shoal dev env` exports as CONSUL_HTTP_TOKEN; Consul's UI logs in with an ACL token the same way) buys a
session cookie. The registry decides what the token is (/v1/acl/token/self); only the cookie's hash is kept
here, in memory, so a manager restart logs everyone out and nothing secret is ever written down."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import TYPE_CHECKING

from shoal.errors import PermissionDenied
from shoal.logs import kv
from shoal.registry.acl import MANAGEMENT_POLICY_ID

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager.logins")
COOKIE = "shoal_dashboard"
TTL = 12 * 3600.0
MAX_SESSIONS = 1000
HOW = "log in with the registry's management token (CONSUL_HTTP_TOKEN from `shoal dev env`)"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class Logins:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self._sessions: dict[str, float] = {}  # sha256(cookie) -> expiry

    async def login(self, token: str) -> str:
        """A new session cookie for a management token; PermissionDenied (saying why) for anything else."""
        token = token.strip()
        if not token or len(token) > 256 or not token.isprintable():
            raise PermissionDenied(f"no token given; {HOW}")
        try:
            me = await self.m.cluster.client_with(token).token_self()
        except PermissionDenied:
            kv(log, "dashboard login refused", logging.WARNING, why="unknown token")
            raise PermissionDenied(f"the registry does not know that token; {HOW}") from None
        if me is None:
            raise PermissionDenied(
                "the registry runs without ACLs, so there is no token to log in with: open the dashboard on "
                "the Docker API's address with the admin certificate"
            )
        if not any(p.get("ID") == MANAGEMENT_POLICY_ID for p in me.get("Policies") or []):
            kv(log, "dashboard login refused", logging.WARNING, why="not a management token")
            raise PermissionDenied(f"that token may not see the whole cluster; {HOW}")
        now = self.m.cluster.now()
        self._sessions = {h: t for h, t in self._sessions.items() if t > now}
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(min(self._sessions, key=self._sessions.__getitem__))
        cookie = secrets.token_urlsafe(32)
        self._sessions[_hash(cookie)] = now + TTL
        kv(log, "dashboard login", accessor=str(me.get("AccessorID", ""))[:8])
        return cookie

    def valid(self, cookie: str | None) -> bool:
        if not cookie or len(cookie) > 128:
            return False
        expiry = self._sessions.get(_hash(cookie))
        return expiry is not None and expiry > self.m.cluster.now()

    def logout(self, cookie: str | None) -> None:
        if cookie:
            self._sessions.pop(_hash(cookie), None)
