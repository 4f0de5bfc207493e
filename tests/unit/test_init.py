"""`shoal init`: a cluster's CAs and certificates in one directory, never replaced; engine certificates."""

from __future__ import annotations

import stat

from click.testing import CliRunner
from cryptography import x509

from shoal.cli import cli
from shoal.cli.init import init


def _sans(path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(v) for v in ext.get_values_for_type(x509.IPAddress)}
    return ips | set(ext.get_values_for_type(x509.DNSName))


def _issuer(path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).issuer.rfc4514_string()


def test_init_makes_both_cas_and_the_services_certificates(tmp_path):
    d = tmp_path / "shoal"
    r = CliRunner().invoke(cli, ["init", "--dir", str(d), "--name", "10.0.0.1", "--name", "mgr.example"])
    assert r.exit_code == 0, r.output
    for ca in ("control-ca", "node-ca"):
        assert (d / f"{ca}.pem").exists()
        assert stat.S_IMODE((d / f"{ca}-key.pem").stat().st_mode) == 0o600
    assert {"10.0.0.1", "mgr.example", "127.0.0.1"} <= _sans(d / "manager" / "cert.pem")
    assert {"10.0.0.1", "mgr.example"} <= _sans(d / "registry" / "cert.pem")
    # the Docker side (control CA) and the node side (node CA) are apart
    assert "control" in _issuer(d / "manager" / "cert.pem") and "control" in _issuer(d / "admin" / "cert.pem")
    assert "node" in _issuer(d / "registry" / "cert.pem") and "node" in _issuer(d / "join" / "cert.pem")
    assert f"DOCKER_CERT_PATH={d / 'admin'}" in r.output and "shoal token create" in r.output


def test_init_never_replaces_a_ca(tmp_path):
    d = tmp_path / "shoal"
    CliRunner().invoke(init, ["--dir", str(d)])
    before = (d / "control-ca.pem").read_bytes()
    r = CliRunner().invoke(cli, ["init", "--dir", str(d)])
    assert r.exit_code != 0
    assert "already holds a cluster CA" in str(r.exception) + r.output
    assert (d / "control-ca.pem").read_bytes() == before


def test_init_engine_on_an_existing_dir_adds_only_that_certificate(tmp_path):
    d = tmp_path / "shoal"
    CliRunner().invoke(init, ["--dir", str(d)])
    before = (d / "manager" / "cert.pem").read_bytes()
    r = CliRunner().invoke(init, ["--dir", str(d), "--engine", "node1=10.0.0.11,node1.example"])
    assert r.exit_code == 0, r.output
    assert {"10.0.0.11", "node1.example", "node1"} <= _sans(d / "engines" / "node1" / "cert.pem")
    assert "control" in _issuer(d / "engines" / "node1" / "cert.pem")
    assert (d / "manager" / "cert.pem").read_bytes() == before


def test_init_engine_without_a_ca_and_a_bad_engine_argument_say_what_to_do(tmp_path):
    r = CliRunner().invoke(init, ["--dir", str(tmp_path / "none"), "--engine", "node1"])
    assert r.exit_code != 0 and "NODE=ADDRESS" in str(r.exception)
