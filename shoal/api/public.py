"""The manager's join listener (HTTPS with the node CA's certificate; a client certificate is optional at
the handshake): what an agent without credentials may ask — the CA to check against its token's pin, and a
node certificate for a join token — and what a node with its certificate may ask: a renewal, and the
dataset record writes its agent makes (shoal.manager.node_records). And the
dashboard for a browser without the admin certificate, behind a login with the registry's management token
(a Secure, HttpOnly, SameSite=Strict session cookie). Nothing here serves the Docker API; that listener
wants a client certificate of the control CA at the handshake."""

from __future__ import annotations

import html
import ssl

from aiohttp import web

from shoal.api.docker import dashboard
from shoal.api.docker.common import MANAGER, manager_of, read_json, reply_json
from shoal.api.docker.errors import docker_reply
from shoal.errors import BadRequest, PermissionDenied, ShoalError
from shoal.manager.logins import COOKIE, TTL, Logins
from shoal.manager.service import Manager

LOGINS = web.AppKey("logins", Logins)
_LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shoal: log in</title></head>
<body style="font-family: sans-serif; margin: 4em auto; max-width: 32em">
<h1>shoal</h1>
<p>{message}</p>
<form method="post" action="/dashboard/login">
<label>Registry token <input type="password" name="token" autocomplete="off" autofocus></label>
<button type="submit">Log in</button>
</form>
</body></html>
"""


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


def _peer_cert(request: web.Request, what: str) -> bytes:
    """The node certificate shown at the handshake (checked against the node CA by TLS itself), as PEM."""
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        raise PermissionDenied(f"{what} needs the node's certificate at the handshake")
    return ssl.DER_cert_to_PEM_cert(der).encode()


async def renew(request: web.Request) -> web.Response:
    joins = manager_of(request).joins
    assert joins is not None
    presented = _peer_cert(request, "renewing")
    body = await read_json(request, "the renewal request")
    granted = await joins.renew(presented, _field(body, "CSR").encode())
    return reply_json(granted, 201)


async def node_record(request: web.Request) -> web.Response:
    """A dataset record write asked by a node's agent (shoal.manager.node_records says what it may ask)."""
    m = manager_of(request)
    assert m.joins is not None
    node = await m.joins.node_of(_peer_cert(request, "writing a dataset record"))
    body = await read_json(request, "the record write")
    return reply_json(await m.node_records.apply(node, request.match_info["op"], body))


def _login_page(message: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_LOGIN_PAGE.format(message=html.escape(message)), status=status, content_type="text/html"
    )


def _logged_in(request: web.Request) -> bool:
    return request.app[LOGINS].valid(request.cookies.get(COOKIE))


async def dashboard_page(request: web.Request) -> web.Response:
    if not _logged_in(request):
        return _login_page("Log in with the registry's management token (CONSUL_HTTP_TOKEN).")
    return await dashboard.page(request)


async def dashboard_login(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    try:
        cookie = await request.app[LOGINS].login(token if isinstance(token, str) else "")
    except PermissionDenied as e:
        return _login_page(e.message, 403)
    reply = web.HTTPSeeOther("/dashboard")
    reply.set_cookie(
        COOKIE, cookie, max_age=int(TTL), path="/", secure=True, httponly=True, samesite="Strict"
    )
    return reply


async def dashboard_logout(request: web.Request) -> web.Response:
    request.app[LOGINS].logout(request.cookies.get(COOKIE))
    reply = web.HTTPSeeOther("/dashboard")
    reply.del_cookie(COOKIE, path="/")
    return reply


async def overview(request: web.Request) -> web.Response:
    if not _logged_in(request):
        raise PermissionDenied("log in at /dashboard first (with the registry's management token)")
    return await dashboard.overview_handler(request)


def make_public_app(manager: Manager) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=1 << 16)
    app[MANAGER] = manager
    app[LOGINS] = Logins(manager)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_post("/dashboard/login", dashboard_login)
    app.router.add_post("/dashboard/logout", dashboard_logout)
    app.router.add_get("/shoal/v1/overview", overview)
    app.router.add_get("/shoal/v1/ca", ca)
    app.router.add_post("/shoal/v1/join", join)
    app.router.add_post("/shoal/v1/renew", renew)
    app.router.add_post("/shoal/v1/records/{op}", node_record)
    return app
