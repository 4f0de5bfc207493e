"""What runs on a dev node: its engine and its services.

A node is "its engine and its services": `node_processes` lists them, the engine first, each a
`ProcessSpec` (plain data). Later parts of shoal (the agent, one per node) add themselves to
`node_services`; cluster-wide processes (the manager) to `cluster_services`. `up` starts what
these lists name, `down` stops every pid it recorded, so a new service needs no other change.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal import keys
from shoal.dev.layout import (
    ENGINE_PORT,
    MANAGER_PORT,
    REGISTRY_DNS_PORT,
    REGISTRY_HTTP_PORT,
    ClusterLayout,
    NodeLayout,
)

# The node's engine gets its own UTS namespace (so `docker info` names the node) and a private
# mount namespace in which this node's plugin directory sits on /run/docker/plugins, so the node's
# volume plugin is seen by its own engine only; /run/containerd is hidden so dockerd always runs
# its own containerd instead of adopting a system one.
_NODE_INIT = (
    'set -e; hostname "$1"; '
    'mount --bind "$2" /run/docker/plugins; '
    'mount --bind "$3" /run/containerd; '
    'shift 3; exec "$@"'
)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One long-running process of the cluster: how to start it and where it logs."""

    name: str
    argv: tuple[str, ...]
    log: Path
    ready_url: str = ""  # answers 200 once the process is ready; `up` waits for it
    join: str = ""  # the name of a process of the same node whose namespaces (net, uts, mount) it enters
    tier: int = 0  # start order: the registry (0), then the nodes' agents (1), then the manager (2)


def engine_process(cluster: ClusterLayout, node: NodeLayout) -> ProcessSpec:
    dockerd_args = [
        "dockerd",
        "--data-root", str(node.data_root),
        "--exec-root", str(node.exec_root),
        "--pidfile", str(node.pidfile),
        "-H", f"unix://{node.engine_socket}",
        "-H", f"tcp://{node.address}:{ENGINE_PORT}",
        "--tls=false",
        "--cgroup-parent", node.cgroup_parent(cluster.name),
        "--shutdown-timeout", "2",
    ]  # fmt: skip
    for label in node.labels:
        dockerd_args += ["--label", label]
    argv = (
        "nsenter", f"--net=/run/netns/{node.netns}",
        "unshare", "--uts", "--mount", "--propagation", "private",
        "sh", "-c", _NODE_INIT, "shoal-node",
        node.name, str(node.plugins_dir), str(node.containerd_dir),
        *dockerd_args,
    )  # fmt: skip
    return ProcessSpec(name="engine", argv=argv, log=node.log_dir / "dockerd.log")


def node_services(cluster: ClusterLayout, node: NodeLayout) -> list[ProcessSpec]:
    """The services a node runs beside its engine: the shoal agent, inside the engine's namespaces so
    its facts (hostname, address, plugin directory) are the node's."""
    agent = (
        sys.executable, "-m", "shoal", "agent",
        "--manager", cluster.registry_url, "--node", node.name,
        "--engine", f"unix://{node.engine_socket}", "--advertise-engine", node.engine_url,
        "--facts-dir", str(node.facts_dir), "--interval", f"{cluster.agent_interval:g}",
        "--fact-timeout", f"{min(5.0, cluster.agent_interval):g}",
        "--state-file", str(node.dir / "agent.json"),
        "--pool", str(node.pool_dir),
        "--load-cgroup", node.cgroup_parent(cluster.name),
        *(arg for label in node.agent_labels for arg in ("--label", label)),
    )  # fmt: skip
    ready = f"{cluster.registry_url}/v1/kv/{keys.node_facts(node.name)}"
    return [ProcessSpec("agent", agent, node.log_dir / "agent.log", ready_url=ready, join="engine", tier=1)]


def cluster_services(cluster: ClusterLayout) -> list[ProcessSpec]:
    """Cluster-wide services, on the host bridge's address so every node reaches them: the registry
    (the Consul API and DNS, SQLite in the cluster's directory); the shoal manager joins here."""
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
        "--listen", f"{cluster.gateway}:{MANAGER_PORT}",
        "--unix", str(cluster.root / "manager.sock"),
        "--strategy", cluster.strategy,
    )  # fmt: skip
    logs = cluster.root / "log"
    return [
        ProcessSpec(
            "registry", registry, logs / "registry.log", ready_url=f"{cluster.registry_url}/v1/status/leader"
        ),
        ProcessSpec(
            "manager", manager, logs / "manager.log", ready_url=f"{cluster.manager_url}/_ping", tier=2
        ),
    ]


def node_processes(cluster: ClusterLayout, node: NodeLayout) -> list[ProcessSpec]:
    return [engine_process(cluster, node), *node_services(cluster, node)]


def start(spec: ProcessSpec, env: dict[str, str] | None = None, join_pid: int = 0) -> int:
    """Starts `spec` in its own session (so a terminal's Ctrl-C does not reach it); returns its pid.
    With `join_pid`, it runs inside that process's network, UTS and mount namespaces."""
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    argv = list(spec.argv)
    if join_pid:
        argv = ["nsenter", f"--target={join_pid}", "--net", "--uts", "--mount", "--", *argv]
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
