"""A cluster's certificate directory: its two CAs and the certificates its services use, in one layout that
`shoal init` (real hosts) and `shoal dev up` (a dev cluster) both make.

Two CAs, so that what a node holds can never reach an engine:
- the control CA signs what speaks the Docker API: each engine's server certificate, the manager's (server,
  and client to the engines) and the operator's admin certificate. Engines trust only it, so only the
  manager and an admin certificate get in (`docker -H tcp://NODE:2376` with anything else fails).
- the node CA signs the registry's server certificate, the manager's join listener, and each agent's node
  certificate (from the agent's own CSR at `shoal agent --join`). It is CONSUL_CACERT.

    <dir>/control-ca.pem, control-ca-key.pem (0600)
    <dir>/node-ca.pem, node-ca-key.pem (0600)
    <dir>/admin/     ca.pem cert.pem key.pem   DOCKER_CERT_PATH for the operator
    <dir>/manager/   the Docker API listener and the manager's client certificate to the engines
    <dir>/join/      the join listener (node CA)
    <dir>/registry/  the registry's HTTPS listener (node CA)
    <dir>/engines/<node>/  an engine's server certificate (`shoal init engine`)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shoal import pki
from shoal.errors import Conflict, NotFound

SERVICE_DAYS = 397  # what the cluster's own services use; `shoal init engine`/`--renew` re-issues them


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


@dataclass(frozen=True, slots=True)
class CertDir:
    root: Path

    @property
    def control_ca(self) -> Path:
        return self.root / "control-ca.pem"

    @property
    def node_ca(self) -> Path:
        return self.root / "node-ca.pem"

    @property
    def admin(self) -> Files:
        return Files(self.root / "admin")

    @property
    def manager(self) -> Files:
        return Files(self.root / "manager")

    @property
    def join(self) -> Files:
        return Files(self.root / "join")

    @property
    def registry(self) -> Files:
        return Files(self.root / "registry")

    def engine(self, node: str) -> Files:
        return Files(self.root / "engines" / node)

    def exists(self) -> bool:
        return self.control_ca.exists() or self.node_ca.exists()


def ca_key(ca: Path) -> Path:
    return ca.with_name(ca.stem + "-key.pem")


def _write_ca(path: Path, pair: pki.Pair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(ca_key(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair.key)
    path.write_bytes(pair.cert)


def load_ca(path: Path) -> pki.Pair:
    try:
        return pki.Pair(path.read_bytes(), ca_key(path).read_bytes())
    except FileNotFoundError as e:
        raise NotFound(
            f"no CA at {path} (and its key): make one with `shoal init --dir {path.parent}`"
        ) from e


def make(d: CertDir, cluster: str, names: Iterable[str]) -> None:
    """Both CAs and the manager's, registry's and admin's certificates; `names` are the addresses (IPs and
    DNS names) the manager and registry are reached by. Refuses to replace an existing CA: every joined
    node and engine trusts it."""
    if d.exists():
        raise Conflict(
            f"{d.root} already holds a cluster CA; every node trusts it, so it is never replaced "
            "(use another --dir for a new cluster)"
        )
    control = pki.make_ca(f"{cluster} control")
    nodes = pki.make_ca(f"{cluster} node")
    _write_ca(d.control_ca, control)
    _write_ca(d.node_ca, nodes)
    here = list(dict.fromkeys([*names, "127.0.0.1", "localhost"]))
    days = SERVICE_DAYS
    pki.issue(control, "admin", client=True, days=days).write(d.admin.dir, control.cert)
    pki.issue(control, "manager", [*here, "manager"], server=True, client=True, days=days).write(
        d.manager.dir, control.cert
    )
    for name, files in (("manager", d.join), ("registry", d.registry)):
        pki.issue(nodes, name, [*here, name], server=True, days=days).write(files.dir, nodes.cert)


def make_engine(d: CertDir, node: str, names: Iterable[str]) -> Files:
    """An engine's server certificate (control CA), for dockerd's --tlsverify --tlscacert --tlscert
    --tlskey; `names` are the node's IPs and DNS names (no IP-SAN errors)."""
    control = load_ca(d.control_ca)
    sans = list(dict.fromkeys([*names, node, "127.0.0.1"]))
    files = d.engine(node)
    pki.issue(control, node, sans, server=True, days=SERVICE_DAYS).write(files.dir, control.cert)
    return files
