"""The manager's join listener (HTTPS with the node CA's certificate; a client certificate is optional at
the handshake): what an agent without credentials may ask — the CA to check against its token's pin, and a
node certificate for a join token — and what a node with its certificate may ask: a renewal. Nothing here
serves the Docker API; that listener wants a client certificate of the control CA at the handshake."""

from __future__ import annotations

import ssl

from aiohttp import web

from shoal.api.docker.common import MANAGER, manager_of, read_json, reply_json
from shoal.api.docker.errors import docker_reply
from shoal.errors import BadRequest, PermissionDenied, ShoalError
from shoal.manager.service import Manager


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ShoalError as e:
        return docker_reply(e)


async def ca(request: web.Request) -> web.Response:
    joins = manager_of(request).joins
    assert joins is not None
    return web.Response(body=joins.node_ca.cert, content_type="application/x-pem-file")


def _field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"the join request needs {name} (a string)")
    return value


async def join(request: web.Request) -> web.Response:
    joins = manager_of(request).joins
    assert joins is not None
    body = await read_json(request, "the join request")
    granted = await joins.join(_field(body, "Token"), _field(body, "Node"), _field(body, "CSR").encode())
    return reply_json(granted, 201)


async def renew(request: web.Request) -> web.Response:
    joins = manager_of(request).joins
    assert joins is not None
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        raise PermissionDenied("renewing needs the node's current certificate at the handshake")
    body = await read_json(request, "the renewal request")
    granted = await joins.renew(ssl.DER_cert_to_PEM_cert(der).encode(), _field(body, "CSR").encode())
    return reply_json(granted, 201)


def make_public_app(manager: Manager) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=1 << 16)
    app[MANAGER] = manager
    app.router.add_get("/shoal/v1/ca", ca)
    app.router.add_post("/shoal/v1/join", join)
    app.router.add_post("/shoal/v1/renew", renew)
    return app
