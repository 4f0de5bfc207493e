"""A dev cluster's certificates, made at `dev up` (secure by default; `--insecure` makes none).

Two CAs, so that what a node holds can never reach an engine:
- the control CA signs what speaks the Docker API: each engine's server certificate, the manager's (server,
  and client to the engines) and the operator's admin certificate. Engines trust only it, so only the
  manager and the admin certificate get in (`docker -H tcp://NODE:2376` with anything else fails).
- the node CA signs the registry's server certificate, the manager's join listener, and each agent's node
  certificate (from the agent's own CSR at `shoal agent --join`). It is CONSUL_CACERT.

Everything lives under `<cluster root>/tls/` (CA keys 0600); DOCKER_CERT_PATH is `tls/admin`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shoal import pki
from shoal.dev.layout import ClusterLayout, NodeLayout


@dataclass(frozen=True, slots=True)
class Files:
    """A directory in Docker's layout (ca.pem, cert.pem, key.pem)."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def key(self) -> Path:
        return self.dir / "key.pem"

    def exists(self) -> bool:
        return self.ca.exists() and self.cert.exists() and self.key.exists()


def tls_root(layout: ClusterLayout) -> Path:
    return layout.root / "tls"


def control_ca(layout: ClusterLayout) -> Path:
    return tls_root(layout) / "control-ca.pem"


def node_ca(layout: ClusterLayout) -> Path:
    return tls_root(layout) / "node-ca.pem"


def ca_key(ca: Path) -> Path:
    return ca.with_name(ca.stem + "-key.pem")


def admin(layout: ClusterLayout) -> Files:
    return Files(tls_root(layout) / "admin")


def manager(layout: ClusterLayout) -> Files:
    """The manager's Docker API listener, and its client certificate to the engines (control CA)."""
    return Files(tls_root(layout) / "manager")


def join(layout: ClusterLayout) -> Files:
    """The manager's join listener (node CA): what a joining agent checks against its token's pin."""
    return Files(tls_root(layout) / "join")


def registry(layout: ClusterLayout) -> Files:
    return Files(tls_root(layout) / "registry")


def engine(node: NodeLayout) -> Files:
    return Files(node.dir / "tls")


def _write_ca(path: Path, pair: pki.Pair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pair.cert)
    fd = os.open(ca_key(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair.key)


def make_certs(layout: ClusterLayout) -> None:
    """Both CAs and every certificate the cluster's own processes use (agents get theirs by joining)."""
    control = pki.make_ca(f"{layout.name} control")
    nodes = pki.make_ca(f"{layout.name} node")
    _write_ca(control_ca(layout), control)
    _write_ca(node_ca(layout), nodes)
    here = [layout.gateway, "127.0.0.1", "localhost"]
    pki.issue(control, "admin", client=True).write(admin(layout).dir, control.cert)
    pki.issue(control, "manager", [*here, "manager"], server=True, client=True).write(
        manager(layout).dir, control.cert
    )
    pki.issue(nodes, "manager", [*here, "manager"], server=True).write(join(layout).dir, nodes.cert)
    pki.issue(nodes, "registry", [*here, "registry"], server=True).write(registry(layout).dir, nodes.cert)
    for n in layout.nodes:
        pki.issue(control, n.name, [n.address, n.name, "127.0.0.1"], server=True).write(
            engine(n).dir, control.cert
        )
