"""ShoalError -> the reply each API expects, in one place.

Consul's clients map status codes, not bodies: 400 bad request, 403 permission denied, 404 not
found, 413 too large, 5xx server error, each with a plain-text message (py-consul, consul-template
and Consul's own Go client all do). Docker's and the volume plugin's forms join here.
"""

from __future__ import annotations

from aiohttp import web

from shoal.errors import BadRequest, Conflict, NotFound, ShoalError

_CONSUL_STATUS: list[tuple[type[ShoalError], int]] = [
    (BadRequest, 400),
    (NotFound, 404),
    (Conflict, 409),
]


def consul_status(err: ShoalError) -> int:
    from shoal.registry.core import TooLarge

    if isinstance(err, TooLarge):
        return 413
    for cls, status in _CONSUL_STATUS:
        if isinstance(err, cls):
            return status
    return 500


def consul_reply(err: ShoalError, index: int | None = None) -> web.Response:
    headers = {"X-Consul-Index": str(index)} if index else {}
    return web.Response(status=consul_status(err), text=err.message, headers=headers)
