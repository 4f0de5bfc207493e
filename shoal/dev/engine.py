"""Talking to one node's dockerd while the dev cluster is made: readiness and image loading."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import requests

from shoal.dev import host
from shoal.dev.node import log_tail
from shoal.errors import ShoalError

API_VERSION = "1.41"


def client(url: str, timeout: float = 10.0, certs: Path | None = None) -> docker.APIClient:
    """docker-py for one engine; `certs` a directory in Docker's layout (ca.pem, cert.pem, key.pem)."""
    tls = (
        docker.tls.TLSConfig(
            client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
            ca_cert=str(certs / "ca.pem"),
            verify=True,
        )
        if certs is not None
        else False
    )
    c = docker.APIClient(base_url=url, version=API_VERSION, timeout=timeout, tls=tls)
    # requests lets REQUESTS_CA_BUNDLE (set on many hosts) override the CA docker-py configured (requests
    # issue 3829): the cluster's CA must win
    c.trust_env = False
    return c


def wait_ready(socket: Path, pid: int, log: Path, node: str, timeout: float = 60.0) -> float:
    """Polls the engine's socket until it answers; fails at once if the engine died. Returns seconds."""
    start = time.monotonic()
    c = client(f"unix://{socket}", timeout=2.0)
    try:
        while time.monotonic() - start < timeout:
            if socket.exists():
                try:
                    c.ping()
                    return time.monotonic() - start
                except (requests.RequestException, docker.errors.APIError):
                    pass
            if not host.pid_alive(pid):
                tail = " | ".join(log_tail(log))
                raise ShoalError(f"{node}: dockerd exited while starting: {tail} (full log: {log})")
            time.sleep(0.05)
    finally:
        c.close()
    raise ShoalError(f"{node}: dockerd did not answer on {socket} within {timeout:.0f}s (log: {log})")


def get(
    url: str, ca: str = "", cert: tuple[str, str] | None = None, timeout: float = 1.0, token: str = ""
) -> requests.Response:
    """One GET, checking the server against `ca` (and showing `cert`, and the registry `token`) on a secure
    cluster."""
    headers = {"X-Consul-Token": token} if token else None
    return requests.get(url, timeout=timeout, verify=ca or True, cert=cert, headers=headers)


def wait_http(
    url: str,
    pid: int,
    log: Path,
    name: str,
    timeout: float = 30.0,
    ca: str = "",
    cert: tuple[str, str] | None = None,
    token_file: str = "",
) -> None:
    """Polls `url` until it answers 200; fails at once if the process died."""
    token = Path(token_file).read_text().strip() if token_file else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(url, ca, cert, token=token).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not host.pid_alive(pid):
            raise ShoalError(f"{name} exited while starting: {' | '.join(log_tail(log))} (full log: {log})")
        time.sleep(0.05)
    raise ShoalError(f"{name} did not answer {url} within {timeout:.0f}s (log: {log})")


def load_images(socket: Path, archive: bytes, node: str) -> list[str]:
    """`docker load` of the archive; returns the tags loaded."""
    c = client(f"unix://{socket}", timeout=120.0)
    try:
        loaded = []
        for chunk in c.load_image(archive):
            if "error" in chunk:
                raise ShoalError(f"{node}: loading images failed: {chunk['error']}")
            stream = chunk.get("stream", "")
            if stream.startswith("Loaded image:"):
                loaded.append(stream.split(":", 1)[1].strip())
        return loaded
    finally:
        c.close()


def info(url: str, timeout: float = 3.0, certs: Path | None = None) -> dict:
    c = client(url, timeout=timeout, certs=certs)
    try:
        return c.info()
    finally:
        c.close()
