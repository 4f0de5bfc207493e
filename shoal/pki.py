"""The cluster's certificates, made with the `cryptography` library (never by shelling out to openssl).

The cluster's CAs (shoal.certs: a control CA and a node CA) sign every certificate: the manager's (server
and client: it serves the Docker API and calls the engines), each engine's (server), the registry's
(server), each agent's node certificate (client and server, from the agent's own CSR: its key never leaves
the node) and the operator's admin certificate (client). Every certificate names what it is reached by (IP
and DNS SANs), so no client meets classic Swarm's IP-SAN errors. Keys are ECDSA P-256: small, fast, and
what Go's TLS (dockerd, the docker CLI) and Python's ssl both speak.

Files follow Docker's layout so DOCKER_CERT_PATH works as is: a directory holding `ca.pem`, `cert.pem`
and `key.pem` (keys written 0600).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.errors import BadRequest, PermissionDenied

CA_DAYS = 3650
CERT_DAYS = 90  # short-lived: agents renew at two thirds of their life
Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate and its key, as PEM."""

    cert: bytes
    key: bytes

    def write(self, directory: Path, ca: bytes) -> Path:
        """Docker's layout: ca.pem, cert.pem, key.pem (0600) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.pem").write_bytes(ca)
        (directory / "cert.pem").write_bytes(self.cert)
        key = directory / "key.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        return directory


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _sans(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def make_ca(name: str) -> Pair:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} shoal CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def _load_ca(ca: Pair) -> tuple[x509.Certificate, Key]:
    cert = x509.load_pem_x509_certificate(ca.cert)
    key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadRequest("the cluster CA key is not an EC key")
    return cert, key


def _sign(
    ca: Pair,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    sans: Iterable[str],
    server: bool,
    client: bool,
    days: int,
) -> bytes:
    ca_cert, ca_key = _load_ca(ca)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    names = _sans(sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def issue(
    ca: Pair, common_name: str, sans: Iterable[str] = (), *, server: bool = False, client: bool = False,
    days: int = CERT_DAYS,
) -> Pair:  # fmt: skip
    """A new key and a certificate for it, signed by the CA (for what the cluster makes itself)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = _sign(ca, subject, key.public_key(), sans, server, client, days)
    return Pair(cert, key_pem(key))


def make_csr(key: Key, common_name: str, sans: Iterable[str]) -> bytes:
    """What an agent sends to join: its name and addresses, signed with a key that stays on its node."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    names = _sans(sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class Request:
    """A CSR as read: who it says it is and what it wants to be reached by."""

    common_name: str
    sans: tuple[str, ...]
    public_key: ec.EllipticCurvePublicKey


def read_csr(pem: bytes) -> Request:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as e:
        raise BadRequest(f"the certificate request is not a PEM CSR: {e}") from None
    if not csr.is_signature_valid:
        raise BadRequest("the certificate request's signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadRequest("the certificate request must carry an EC (P-256) key")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise BadRequest("the certificate request must name exactly one common name (the node)")
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(v) for v in ext.get_values_for_type(x509.IPAddress)) + tuple(
            ext.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        sans = ()
    return Request(str(cns[0].value), sans, key)


def sign_request(ca: Pair, request: Request, days: int = CERT_DAYS) -> bytes:
    """A node certificate for a checked request: its name, its SANs, client and server use."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)])
    return _sign(ca, subject, request.public_key, request.sans, True, True, days)


def fingerprint(cert_pem: bytes) -> str:
    """sha256 of the DER form, as `sha256:HEX` (what a join token pins the CA by)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def expires(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def issued(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_before_utc.timestamp()


def check_pinned(ca_pem: bytes, pin: str) -> None:
    """The CA a joining agent was shown is the one its token names (no trust on first use)."""
    if fingerprint(ca_pem) != pin:
        raise PermissionDenied(
            f"the manager's CA is {fingerprint(ca_pem)}, not {pin} as the join token says: this is not "
            "the cluster the token is for (or someone is in between); get a token from its own manager "
            "with `shoal token create`"
        )


# --- TLS contexts ----------------------------------------------------------------------------------


CLIENTS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def server_context(ca: Path, cert: Path, key: Path, *, clients: str = "required") -> ssl.SSLContext:
    """A listener's context: its certificate, and (by default) a client certificate signed by the CA
    required at the handshake, as dockerd's --tlsverify does ("optional": checked when one is shown)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = CLIENTS[clients]
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A caller's context: the server must show a certificate of the cluster's CA (with the right SAN);
    with `cert`/`key`, the caller shows its own."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx
