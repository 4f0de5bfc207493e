"""A real `shoal registry` process per store (SQLite file, real etcd), reached over loopback."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import consul
import pytest

from shoal.registry.etcd_server import free_port
from tests.etcd import single_etcd


@dataclass
class RegistryProc:
    http_port: int
    dns_port: int
    store: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self) -> consul.Consul:
        return consul.Consul(host="127.0.0.1", port=self.http_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_registry(store: str, *extra: str, http_port: int = 0) -> RegistryProc:
    http_port, dns_port = http_port or free_port(), free_port()
    log = Path(tempfile.mkdtemp()) / "registry.log"
    argv = [
        sys.executable,
        "-m",
        "shoal",
        "registry",
        "--store",
        store,
        "--http",
        f"127.0.0.1:{http_port}",
        "--dns",
        f"127.0.0.1:{dns_port}",
        "--node",
        "mgr",
        "--enable-script-checks",
        *extra,
    ]
    proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"registry exited: {log.read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/status/leader", timeout=0.5).read()
            return RegistryProc(http_port, dns_port, store, proc, log)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"registry did not come up: {log.read_text()}")


def stop_registry(r: RegistryProc) -> None:
    r.proc.terminate()
    try:
        r.proc.wait(10)
    except subprocess.TimeoutExpired:
        r.proc.kill()
        r.proc.wait()


@pytest.fixture(scope="module")
def etcd_endpoint() -> Iterator[str]:
    with single_etcd() as ep:
        yield ep


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def registry(request) -> Iterator[RegistryProc]:
    if request.param == "sqlite":
        store = f"sqlite://{tempfile.mkdtemp()}/registry.db"
    else:
        store = "etcd://" + request.getfixturevalue("etcd_endpoint")
    r = start_registry(store)
    try:
        yield r
    finally:
        stop_registry(r)
