"""Docker's hijacked connections (attach, exec start) and the websocket attach (/containers/{id}/attach/ws)
relayed byte for byte between client and engine.

A websocket is relayed as bytes too, not as messages: the engine's handshake answer (its
Sec-WebSocket-Accept for the client's own key) goes back as it is, and every frame after it passes
untouched, so nothing is re-encoded (dockerd sends output as text frames that need not be UTF-8) and the
relay's back-pressure is the same as for the raw stream.

Up to the engine's upgrade answer a hijack has the deadlines of any call to an engine (CONNECT to connect,
TLS included; CALL for its answer), so a hung node is an error naming it, never a client left waiting;
after the 101 the stream lasts as long as both ends keep it. Its request body is JSON (exec start's
{"Detach", "Tty"}), capped at MAX_JSON like any other."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import web
from multidict import CIMultiDict

from shoal.api.docker.common import no_answer, read_capped
from shoal.cluster.engine import CALL, CONNECT
from shoal.errors import Unavailable
from shoal.manager.service import Route

# the websocket handshake's own headers, passed on as the client and the engine sent them (dockerd's
# websocket server refuses a handshake without an Origin, as it would from the client directly)
WS_ASKED = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol",
            "Sec-WebSocket-Extensions", "Origin")  # fmt: skip
WS_ANSWERED = ("Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions")


def half_close(writer: asyncio.StreamWriter) -> None:
    """The client's stdin ended: the engine must see its end too (so `cat` gets EOF), while its output
    still flows back. Plain TCP: a write EOF. TLS (asyncio's cannot half-close): a TCP FIN beneath it,
    which dockerd reads as the end of stdin, as it does the docker CLI's own close_notify."""
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
            return
        sock = writer.transport.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_WR)


class _Pipe:
    """Stands in for aiohttp's payload parser right after the 101, to hand over bytes it already read."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.writer.write(data)
        return False, b""

    def feed_eof(self) -> None:
        half_close(self.writer)


class _Hijacked(asyncio.Protocol):
    """Takes the client's connection over from aiohttp after the 101: bytes go straight to the engine, and
    a half-close (the CLI closes its write side when it has no stdin) is passed on, not taken as the end."""

    def __init__(self, writer: asyncio.StreamWriter, done: asyncio.Event) -> None:
        self.writer = writer
        self.done = done
        self.writable = asyncio.Event()  # cleared while the client's send buffer is over its high-water mark
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.writer.write(data)

    def eof_received(self) -> bool:
        half_close(self.writer)
        return True  # keep our side open: the engine's output still has to reach the client

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()
        self.writable.set()


async def hijack(request: web.Request, route: Route) -> web.StreamResponse:
    """Docker's hijacked connection: relay the engine's 101, then bytes both ways until either side ends.
    Engine-to-client bytes wait while the client's buffer is full (back-pressure), so a client that stops
    reading stops the engine's output instead of growing the manager's memory. A websocket upgrade is
    relayed the same way, its handshake headers passed on both ways."""
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    body = await read_capped(request)  # before the engine is bothered: an oversized one is a 413
    engine, what = route.engine, f"{request.method} {route.path}"
    host, port = engine.hostport
    tls = engine.tls
    try:
        async with asyncio.timeout(CONNECT):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None
            )
    except TimeoutError:
        raise no_answer(engine, what, CONNECT, connecting=True) from None
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise Unavailable(
            f"the engine on {engine.node} ({engine.url}) did not answer {what}: cannot connect: {why}"
        ) from e
    query = f"?{request.query_string}" if request.query_string else ""
    target = engine.url_for(route.path).raw_path
    head = [
        f"{request.method} {target}{query} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        f"Upgrade: {'websocket' if websocket else 'tcp'}",
        f"Content-Length: {len(body)}",
    ]
    if websocket:
        head += [f"{k}: {request.headers[k]}" for k in WS_ASKED if k in request.headers]
    if request.headers.get("Content-Type"):
        head.append(f"Content-Type: {request.headers['Content-Type']}")
    try:
        async with asyncio.timeout(CALL):  # the request out and the engine's upgrade answer (or its error) in
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            up_headers = CIMultiDict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            if status != 101:
                length = int(up_headers.get("Content-Length", "0") or 0)
                data = await reader.readexactly(length) if length else await reader.read()
    except TimeoutError:
        writer.close()
        raise no_answer(engine, what, CALL) from None
    except (OSError, EOFError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
        writer.close()
        raise Unavailable(
            f"the engine on {engine.node} ({engine.url}) gave no upgrade answer to {what}: "
            f"{str(e) or type(e).__name__}"
        ) from e
    if status != 101:
        writer.close()
        return web.Response(status=status, body=data, content_type="application/json")
    if websocket:
        answered = {k: up_headers[k] for k in WS_ANSWERED if k in up_headers}
        headers = {"Connection": "Upgrade", "Upgrade": "websocket", **answered}
    else:
        headers = {
            "Content-Type": up_headers.get("Content-Type", "application/vnd.docker.raw-stream"),
            "Connection": "Upgrade",
            "Upgrade": "tcp",
        }
    resp = web.StreamResponse(status=101, headers=headers)
    await resp.prepare(request)
    transport = request.transport
    assert transport is not None and request.protocol is not None
    request.protocol.set_parser(_Pipe(writer))  # what aiohttp read past the headers goes first
    client_gone = asyncio.Event()
    proto = _Hijacked(writer, client_gone)
    transport.set_protocol(proto)
    tls = _keep_tls_half_open(transport)
    try:
        while not client_gone.is_set() and (chunk := await reader.read(65536)):
            transport.write(chunk)
            await proto.writable.wait()
    finally:
        writer.close()
        tls()
        transport.close()
    return resp


def _keep_tls_half_open(transport: asyncio.BaseTransport):
    """The docker CLI half-closes a hijacked TLS connection when its stdin ends (Go's tls.Conn.CloseWrite: a
    close_notify, the TCP stream left open) and goes on reading the container's output. asyncio's TLS layer
    answers a close_notify by shutting the whole connection down, so that output would be lost; for this one
    connection its shutdown waits until the relay ends. Returns what puts the shutdown back."""
    ssl_protocol = getattr(transport, "_ssl_protocol", None)
    if ssl_protocol is None or not hasattr(ssl_protocol, "_start_shutdown"):
        return lambda: None
    ssl_protocol._start_shutdown = lambda: None  # an instance attribute, over the class's method

    def restore() -> None:
        ssl_protocol.__dict__.pop("_start_shutdown", None)

    return restore
