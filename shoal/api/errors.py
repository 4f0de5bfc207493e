"""ShoalError -> the reply each API expects, in one place.

Consul's clients map status codes, not bodies: 400 bad request, 403 permission denied, 404 not
found, 413 too large, 5xx server error, each with a plain-text message (py-consul, consul-template
and Consul's own Go client all do). Docker's and the volume plugin's forms join here.
"""

from __future__ import annotations

import json

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


def docker_status(err: ShoalError) -> int:
    from shoal.cluster.state import Ambiguous, EngineError

    if isinstance(err, EngineError):
        return err.status
    if isinstance(err, Ambiguous):
        return 400
    return consul_status(err) if not isinstance(err, Conflict) else 409


def docker_reply(err: ShoalError) -> web.Response:
    """Docker's error form: the status code, and a JSON body whose `message` the CLI prints."""
    # exactly "application/json": the docker CLI prints the body raw for anything else
    return web.Response(
        status=docker_status(err),
        body=json.dumps({"message": err.message}).encode(),
        content_type="application/json",
    )


PLUGIN_TYPE = "application/vnd.docker.plugins.v1.2+json"


def plugin_reply(err: ShoalError) -> web.Response:
    """The volume plugin protocol's form: a 200 whose `Err` dockerd shows the user as the volume error."""
    return web.Response(body=json.dumps({"Err": err.message}).encode(), content_type=PLUGIN_TYPE)


def consul_reply(err: ShoalError, index: int | None = None) -> web.Response:
    headers = {"X-Consul-Index": str(index)} if index else {}
    return web.Response(status=consul_status(err), text=err.message, headers=headers)
