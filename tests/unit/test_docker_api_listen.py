"""Where `shoal manager` agrees to serve the Docker API (issue 13): dockerd's rule, that the API is root on
every node and so never plain on a network. Without TLS it is refused unless asked for with
`--insecure-tcp`, and then only on a loopback address; each refusal says the way out. Driven through the
real command line, as an operator meets it: the refusals come before anything starts (no registry is
reached), and loopback with the flag serves."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from shoal.registry.etcd_server import free_port
from tests.registry.conftest import RegistryProc, sqlite_registry

MANAGER = [sys.executable, "-m", "shoal", "manager"]
NO_TLS = "refusing to serve the Docker API without TLS"


def _refused(*flags: str) -> subprocess.CompletedProcess[str]:
    # the registry named is a closed port: a refusal must come before the manager tries to reach it
    return subprocess.run(
        [*MANAGER, "--registry", "127.0.0.1:1", *flags], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("flags", [[], ["--listen", "127.0.0.1:2375"], ["--listen", "0.0.0.0:2375"]])
def test_plain_tcp_without_the_insecure_flag_is_refused_naming_both_ways_out(flags):
    out = _refused(*flags)
    assert out.returncode == 2, out.stderr
    assert NO_TLS in out.stderr, out.stderr
    # the way out: dockerd's TLS flags, or the explicit flag (loopback only)
    assert "--tlsverify --tlscacert --tlscert --tlskey" in out.stderr, out.stderr
    assert "--insecure-tcp for plain TCP on a loopback address" in out.stderr, out.stderr
    assert "unreachable" not in out.stderr, out.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "10.20.30.40", "192.168.1.1"])
def test_the_insecure_flag_on_an_address_other_than_loopback_is_refused(host):
    out = _refused("--insecure-tcp", "--listen", f"{host}:2375")
    assert out.returncode == 2, out.stderr
    assert f"refusing plain TCP on {host}" in out.stderr, out.stderr
    assert "served on loopback only (--listen 127.0.0.1:2375), or use --tlsverify" in out.stderr, out.stderr
    assert "unreachable" not in out.stderr, out.stderr


def test_a_join_listener_without_its_certificates_is_refused():
    out = _refused("--insecure-tcp", "--listen", "127.0.0.1:2375", "--join-listen", "127.0.0.1:2377")
    assert out.returncode == 2, out.stderr
    assert "--join-listen needs --join-cert, --join-key and --node-ca-key" in out.stderr, out.stderr


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as r:
        yield r


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_insecure_flag_on_loopback_serves_the_docker_api(registry, host, tmp_path):
    port = free_port()
    log = tmp_path / "manager.log"
    proc = subprocess.Popen(
        [*MANAGER, "--registry", registry.url, "--insecure-tcp", "--listen", f"{host}:{port}"],
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),  # noqa: SIM115
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # blocks until the manager serves, or exits (EOF)
        assert ready.strip() == f"manager ready: tcp://{host}:{port}", log.read_text()
        ping = urllib.request.urlopen(f"http://127.0.0.1:{port}/_ping", timeout=30).read()
        assert ping == b"OK"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
