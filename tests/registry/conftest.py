"""A real `shoal registry` process per store (SQLite file, real etcd), reached over loopback; and the
hypothesis profiles the fuzzers run under."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import consul
import pytest
from hypothesis import HealthCheck, settings

from shoal.registry.etcd_server import free_port
from tests.etcd import single_etcd

T = TypeVar("T")

# The fuzzers' budgets: `ci` keeps all registry fuzzing near a minute; SHOAL_FUZZ_EXAMPLES raises it
# (benchmarks/safety.py runs them so). No example database: every run starts from fresh examples.
_EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "0") or 0)
settings.register_profile(
    "registry-fuzz",
    max_examples=_EXAMPLES or 300,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


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


def start_registry(
    store: str, *extra: str, http_port: int = 0, env: dict[str, str] | None = None
) -> RegistryProc:
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
        # registries sharing an etcd elect a leader; these tests are of the Consul API, not of failover,
        # so a loaded machine's stalls must not pass the lead around between their assertions
        *(["--leader-ttl", "5"] if store.startswith("etcd://") else []),
        *extra,
    ]
    proc = subprocess.Popen(
        argv,
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env={**os.environ, **env} if env else None,
    )
    deadline = time.monotonic() + 120  # on a loaded 2-core machine, importing and starting took over 60 s
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


@contextlib.contextmanager
def sqlite_registry() -> Iterator[RegistryProc]:
    """A real `shoal registry` over a fresh SQLite file, stopped afterwards (a module's fixture, mostly)."""
    r = start_registry(f"sqlite://{tempfile.mkdtemp()}/registry.db")
    try:
        yield r
    finally:
        stop_registry(r)


@contextlib.contextmanager
def both_stores(etcd_endpoint: str, db: Path) -> Iterator[dict[str, RegistryProc]]:
    """A registry over SQLite (at `db`) and one over the etcd at `etcd_endpoint`, by store name: for tests
    that hold both stores to one behaviour."""
    procs = {"sqlite": start_registry(f"sqlite://{db}"), "etcd": start_registry(f"etcd://{etcd_endpoint}")}
    try:
        yield procs
    finally:
        for p in procs.values():
            stop_registry(p)


@pytest.fixture(scope="module")
def registries(etcd_endpoint: str, tmp_path_factory, request) -> Iterator[dict[str, RegistryProc]]:
    """One registry on each store for the whole module (the modules holding both stores to one
    behaviour, whose tests leave what they wrote under names of their own)."""
    name = request.module.__name__.rpartition(".")[2]
    with both_stores(etcd_endpoint, tmp_path_factory.mktemp(name) / "registry.db") as procs:
        yield procs


@pytest.fixture(params=["sqlite", "etcd"])
def reg(request, registries: dict[str, RegistryProc]) -> RegistryProc:
    """Each test once on each store, over the module's two registries."""
    return registries[request.param]


def on_each_store(
    registries: dict[str, RegistryProc], run: Callable[[RegistryProc], T], timeout: float
) -> dict[str, T]:
    """`run` on every store's registry at once (for the slow tests: a TTL running out takes as long on
    both), each store's result by name; the first failure re-raised, naming its store."""
    outcome: dict[str, T | BaseException] = {}

    def one(kind: str, r: RegistryProc) -> None:
        try:
            outcome[kind] = run(r)
        except BaseException as e:  # reported by the main thread
            outcome[kind] = e

    threads = [threading.Thread(target=one, args=item) for item in registries.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    for kind, got in outcome.items():
        if isinstance(got, BaseException):
            raise AssertionError(f"{kind}: {got}") from got
    assert set(outcome) == set(
        registries
    ), f"no answer within {timeout:g}s from {set(registries) - set(outcome)}"
    return outcome  # type: ignore[return-value]


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


# --- ACLs (tests/registry/test_acl.py) ---------------------------------------------------------------

ACL_MANAGEMENT = "6f1e3c2a-3b7d-4e59-9a43-0c1d2e3f4a5b"  # the initial management token of `acl_registry`


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def acl_registry(request) -> Iterator[RegistryProc]:
    """A registry with ACLs on (default deny) and ACL_MANAGEMENT as its initial management token, given
    the way an operator would: in CONSUL_ACL_INITIAL_MANAGEMENT, not on the command line."""
    if request.param == "sqlite":
        store = f"sqlite://{tempfile.mkdtemp()}/registry.db"
    else:
        store = "etcd://" + request.getfixturevalue("etcd_endpoint")
    r = start_registry(store, "--acl", env={"CONSUL_ACL_INITIAL_MANAGEMENT": ACL_MANAGEMENT})
    try:
        yield r
    finally:
        stop_registry(r)
