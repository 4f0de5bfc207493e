"""asyncio's TLS server drops a connection whose handshake failed without sending the alert OpenSSL wrote
(the bytes sit in its outgoing buffer when the transport is closed), so a docker CLI holding no certificate
sees `EOF` instead of dockerd's `tls: bad certificate` and its hint about --tlsverify. `install()` flushes
the alert first. It wraps asyncio's private SSLProtocol._do_handshake (CPython 3.11+'s sslproto) and does
nothing where that is not there, so a Python without it only loses the nicer error."""

from __future__ import annotations

import contextlib
import ssl
from asyncio import sslproto

_installed = False


def install() -> None:
    global _installed
    proto = getattr(sslproto, "SSLProtocol", None)
    if _installed or proto is None or not hasattr(proto, "_do_handshake"):
        return
    if not hasattr(proto, "_process_outgoing") or not hasattr(sslproto, "SSLAgainErrors"):
        return
    original = proto._do_handshake

    def _do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except sslproto.SSLAgainErrors:
            self._process_outgoing()
        except ssl.SSLError as exc:
            with contextlib.suppress(Exception):  # the connection is failing anyway
                self._process_outgoing()  # the alert, so the client learns why
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)

    _do_handshake.__wrapped__ = original  # type: ignore[attr-defined]
    proto._do_handshake = _do_handshake
    _installed = True
