"""What runs on a dev node: its engine and its services.

A node is "its engine and its services": `node_processes` lists them, the engine first, each a
`ProcessSpec` (plain data). Later parts of shoal (the agent, one per node) add themselves to
`node_services`; cluster-wide processes (the manager) to `cluster_services`, or, with several managers,
to `manager_processes` (each manager's etcd member and manager, in the manager's namespace). `up` starts what
these lists name, `down` stops every pid it recorded, so a new service needs no other change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal import keys
from shoal.dev import tls
from shoal.dev.layout import (
    ENGINE_PORT,
    ENGINE_TLS_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    JOIN_PORT,
    MANAGER_PORT,
    MANAGER_TLS_PORT,
    REGISTRY_DNS_PORT,
    REGISTRY_HTTP_PORT,
    REGISTRY_HTTPS_PORT,
    ClusterLayout,
    ManagerLayout,
    NodeLayout,
)
from shoal.registry import etcd_server
from shoal.registry.etcd_server import EtcdMember

# The node's engine gets its own UTS namespace (so `docker info` names the node) and a private
# mount namespace in which this node's plugin directory sits on /run/docker/plugins, so the node's
# volume plugin is seen by its own engine only; /run/containerd is hidden so dockerd always runs
# its own containerd instead of adopting a system one; the node's own /etc/docker (its certs.d, trusting the
# cluster's image registry, and its key.json) sits on /etc/docker, so the host's is never written (a node
# made before the image registry existed has no such directory and keeps the host's).
_NODE_INIT = (
    'set -e; hostname "$1"; '
    'mount --bind "$2" /run/docker/plugins; '
    'mount --bind "$3" /run/containerd; '
    'if [ -d "$4" ] && [ -d /etc/docker ]; then mount --bind "$4" /etc/docker; fi; '
    'shift 4; exec "$@"'
)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One long-running process of the cluster: how to start it and where it logs."""

    name: str
    argv: tuple[str, ...]
    log: Path
    ready_url: str = ""  # answers 200 once the process is ready; `up` waits for it
    join: str = ""  # the name of a process of the same node whose namespaces (net, uts, mount) it enters
    tier: int = 0  # start order: the registry (0), the manager (1), the nodes' agents (2)
    ready_ca: str = ""  # the CA the ready URL's certificate is signed by (secure clusters)
    ready_cert: tuple[str, str] | None = None  # the client certificate it wants (the manager's Docker API)
    ready_token: str = ""  # a file holding the registry ACL token the ready URL wants
    env_files: tuple[tuple[str, str], ...] = ()  # (VARIABLE, file): secrets passed in the environment, which
    # no process listing shows, read from their files at each start
    netns: str = ""  # a named network namespace it runs in (a manager's, with several managers)


def engine_process(cluster: ClusterLayout, node: NodeLayout) -> ProcessSpec:
    if node.secure:  # dockerd's own --tlsverify: only certificates of the control CA get in
        files = tls.engine(cluster, node)
        listen = [
            "-H", f"tcp://{node.address}:{ENGINE_TLS_PORT}", "--tlsverify",
            "--tlscacert", str(files.ca), "--tlscert", str(files.cert), "--tlskey", str(files.key),
        ]  # fmt: skip
    else:  # and the cluster's image registry in plain HTTP
        listen = ["-H", f"tcp://{node.address}:{ENGINE_PORT}", "--tls=false"]
        listen += ["--insecure-registry", cluster.image_registry]
    dockerd_args = [
        "dockerd",
        "--data-root", str(node.data_root),
        "--exec-root", str(node.exec_root),
        "--pidfile", str(node.pidfile),
        "-H", f"unix://{node.engine_socket}",
        *listen,
        "--cgroup-parent", node.cgroup_parent(cluster.name),
        "--shutdown-timeout", "2",
    ]  # fmt: skip
    for label in node.labels:
        dockerd_args += ["--label", label]
    argv = (
        "nsenter", f"--net=/run/netns/{node.netns}",
        "unshare", "--uts", "--mount", "--propagation", "private",
        "sh", "-c", _NODE_INIT, "shoal-node",
        node.name, str(node.plugins_dir), str(node.containerd_dir), str(node.etc_docker_dir),
        *dockerd_args,
    )  # fmt: skip
    return ProcessSpec(name="engine", argv=argv, log=node.log_dir / "dockerd.log")


