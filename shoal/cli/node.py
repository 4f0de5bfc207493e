"""`shoal node drain|undrain NODE`: stop new placements on a node and move its policy-carrying containers
(and their datasets) away, one at a time; or allow placements there again. Through the manager."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import requests

from shoal.errors import BadRequest, Conflict, NotFound, PermissionDenied, ShoalError, Unavailable

host_option = click.option(
    "--host",
    "-H",
    default=lambda: os.environ.get("DOCKER_HOST", "tcp://127.0.0.1:2375"),
    help="The shoal manager (default: $DOCKER_HOST).",
)
_ERRORS = {400: BadRequest, 403: PermissionDenied, 404: NotFound, 409: Conflict, 503: Unavailable}


def manager_call(method: str, host: str, path: str, timeout: float = 3700, **kw: Any) -> dict:
    """One request to the manager's own endpoints as the docker CLI reaches it (DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH: mutual TLS with the operator's certificate), with a timeout long enough for a move;
    its Docker-form error is raised as what it is."""
    if not host.startswith(("tcp://", "http://", "https://")):
        raise ShoalError(f"DOCKER_HOST {host!r} is not a tcp:// address; point --host at the shoal manager")
    tls = os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0") or host.startswith("https://")
    base = ("https://" if tls else "http://") + host.split("://", 1)[1]
    if tls:
        certs = Path(os.environ.get("DOCKER_CERT_PATH", Path.home() / ".docker"))
        kw |= {"cert": (str(certs / "cert.pem"), str(certs / "key.pem")), "verify": str(certs / "ca.pem")}
    try:
        r = requests.request(method, f"{base}{path}", timeout=timeout, **kw)
    except requests.RequestException as e:
        raise ShoalError(f"shoal manager at {host} unreachable ({e.__class__.__name__}); is it up?") from e
    try:
        doc = r.json()
    except ValueError:
        doc = {"message": r.text}
    if r.status_code >= 400:
        message = doc.get("message", r.text) if isinstance(doc, dict) else r.text
        raise _ERRORS.get(r.status_code, ShoalError)(message)
    return doc if isinstance(doc, dict) else {}


def _call(host: str, path: str, timeout: float = 3700) -> dict:
    return manager_call("POST", host, path, timeout)


def drain_lines(doc: dict) -> list[str]:
    """What a drain did, one line each (pure)."""
    lines = [f"{doc['node']}: draining (no new placements)"]
    for x in doc.get("moved", []):
        also = f" with {', '.join(x['datasets'])}" if x.get("datasets") else ""
        lines.append(f"  moved {x['name']} to {x['to']}{also}")
    lines += [f"  {x['name']} stays: {x['reason']}" for x in doc.get("stayed", [])]
    return lines


@click.group()
def node() -> None:
    """One node: drain it (move its work away) or undrain it."""


@node.command()
@click.argument("name")
@host_option
def drain(name: str, host: str) -> None:
    """No new placements on NAME; its containers with a reschedule policy move away with their datasets."""
    for line in drain_lines(_call(host, f"/shoal/v1/nodes/{name}/drain")):
        click.echo(line)


@node.command()
@click.argument("name")
@host_option
def undrain(name: str, host: str) -> None:
    """Placements on NAME are allowed again."""
    _call(host, f"/shoal/v1/nodes/{name}/undrain", timeout=30)
    click.echo(f"{name}: placements allowed again")
