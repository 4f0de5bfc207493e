"""ShoalError kinds to the Docker Engine API's error form: the status for the error's kind and a JSON body
whose `message` the docker CLI prints. An engine's own error keeps the engine's status."""

from __future__ import annotations

import json

from aiohttp import web

from shoal import errors
from shoal.errors import EngineError, ShoalError


def docker_status(err: ShoalError) -> int:
    if isinstance(err, EngineError):
        return err.status
    return errors.HTTP_STATUS.get(err.kind, 500)


def docker_reply(err: ShoalError) -> web.Response:
    # exactly "application/json": the docker CLI prints the body raw for anything else
    return web.Response(
        status=docker_status(err),
        body=json.dumps({"message": err.message}).encode(),
        content_type="application/json",
    )
