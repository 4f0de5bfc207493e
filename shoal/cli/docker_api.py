"""How the CLI reaches the manager's own endpoints (`shoal why`, `shoal token create`): the way the docker
CLI does, from DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (or -H)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests

from shoal.errors import NotFound, PermissionDenied, ShoalError


def default_host() -> str:
    return os.environ.get("DOCKER_HOST", "tcp://127.0.0.1:2375")


def call(method: str, path: str, host: str | None = None, **kw: Any) -> Any:
    """One request to the manager; its Docker-form error is raised as what it is."""
    host = host or default_host()
    if not host.startswith(("tcp://", "http://", "https://")):
        raise ShoalError(f"DOCKER_HOST {host!r} is not a tcp:// address; point -H at the shoal manager")
    tls = os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    scheme = "https" if tls or host.startswith("https://") else "http"
    base = f"{scheme}://" + host.split("://", 1)[1]
    certs = Path(os.environ.get("DOCKER_CERT_PATH", Path.home() / ".docker"))
    if scheme == "https":
        kw |= {"cert": (str(certs / "cert.pem"), str(certs / "key.pem")), "verify": str(certs / "ca.pem")}
    try:
        r = requests.request(method, f"{base}{path}", timeout=30, **kw)
    except requests.RequestException as e:
        raise ShoalError(f"shoal manager at {host} unreachable ({e.__class__.__name__}); is it up?") from e
    if r.status_code >= 400:
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        raise {404: NotFound, 403: PermissionDenied}.get(r.status_code, ShoalError)(message)
    return r.json() if r.content else None
