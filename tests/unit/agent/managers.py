"""A real `shoal manager` on loopback with its join listener, for the agent's join and renewal tests: the
manager over a registry these tests start, with `shoal init`'s certificates."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shoal.registry.etcd_server import free_port
from tests.registry.conftest import RegistryProc

SHOAL = [sys.executable, "-m", "shoal"]


def wait_until(what: str, ok, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Until `ok()`, or an AssertionError naming `what` (at once if `proc` exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited {proc.returncode}")
        if ok():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g} s")


@dataclass
class ManagerProc:
    api: int
    join: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def join_url(self) -> str:
        return f"https://127.0.0.1:{self.join}"

    def token(self, ttl: float = 3600) -> str:
        return subprocess.run(
            [*SHOAL, "token", "create", "-q", "--ttl", f"{ttl:g}", "-H", f"tcp://127.0.0.1:{self.api}"],
            check=True, capture_output=True, text=True, env={**os.environ, "DOCKER_TLS_VERIFY": ""},
        ).stdout.strip()  # fmt: skip

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_manager(
    tls: Path,
    registry: RegistryProc,
    *,
    advertised: str = "",
    log: Path | None = None,
    api: int = 0,
    join_port: int = 0,
) -> ManagerProc:
    """A manager on 127.0.0.1 (`api`, `join_port`: free ports unless given) that tells joining agents the
    registry is at `advertised` (default: the registry's own address)."""
    api, join_port = api or free_port(), join_port or free_port()
    log = log or Path(tempfile.mkdtemp(prefix="shoal-manager-")) / "manager.log"
    proc = subprocess.Popen(
        [
            *SHOAL,
            "manager",
            "--registry",
            registry.url,
            "--listen",
            f"127.0.0.1:{api}",
            "--insecure-tcp",
            "--join-listen",
            f"127.0.0.1:{join_port}",
            "--join-cert",
            str(tls / "join/cert.pem"),
            "--join-key",
            str(tls / "join/key.pem"),
            "--node-ca",
            str(tls / "node-ca.pem"),
            "--node-ca-key",
            str(tls / "node-ca-key.pem"),
            "--advertise-registry",
            advertised or registry.url,
        ],  # fmt: skip
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{api}/_ping", timeout=1).read() == b"OK"
        except OSError:
            return False

    wait_until(f"manager on {api} (log {log})", up, proc=proc)
    return ManagerProc(api, join_port, proc, log)