def node_services(cluster: ClusterLayout, node: NodeLayout) -> list[ProcessSpec]:
    """The services a node runs beside its engine: the shoal agent, inside the engine's namespaces so
    its facts (hostname, address, plugin directory) are the node's."""
    if cluster.secure:  # the agent joins with the cluster's token and keeps what it got in its state dir
        reach = (
            "--manager", ",".join(cluster.join_urls), "--join-token-file", str(join_token_file(cluster)),
            "--state-dir", str(node.agent_dir),
        )  # fmt: skip
    else:
        reach = ("--manager", cluster.registry_url)
    agent = (
        sys.executable, "-m", "shoal", "agent",
        *reach, "--node", node.name,
        "--engine", f"unix://{node.engine_socket}", "--advertise-engine", node.engine_url,
        "--facts-dir", str(node.facts_dir), "--interval", f"{cluster.agent_interval:g}",
        "--fact-timeout", f"{min(5.0, cluster.agent_interval):g}",
        "--state-file", str(node.dir / "agent.json"),
        "--pool", str(node.pool_dir),
        "--load-cgroup", node.cgroup_parent(cluster.name),
        *(arg for label in node.agent_labels for arg in ("--label", label)),
    )  # fmt: skip
    ready = f"{cluster.registry_url}/v1/kv/{keys.node_facts(node.name)}"
    ca = str(tls.node_ca(cluster)) if cluster.secure else ""
    token = str(tls.management_token(cluster)) if cluster.secure else ""
    return [
        ProcessSpec(
            "agent", agent, node.log_dir / "agent.log", ready_url=ready, join="engine", tier=2, ready_ca=ca,
            ready_token=token,
        )
    ]  # fmt: skip


def join_token_file(cluster: ClusterLayout) -> Path:
    """Where `up` leaves the join token its agents present (only until they have joined)."""
    return tls.tls_root(cluster) / "join-token"


def cluster_services(cluster: ClusterLayout) -> list[ProcessSpec]:
    """Cluster-wide services, on the host bridge's address so every node reaches them: the registry
    (the Consul API over HTTPS, and DNS; SQLite in the cluster's directory), the manager (the Docker API
    over mutual TLS, and the join listener agents get their node certificates from) and the image registry
    (shoal.dev.registry)."""
    from shoal.dev import registry as image_registry  # it builds on ProcessSpec

    logs = cluster.root / "log"
    if not cluster.secure:
        return [*_plain_services(cluster, logs), image_registry.process(cluster)]
    if cluster.managers:  # each manager, with its etcd member, runs in its own namespace: manager_processes
        return [image_registry.process(cluster)]
    reg, mgr, join, ca = tls.registry(cluster), tls.manager(cluster), tls.join(cluster), tls.node_ca(cluster)
    registry = (
        sys.executable, "-m", "shoal", "registry",
        "--store", f"sqlite://{cluster.root / 'registry.db'}",
        "--http", "", "--https", f"{cluster.gateway}:{REGISTRY_HTTPS_PORT}",
        "--tlscert", str(reg.cert), "--tlskey", str(reg.key),
        "--dns", f"{cluster.gateway}:{REGISTRY_DNS_PORT}",
        "--node", "manager", "--advertise", cluster.gateway,
        "--acl", "--acl-default-policy", "deny",
    )  # fmt: skip
    manager = (
        sys.executable, "-m", "shoal", "manager",
        "--registry", cluster.registry_url, "--registry-cacert", str(ca),
        "--listen", f"{cluster.gateway}:{MANAGER_TLS_PORT}",
        "--tlsverify", "--tlscacert", str(mgr.ca), "--tlscert", str(mgr.cert), "--tlskey", str(mgr.key),
        "--join-listen", f"{cluster.gateway}:{JOIN_PORT}",
        "--join-cert", str(join.cert), "--join-key", str(join.key),
        "--node-ca", str(ca), "--node-ca-key", str(tls.ca_key(ca)),
        "--unix", str(cluster.root / "manager.sock"),
        "--strategy", cluster.strategy,
    )  # fmt: skip
    admin, token = tls.admin(cluster), str(tls.management_token(cluster))
    return [
        ProcessSpec(
            "registry", registry, logs / "registry.log", ready_url=f"{cluster.registry_url}/v1/status/leader",
            ready_ca=str(ca), env_files=(("CONSUL_ACL_INITIAL_MANAGEMENT", token),),
        ),
        ProcessSpec(
            "manager", manager, logs / "manager.log", ready_url=f"{cluster.manager_url}/_ping", tier=1,
            ready_ca=str(admin.ca), ready_cert=(str(admin.cert), str(admin.key)),
            env_files=(("CONSUL_HTTP_TOKEN", token),),
        ),
        image_registry.process(cluster),
    ]  # fmt: skip


def _plain_services(cluster: ClusterLayout, logs: Path) -> list[ProcessSpec]:
    """`--insecure`: today's plain mode, for debugging (the manager's plain Docker API on loopback only)."""
    registry = (
        sys.executable, "-m", "shoal", "registry",
        "--store", f"sqlite://{cluster.root / 'registry.db'}",
        "--http", f"{cluster.gateway}:{REGISTRY_HTTP_PORT}",
        "--dns", f"{cluster.gateway}:{REGISTRY_DNS_PORT}",
        "--node", "manager", "--advertise", cluster.gateway,
    )  # fmt: skip
    manager = (
        sys.executable, "-m", "shoal", "manager",
        "--registry", cluster.registry_url,
        "--listen", f"127.0.0.1:{MANAGER_PORT}", "--insecure-tcp",
        "--unix", str(cluster.root / "manager.sock"),
        "--strategy", cluster.strategy,
    )  # fmt: skip
    return [
        ProcessSpec(
            "registry", registry, logs / "registry.log", ready_url=f"{cluster.registry_url}/v1/status/leader"
        ),
        ProcessSpec(
            "manager", manager, logs / "manager.log", ready_url=f"{cluster.manager_url}/_ping", tier=1
        ),
    ]


