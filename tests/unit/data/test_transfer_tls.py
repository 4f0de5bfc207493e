"""Agent-to-agent streams on a secure cluster: mutual TLS with node certificates, both ends checked against
the node CA (real TLS on loopback: an aiohttp listener with the agent's `Transport`)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shoal import pki
from shoal.agent.transfer import Transport
from shoal.manager.moves import manager_transport


def _node(ca: pki.Pair, d: Path, name: str) -> Transport:
    pair = pki.issue(ca, name, [name, "127.0.0.1"], server=True, client=True)
    pair.write(d, ca.cert)
    return Transport.tls(d / "ca.pem", d / "cert.pem", d / "key.pem")


async def _serve(t: Transport) -> tuple[web.AppRunner, str]:
    async def stream(request: web.Request) -> web.Response:
        return web.Response(body=b"stream")

    app = web.Application()
    app.router.add_get("/v1/copies/x", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = t.site(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"127.0.0.1:{port}"


async def _get(t: Transport, address: str) -> bytes:
    async with t.session() as s, s.get(t.url(address, "/v1/copies/x")) as r:
        return await r.read()


def test_a_node_certificate_reaches_another_agent_and_nothing_else_does(tmp_path: Path) -> None:
    ca, other_ca = pki.make_ca("shoal node CA"), pki.make_ca("another cluster")
    server = _node(ca, tmp_path / "n1", "node1")
    peer = _node(ca, tmp_path / "n2", "node2")
    stranger = _node(other_ca, tmp_path / "x", "node2")
    no_cert = Transport(client=pki.client_context(tmp_path / "n2" / "ca.pem"))

    async def run() -> None:
        runner, address = await _serve(server)
        try:
            assert server.secure and server.url(address, "/p").startswith("https://")
            assert await _get(peer, address) == b"stream"
            assert await _get(manager_transport(ca), address) == b"stream"  # the manager signs its own
            for refused in (stranger, no_cert):  # another CA's certificate, or none: the handshake fails
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                    await _get(refused, address)
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_an_insecure_cluster_streams_over_plain_tcp() -> None:
    t = manager_transport(None)
    assert not t.secure and t.url("10.0.0.1:9", "/v1/pull/x") == "http://10.0.0.1:9/v1/pull/x"
