"""`shoal init`: a new cluster's certificates on its first manager host, and engine certificates for nodes.

Everything is made in-process with `cryptography` (shoal.certs); nothing is sent anywhere. What to run
next is printed with the paths filled in.
"""

from __future__ import annotations

import socket
from pathlib import Path

import click

from shoal import certs
from shoal.errors import BadRequest

DEFAULT_DIR = Path("/etc/shoal")


def _engine_arg(value: str) -> tuple[str, list[str]]:
    node, sep, names = value.partition("=")
    if not sep or not node or not names:
        raise BadRequest(f"--engine {value!r}: say NODE=ADDRESS[,NAME...], e.g. --engine node1=10.0.0.11")
    return node, [n for n in names.split(",") if n]


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Where the CAs and certificates are kept.",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    help="An address (IP or DNS name) the manager and registry are reached by; repeatable. "
    "This host's name is always included.",
)
@click.option("--cluster", default="shoal", show_default=True, help="The cluster's name (in the CA names).")
@click.option(
    "--engine",
    "engines",
    multiple=True,
    metavar="NODE=ADDRESS[,NAME...]",
    help="Also make NODE's engine certificate for these addresses; repeatable. With an existing "
    "--dir, only these are made.",
)
def init(directory: Path, names: tuple[str, ...], cluster: str, engines: tuple[str, ...]) -> None:
    """Make a cluster's two CAs and its services' certificates (on an existing --dir: engine ones)."""
    d = certs.CertDir(directory)
    wanted = [_engine_arg(e) for e in engines]
    made_ca = False
    if not (d.exists() and wanted):
        host = socket.gethostname()
        certs.make(d, cluster, [*names, host])
        made_ca = True
        click.echo(f"made {directory}: the control and node CAs, and certificates for the manager, the")
        click.echo(f"registry and you (admin/), valid for {', '.join([*names, host, '127.0.0.1'])}")
    for node, addresses in wanted:
        files = certs.make_engine(d, node, addresses)
        click.echo(f"made {files.dir}: {node}'s engine certificate for {', '.join(addresses)}")
    if made_ca:
        _next_steps(d, names[0] if names else socket.gethostname())
    elif wanted:
        click.echo("copy each engines/<node> directory to its node and start dockerd with it")


def _next_steps(d: certs.CertDir, address: str) -> None:
    r, m, j, a = d.registry, d.manager, d.join, d.admin
    click.echo(
        f"""
next, on this host:
  shoal registry --http '' --https 0.0.0.0:8501 --tlscert {r.cert} --tlskey {r.key}
  shoal manager --registry https://{address}:8501 --registry-cacert {d.node_ca} \\
      --listen 0.0.0.0:2376 --tlsverify --tlscacert {m.ca} --tlscert {m.cert} --tlskey {m.key} \\
      --join-listen 0.0.0.0:2377 --join-cert {j.cert} --join-key {j.key} \\
      --node-ca {d.node_ca} --node-ca-key {certs.ca_key(d.node_ca)}
  export DOCKER_HOST=tcp://{address}:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={a.dir}
for each node:
  shoal init --dir {d.root} --engine NODE=NODE_IP      # then copy {d.root}/engines/NODE to the node
  dockerd -H tcp://0.0.0.0:2376 --tlsverify --tlscacert ca.pem --tlscert cert.pem --tlskey key.pem
  shoal token create -q > token                     # here; then on the node:
  shoal agent --manager https://{address}:2377 --join-token-file token --node NODE \\
      --state-dir /var/lib/shoal/agent
keep {d.control_ca.with_name('control-ca-key.pem')} and {certs.ca_key(d.node_ca)} on this host only."""
    )
