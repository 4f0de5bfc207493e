"""A dev cluster's certificates, made at `dev up` (secure by default; `--insecure` makes none): the same
directory `shoal init` makes for real hosts (shoal.certs: two CAs, so what a node holds never reaches an
engine), under `<cluster root>/tls/`, plus an engine certificate per node. DOCKER_CERT_PATH is `tls/admin`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from shoal import certs, pki
from shoal.certs import Files, ca_key
from shoal.dev.layout import ClusterLayout, NodeLayout

__all__ = ["Files", "ca_key", "make_certs"]


def tls_root(layout: ClusterLayout) -> Path:
    return layout.root / "tls"


def cert_dir(layout: ClusterLayout) -> certs.CertDir:
    return certs.CertDir(tls_root(layout))


def control_ca(layout: ClusterLayout) -> Path:
    return cert_dir(layout).control_ca


def node_ca(layout: ClusterLayout) -> Path:
    return cert_dir(layout).node_ca


def admin(layout: ClusterLayout) -> Files:
    return cert_dir(layout).admin


def manager(layout: ClusterLayout) -> Files:
    """The manager's Docker API listener, and its client certificate to the engines (control CA)."""
    return cert_dir(layout).manager


def join(layout: ClusterLayout) -> Files:
    """The manager's join listener (node CA): what a joining agent checks against its token's pin."""
    return cert_dir(layout).join


def registry(layout: ClusterLayout) -> Files:
    return cert_dir(layout).registry


def engine(layout: ClusterLayout, node: NodeLayout) -> Files:
    return cert_dir(layout).engine(node.name)


def image_registry(layout: ClusterLayout) -> Files:
    """The image registry's HTTPS listener (node CA, for the gateway's address)."""
    return Files(tls_root(layout) / "image-registry")


def registry_trust(node: NodeLayout, layout: ClusterLayout) -> Path:
    """The node's engine's certs.d entry for the image registry (dockerd's own layout: ca.crt, client.cert,
    client.key), seen by that engine only, at /etc/docker/certs.d/GATEWAY:5000."""
    return node.etc_docker_dir / "certs.d" / layout.image_registry


def management_token(layout: ClusterLayout) -> Path:
    """The registry's management token (a Consul ACL secret): the manager's, and the operator's by
    `dev env`; made at `up`, readable by root only."""
    return tls_root(layout) / "management-token"


def make_certs(layout: ClusterLayout) -> None:
    """Both CAs and every certificate the cluster's own processes use (agents get theirs by joining)."""
    d = cert_dir(layout)
    if d.exists():  # left by an `up` that failed part way: nothing running trusts it yet
        shutil.rmtree(d.root)
    # the manager's, registry's and join listener's certificates name every address they are served on
    certs.make(d, layout.name, [layout.gateway, *(m.address for m in layout.managers)])
    for n in layout.nodes:
        certs.make_engine(d, n.name, [n.address])
    fd = os.open(management_token(layout), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(uuid.uuid4()))
    _make_image_registry_certs(layout, d)


def _make_image_registry_certs(layout: ClusterLayout, d: certs.CertDir) -> None:
    """The image registry speaks mutual TLS: its server certificate and each engine's client certificate
    come from the node CA (what a node holds: a key there must never reach an engine, which trusts only
    the control CA), and it also lets in the control CA's admin certificate (the operator, `dev up`)."""
    nodes = certs.load_ca(d.node_ca)
    pki.issue(nodes, "image-registry", [layout.gateway], server=True, days=certs.SERVICE_DAYS).write(
        image_registry(layout).dir, nodes.cert
    )
    for n in layout.nodes:
        trust = registry_trust(n, layout)
        pair = pki.issue(nodes, f"{n.name} engine", client=True, days=certs.SERVICE_DAYS)
        pair.write(trust, nodes.cert)  # ca.pem, cert.pem, key.pem; then dockerd's names for them
        (trust / "ca.pem").rename(trust / "ca.crt")
        (trust / "cert.pem").rename(trust / "client.cert")
        (trust / "key.pem").rename(trust / "client.key")
