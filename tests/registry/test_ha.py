"""Several `shoal manager --store etcd://` processes over one real etcd: one leader, elected; the
registry's cluster-wide loops on it only; failover when it is killed -9.

Each manager runs as a real process on its own loopback address (127.0.0.2, .3, .4) with the Consul API
over HTTPS, DNS, and the Docker API (plain, on loopback); there are no engines, which these tests do
not need. Deadlines are generous (a loaded 2-core machine); the failover's speed is benchmarks/ha.py's.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal import pki
from shoal.registry.etcd_server import free_port
from tests.etcd import single_etcd

TOKEN = "0c0ffee0-0000-4000-8000-00000000beef"
WITHIN = 30.0


@dataclass
class ManagerProc:
    n: int
    address: str
    docker_port: int
    https_port: int
    dns_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return f"m{self.n}"

    @property
    def consul(self) -> str:
        return f"https://{self.address}:{self.https_port}"


@dataclass
class Managers:
    etcd: str
    certs: Path
    ctx: ssl.SSLContext
    procs: dict[int, ManagerProc]

    def start(self, n: int) -> ManagerProc:
        address = f"127.0.0.{n + 1}"
        old = self.procs.get(n)
        docker_port, https_port, dns_port = (
            (old.docker_port, old.https_port, old.dns_port)
            if old
            else (free_port(), free_port(), free_port())
        )
        log = Path(tempfile.mkdtemp(prefix="shoal-ha-")) / "manager.log"
        argv = [
            sys.executable, "-m", "shoal", "manager",
            "--store", f"etcd://{self.etcd}",
            "--listen", f"{address}:{docker_port}", "--insecure-tcp",
            "--registry-https", f"{address}:{https_port}",
            "--registry-tlscert", str(self.certs / "cert.pem"),
            "--registry-tlskey", str(self.certs / "key.pem"),
            "--registry-cacert", str(self.certs / "ca.pem"),
            "--dns", f"{address}:{dns_port}",
            "--node", f"m{n}", "--advertise", address, "--acl", "--leader-ttl", "1",
        ]  # fmt: skip
        env = {**os.environ, "CONSUL_HTTP_TOKEN": TOKEN, "CONSUL_ACL_INITIAL_MANAGEMENT": TOKEN}
        proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115
        m = ManagerProc(n, address, docker_port, https_port, dns_port, proc, log)
        self.procs[n] = m
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"manager {n} exited: {log.read_text()}")
            try:
                urllib.request.urlopen(f"http://{address}:{docker_port}/_ping", timeout=1).read()
                return m
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"manager {n} did not come up: {log.read_text()}")

    def kill(self, n: int) -> None:
        p = self.procs[n].proc
        p.send_signal(signal.SIGKILL)
        p.wait()

    def live(self) -> list[ManagerProc]:
        return [m for m in self.procs.values() if m.proc.poll() is None]

    def consul(self, m: ManagerProc, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(m.consul + path, data=data, method=method)
        req.add_header("X-Consul-Token", TOKEN)
        with urllib.request.urlopen(req, timeout=10, context=self.ctx) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def docker(self, m: ManagerProc, path: str) -> Any:
        with urllib.request.urlopen(f"http://{m.address}:{m.docker_port}{path}", timeout=10) as r:
            return json.loads(r.read())


def until(cond: Callable[[], Any], what: str, within: float = WITHIN) -> Any:
    end = time.monotonic() + within
    last: Any = None
    while time.monotonic() < end:
        try:
            last = cond()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"not within {within:.0f}s: {what} (last: {last!r})")


@pytest.fixture
def managers() -> Iterator[Managers]:
    d = Path(tempfile.mkdtemp(prefix="shoal-ha-certs-"))
    ca = pki.make_ca("shoal test CA")
    pki.issue(ca, "registry", ["127.0.0.2", "127.0.0.3", "127.0.0.4"], server=True).write(d, ca.cert)
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    with single_etcd() as ep:
        ms = Managers(ep, d, ctx, {})
        try:
            for n in (1, 2, 3):
                ms.start(n)
            yield ms
        finally:
            for m in ms.procs.values():
                if m.proc.poll() is None:
                    m.proc.kill()
                    m.proc.wait()


def roles(ms: Managers) -> dict[str, list[list[str]]]:
    out = {}
    for m in ms.live():
        status = ms.docker(m, "/info")["SystemStatus"]
        out[m.name] = [p for p in status if p[0] in ("Role", "Primary")]
    return out


def leader_of(ms: Managers) -> ManagerProc:
    """The one live manager every live manager names as leader (Consul's /v1/status/leader)."""

    def agreed() -> ManagerProc | None:
        answers = {ms.consul(m, "GET", "/v1/status/leader") for m in ms.live()}
        if len(answers) != 1 or "" in answers:
            return None
        (addr,) = answers
        return next((m for m in ms.live() if addr.startswith(m.address + ":")), None)

    return until(agreed, "every live manager names one live leader")


def test_three_managers_agree_on_one_leader_and_docker_info_names_primary_and_replicas(managers):
    ms = managers
    leader = leader_of(ms)
    peers = ms.consul(leader, "GET", "/v1/status/peers")
    assert sorted(peers) == sorted(f"{m.address}:8300" for m in ms.live())
    r = until(
        lambda: (r := roles(ms)) and sum(v[0] == ["Role", "primary"] for v in r.values()) == 1 and r,
        "1 primary",
    )
    assert r[leader.name] == [["Role", "primary"]]
    for name, pairs in r.items():
        if name != leader.name:
            assert pairs == [["Role", "replica"], ["Primary", f"{leader.address}:{leader.docker_port}"]]


def test_the_leader_killed_another_leads_and_a_ttl_check_renewed_through_a_follower_never_flaps(managers):
    ms = managers
    leader = leader_of(ms)
    a, b = [m for m in ms.live() if m is not leader]
    node = {"Node": "web1", "Address": "10.0.0.9"}
    ms.consul(
        a,
        "PUT",
        "/v1/catalog/register",
        {**node, "Check": {"CheckID": "alive", "Name": "alive", "Status": "passing", "TTL": "3s"}},
    )

    def status() -> str:
        (c,) = [c for c in ms.consul(b, "GET", "/v1/health/node/web1") if c["CheckID"] == "alive"]
        return c["Status"]

    renew = {**node, "Check": {"CheckID": "alive", "Name": "alive", "Status": "passing", "TTL": "3s"}}
    seen: list[str] = []
    end = time.monotonic() + 6  # two TTLs, renewed only through the follower a: the leader times it
    while time.monotonic() < end:
        ms.consul(a, "PUT", "/v1/catalog/register", renew)
        seen.append(status())
        time.sleep(0.5)
    assert set(seen) == {"passing"}

    ms.kill(leader.n)
    new = leader_of(ms)
    assert new is not leader
    end = time.monotonic() + 6  # across the takeover, still renewed through a survivor: never critical
    survivor = a if a.proc.poll() is None else b
    while time.monotonic() < end:
        ms.consul(survivor, "PUT", "/v1/catalog/register", renew)
        seen.append(status())
        time.sleep(0.5)
    assert set(seen) == {"passing"}
    # and once nobody renews it, the new leader's timer turns it critical
    until(lambda: status() == "critical", "critical one TTL after the renewals stop")


def test_the_managers_service_names_the_live_managers_only(managers):
    ms = managers
    leader_of(ms)

    def passing_on() -> set[str]:
        rows = ms.consul(ms.live()[0], "GET", "/v1/health/service/manager?passing=1")
        return {r["Service"]["Address"] for r in rows}

    until(lambda: passing_on() == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, "three managers passing")
    dns = ms.live()[0]
    out = subprocess.run(
        ["dig", "+short", "-p", str(dns.dns_port), f"@{dns.address}", "manager.service.shoal", "A"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(out) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    ms.kill(2)
    until(lambda: passing_on() == {"127.0.0.2", "127.0.0.4"}, "the killed manager (127.0.0.3) left out")
    dns = ms.procs[1]
    out = subprocess.run(
        ["dig", "+short", "-p", str(dns.dns_port), f"@{dns.address}", "manager.service.shoal", "SRV"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # SRV: priority weight port target; the port is each live manager's Docker API
    assert sorted(int(line.split()[2]) for line in out) == sorted(
        [ms.procs[1].docker_port, ms.procs[3].docker_port]
    )
    ms.start(2)
    until(lambda: passing_on() == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, "manager 2 back in the service")


def test_a_lock_delay_set_by_one_manager_holds_on_every_other(managers):
    ms = managers
    leader_of(ms)
    a, b = ms.procs[1], ms.procs[2]
    sid = ms.consul(a, "PUT", "/v1/session/create", {"LockDelay": "10s", "TTL": "10s"})["ID"]
    assert ms.consul(a, "PUT", f"/v1/kv/lock?acquire={sid}", "x") is True
    assert ms.consul(a, "PUT", f"/v1/session/destroy/{sid}") is True
    other = ms.consul(b, "PUT", "/v1/session/create", {"TTL": "10s"})["ID"]
    # Consul: for the lock delay after a session is invalidated, no other session may acquire its locks
    assert ms.consul(b, "PUT", f"/v1/kv/lock?acquire={other}", "y") is False


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--acl-initial-management", "abc"], "--acl-initial-management needs --acl"),
        (["--acl", "--acl-initial-management", "a b"], "one printable word of at most 256 characters"),
        (["--acl", "--acl-initial-management", "x" * 300], "one printable word of at most 256 characters"),
        (["--registry-https", "127.0.0.2:8501"], "need --store"),
    ],
)
def test_a_managers_registry_flags_are_checked_as_shoal_registry_checks_them(flags, says):
    """The same words as `shoal registry` gives, before anything starts (no etcd is reached here)."""
    argv = [sys.executable, "-m", "shoal", "manager", "--insecure-tcp", "--listen", "127.0.0.1:0"]
    if "--registry-https" not in flags:
        argv += ["--store", "etcd://127.0.0.1:1", "--advertise", "127.0.0.2"]
    out = subprocess.run([*argv, *flags], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and says in out.stderr, out.stderr