def etcd_members(cluster: ClusterLayout) -> list[EtcdMember]:
    return [
        EtcdMember(m.name, m.address, ETCD_CLIENT_PORT, ETCD_PEER_PORT, m.etcd_dir, netns=m.netns)
        for m in cluster.managers
    ]


def etcd_token(cluster: ClusterLayout) -> str:
    """The members' --initial-cluster-token: the cluster's name, so it is the same at every start (and a
    member of another dev cluster can never join this one)."""
    return f"shoal-dev-{cluster.name}"


def manager_processes(cluster: ClusterLayout, m: ManagerLayout) -> list[ProcessSpec]:
    """One of several managers, in its own namespace: its etcd member (tier 0: the store every manager
    needs) and `shoal manager`, which serves the Docker API, the registry (Consul API and DNS) over the
    etcd store and the join listener, all on the manager's own address (tier 1)."""
    members = etcd_members(cluster)
    [member] = [e for e in members if e.name == m.name]
    etcd = ProcessSpec(
        "etcd", tuple(etcd_server.argv(member, members, etcd_token(cluster))), m.log_dir / "etcd.log",
        ready_url=f"{member.client_url}/health", tier=0, netns=m.netns,
    )  # fmt: skip
    reg, mgr, join, ca = tls.registry(cluster), tls.manager(cluster), tls.join(cluster), tls.node_ca(cluster)
    argv = (
        sys.executable, "-m", "shoal", "manager",
        "--store", cluster.etcd_store,
        "--registry-https", f"{m.address}:{REGISTRY_HTTPS_PORT}",
        "--registry-tlscert", str(reg.cert), "--registry-tlskey", str(reg.key),
        "--registry-cacert", str(ca),
        "--dns", m.dns_addr,
        "--node", m.name, "--advertise", m.address,
        "--acl", "--acl-default-policy", "deny",
        "--listen", f"{m.address}:{MANAGER_TLS_PORT}",
        "--tlsverify", "--tlscacert", str(mgr.ca), "--tlscert", str(mgr.cert), "--tlskey", str(mgr.key),
        "--join-listen", f"{m.address}:{JOIN_PORT}",
        "--join-cert", str(join.cert), "--join-key", str(join.key),
        "--node-ca", str(ca), "--node-ca-key", str(tls.ca_key(ca)),
        "--advertise-registry", ",".join(cluster.registry_urls),
        "--unix", str(m.socket),
        "--strategy", cluster.strategy,
    )  # fmt: skip
    admin, token = tls.admin(cluster), str(tls.management_token(cluster))
    manager = ProcessSpec(
        "manager", argv, m.log_dir / "manager.log", ready_url=f"{m.docker_url}/_ping", tier=1,
        ready_ca=str(admin.ca), ready_cert=(str(admin.cert), str(admin.key)),
        env_files=(("CONSUL_HTTP_TOKEN", token), ("CONSUL_ACL_INITIAL_MANAGEMENT", token)), netns=m.netns,
    )  # fmt: skip
    return [etcd, manager]


def node_processes(cluster: ClusterLayout, node: NodeLayout) -> list[ProcessSpec]:
    return [engine_process(cluster, node), *node_services(cluster, node)]


CLIENT_ENV = frozenset(
    {
        "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_HTTP_SSL", "DOCKER_HOST", "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH", "SHOAL_STORE", "SHOAL_JOIN_TOKEN", "CONSUL_ACL_INITIAL_MANAGEMENT",
    }
)  # fmt: skip


def start(spec: ProcessSpec, env: dict[str, str] | None = None, join_pid: int = 0) -> int:
    """Starts `spec` in its own session (so a terminal's Ctrl-C does not reach it); returns its pid.
    With `join_pid`, it runs inside that process's network, UTS and mount namespaces; with `spec.netns`,
    inside that named network namespace."""
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    # a cluster's processes are told everything on their command line and in env_files: the client
    # settings of whoever runs `shoal dev` (after `eval "$(shoal dev env)"`, those of this or another
    # cluster) must not reach them (a manager serving its own registry would watch the one named there)
    env = {k: v for k, v in (env if env is not None else os.environ).items() if k not in CLIENT_ENV}
    env.update((var, Path(path).read_text().strip()) for var, path in spec.env_files)
    argv = list(spec.argv)
    if join_pid:
        argv = ["nsenter", f"--target={join_pid}", "--net", "--uts", "--mount", "--", *argv]
    elif spec.netns:
        argv = ["nsenter", f"--net=/run/netns/{spec.netns}", "--", *argv]
    with open(spec.log, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return proc.pid


def log_tail(path: Path, lines: int = 3) -> Sequence[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []
