"""The join token's form, shared by the manager that issues it and the agent that presents it:
`SHOAL-1-<pin>-<id>.<secret>` (Docker swarm's `SWMTKN-1-<digest>-<secret>` shape), the pin being the node
CA's sha256 fingerprint (hex) and the id naming the registry record that keeps the secret's hash."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from shoal.errors import PermissionDenied

PREFIX = "SHOAL-1-"
_TOKEN = re.compile(r"^SHOAL-1-([0-9a-f]{64})-([0-9a-f]{16})\.([0-9A-Za-z_-]{32,64})$")
HOW_TO = "get a new one with `shoal token create` (on the manager, with the admin certificate)"


@dataclass(frozen=True, slots=True)
class Token:
    pin: str  # hex
    id: str
    secret: str


def parse_token(text: str) -> Token:
    """A join token's parts; a malformed one is refused without saying what it would have matched."""
    m = _TOKEN.match(text.strip())
    if not m:
        raise PermissionDenied(f"that is not a shoal join token (they look like {PREFIX}…); {HOW_TO}")
    return Token(*m.groups())


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
