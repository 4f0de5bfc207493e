"""The cluster's certificates: real TLS handshakes on loopback between contexts made from them."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from cryptography import x509

from shoal import pki
from shoal.errors import BadRequest, PermissionDenied


def _serve_once(ctx: ssl.SSLContext) -> tuple[int, threading.Thread, dict]:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    seen: dict = {}

    def run() -> None:
        conn, _ = srv.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            seen["error"] = e
        finally:
            srv.close()

    t = threading.Thread(target=run)
    t.start()
    return port, t, seen


def _talk(port: int, ctx: ssl.SSLContext, hostname: str = "127.0.0.1") -> bytes:
    """Connect, shake hands, read what the server says (with TLS 1.3 a refused client learns it on read)."""
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as s,
    ):
        got = s.recv(2)
        if not got:
            raise ConnectionResetError("the server closed the connection")
        return got


def _files(tmp_path, name: str, pair: pki.Pair, ca: pki.Pair):
    d = pair.write(tmp_path / name, ca.cert)
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


def test_a_client_with_a_certificate_of_the_cluster_is_let_in(tmp_path):
    ca = pki.make_ca("t")
    server = pki.issue(ca, "manager", ["127.0.0.1", "localhost"], server=True)
    client = pki.issue(ca, "admin", client=True)
    sca, scert, skey = _files(tmp_path, "server", server, ca)
    cca, ccert, ckey = _files(tmp_path, "client", client, ca)
    port, t, seen = _serve_once(pki.server_context(sca, scert, skey))
    assert _talk(port, pki.client_context(cca, ccert, ckey)) == b"ok"
    t.join()
    assert dict(x[0] for x in seen["peer"]["subject"])["commonName"] == "admin"


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_a_client_without_the_clusters_certificate_is_refused_at_the_handshake(tmp_path, who):
    ca = pki.make_ca("t")
    server = pki.issue(ca, "manager", ["127.0.0.1"], server=True)
    sca, scert, skey = _files(tmp_path, "server", server, ca)
    port, t, seen = _serve_once(pki.server_context(sca, scert, skey))
    if who == "another CA":
        other = pki.make_ca("other")
        _, ccert, ckey = _files(tmp_path, "client", pki.issue(other, "mallory", client=True), other)
        ctx = pki.client_context(sca, ccert, ckey)
    else:
        ctx = pki.client_context(sca)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _talk(port, ctx)
    t.join()
    assert "error" in seen


def test_a_server_certificate_names_every_address_it_is_reached_by(tmp_path):
    ca = pki.make_ca("t")
    pair = pki.issue(ca, "node1", ["10.99.1.11", "node1", "127.0.0.1"], server=True)
    cert = x509.load_pem_x509_certificate(pair.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.99.1.11", "127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["node1"]
    # and a client checking the name refuses a server reached by an address the certificate lacks
    sca, scert, skey = _files(tmp_path, "server", pair, ca)
    port, t, _ = _serve_once(pki.server_context(sca, scert, skey, clients="none"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _talk(port, pki.client_context(sca), hostname="10.0.0.9")
    t.join()


def test_a_node_certificate_comes_from_its_own_request_and_its_key_stays_with_it(tmp_path):
    ca = pki.make_ca("t")
    key = pki.new_key()
    req = pki.read_csr(pki.make_csr(key, "node2", ["10.99.1.12", "node2"]))
    assert req.common_name == "node2" and req.sans == ("10.99.1.12", "node2")
    cert = pki.sign_request(ca, req)
    assert pki.common_name(cert) == "node2"
    assert (
        x509.load_pem_x509_certificate(cert).public_key().public_numbers()
        == key.public_key().public_numbers()
    )
    assert pki.expires(cert) - pki.issued(cert) == pytest.approx(pki.CERT_DAYS * 86400 + 300, abs=5)


def test_garbage_and_tampered_requests_are_refused():
    with pytest.raises(BadRequest, match="not a PEM CSR"):
        pki.read_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(BadRequest):
        pki.read_csr(b"hello")


def test_a_token_pins_the_ca_by_its_fingerprint():
    ca, other = pki.make_ca("a"), pki.make_ca("b")
    pin = pki.fingerprint(ca.cert)
    assert pin.startswith("sha256:") and len(pin) == 71
    pki.check_pinned(ca.cert, pin)
    with pytest.raises(PermissionDenied, match="not the cluster the token is for"):
        pki.check_pinned(other.cert, pin)


def test_keys_are_written_readable_by_their_owner_only(tmp_path):
    ca = pki.make_ca("t")
    d = pki.issue(ca, "admin", client=True).write(tmp_path / "admin", ca.cert)
    assert (d / "key.pem").stat().st_mode & 0o777 == 0o600
    assert {p.name for p in d.iterdir()} == {"ca.pem", "cert.pem", "key.pem"}
