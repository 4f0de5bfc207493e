"""One error hierarchy for all of shoal.

Every error a user can see is a ShoalError whose message says what is wrong and what to do. Each class
carries a `kind`; the edges (the Docker API, the Consul API, the volume plugin, the CLI) each map kinds
to their own reply form, so no edge imports another and no status is read off a message's text
(docker-py's lesson: tell errors apart by type, never by wording).

Kinds: bad_request, not_found, conflict, too_large, denied, unavailable, engine (an engine's own reply,
status kept), failed (anything else: a server error).
"""

from __future__ import annotations

import json
from typing import Any

BAD_REQUEST, NOT_FOUND, CONFLICT, TOO_LARGE = "bad_request", "not_found", "conflict", "too_large"
DENIED, UNAVAILABLE, ENGINE, FAILED = "denied", "unavailable", "engine", "failed"
# the HTTP status of each kind, for the edges that speak HTTP (Docker's and Consul's APIs); any other kind is
# a 500 there, except an engine's own error, which keeps the engine's status at the Docker edge
HTTP_STATUS = {BAD_REQUEST: 400, DENIED: 403, NOT_FOUND: 404, CONFLICT: 409, TOO_LARGE: 413}


class ShoalError(Exception):
    """A failure the user can act on; `str(err)` is the one line they see."""

    kind = FAILED
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(ShoalError):
    """The request itself is wrong (bad flag, bad expression, out-of-range value)."""

    kind = BAD_REQUEST
    exit_code = 2


class Ambiguous(BadRequest):
    """A reference (an id prefix) that matches more than one object."""


class PatternError(BadRequest):
    """A `/regex/` or glob value RE2 cannot compile, or one over the length limit; the text says which
    (shoal.scheduler.pattern). The expression parser words it again with the whole expression."""


class NotFound(ShoalError):
    """The named object does not exist."""

    kind = NOT_FOUND


class Conflict(ShoalError):
    """The request clashes with something that already exists."""

    kind = CONFLICT


class TooLarge(ShoalError):
    """A body or value over the limit its API sets."""

    kind = TOO_LARGE


class PermissionDenied(ShoalError):
    """The caller's credentials do not allow this."""

    kind = DENIED


class Unavailable(ShoalError):
    """Something shoal needs does not answer now (the registry, a store without quorum, an engine)."""

    kind = UNAVAILABLE


class StoreUnavailable(Unavailable):
    """The registry's store cannot serve the request now (etcd without quorum, SQLite file gone)."""


class RegistryUnreachable(Unavailable):
    """The registry did not answer a client (agent, manager, CLI); callers retry with backoff."""


class RegistryFailed(Unavailable):
    """The registry answered 5xx (its store without quorum, a write it gave up on): the request may be
    sent again later; callers that loop (the agents) back off and retry rather than stop."""


class ServerError(ShoalError):
    """A server-side refusal answered as a plain 500 (Consul's form for an unknown session, node or dc)."""


class PoolFull(ShoalError):
    """Not enough room in a dataset pool for what was asked."""


class HostNotReady(ShoalError):
    """The host lacks something shoal needs (root, Linux, a program, memory)."""


class NoPlacement(ShoalError):
    """The scheduler found no node; the message is the placement's own error (classic Swarm's first line)."""

    def __init__(self, placement: Any) -> None:
        super().__init__(placement.error())
        self.placement = placement


class EngineError(ShoalError):
    """An engine's own error reply, passed on with its status and its message."""

    kind = ENGINE

    def __init__(self, status: int, message: str, node: str) -> None:
        super().__init__(message or f"engine on {node} answered {status}")
        self.status = status
        self.node = node

    @classmethod
    def from_reply(cls, status: int, body: bytes, node: str) -> EngineError:
        try:
            msg = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            msg = body.decode(errors="replace").strip()
        return cls(status, msg, node)
