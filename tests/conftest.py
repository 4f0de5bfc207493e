"""Fixtures shared by the end-to-end tests: the `shoal` CLI and a session-scoped 3-node dev cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SHOAL = [sys.executable, "-m", "shoal"]
# The test cluster never shares a name or subnet with a developer's own `shoal dev up` (and two suites run
# side by side by giving each its own SHOAL_TEST_CLUSTER, SHOAL_TEST_SUBNET and SHOAL_TEST_ROOT).
CLUSTER_NAME = os.environ.get("SHOAL_TEST_CLUSTER", "st")
CLUSTER_SUBNET = os.environ.get("SHOAL_TEST_SUBNET", "10.99.1.0/24")
AGENT_INTERVAL = 1.0
ROOT = Path(os.environ.get("SHOAL_TEST_ROOT", "/var/lib/shoal/test"))


def shoal(
    *args: str, check: bool = True, timeout: float = 120, env: dict | None = None, **kw
) -> subprocess.CompletedProcess[str]:
    """Runs the real `shoal` CLI, as a user would, and returns what it printed."""
    proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"shoal {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class DevCluster:
    name: str
    root: Path
    nodes: dict[str, str]  # node name -> tcp://address:2375

    def address(self, node: str) -> str:
        return self.nodes[node].removeprefix("tcp://").rsplit(":", 1)[0]

    @property
    def gateway(self) -> str:
        return self.address("node1").rsplit(".", 1)[0] + ".1"

    @property
    def manager(self) -> str:
        """DOCKER_HOST for the whole cluster."""
        return f"tcp://{self.gateway}:2375"

    def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        host: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against the manager (or `host`)."""
        proc = subprocess.run(
            ["docker", "-H", host or self.manager, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
        return proc

    @property
    def registry(self) -> str:
        """host:port of the cluster's registry (the Consul API)."""
        return f"{self.gateway}:8500"

    def node_dir(self, node: str) -> Path:
        return self.root / self.name / node

    def layout(self):
        """The cluster's layout as `dev up` planned it (from its state file, labels and all)."""
        from shoal.dev.layout import plan_layout
        from shoal.dev.state import State

        return plan_layout(State.from_json((self.root / self.name / "state.json").read_text()).spec)

    def start_agent(self, node: str) -> int:
        """Starts the node's agent again exactly as `dev up` does (inside the engine's namespaces), and
        keeps the state file true (as `shoal dev node start` does), so later tests find the live agent."""
        from dataclasses import replace

        from shoal.dev import state
        from shoal.dev.node import node_services, start

        layout = self.layout()
        [spec] = node_services(layout, layout.node(node))
        pid = start(spec, join_pid=self.pid(node, "engine"))
        st = state.read(layout.state_file)
        assert st is not None
        state.write(layout.state_file, replace(st, pids={**st.pids, node: {**st.pids[node], "agent": pid}}))
        return pid

    def pid(self, node: str, process: str) -> int:
        import json

        return json.loads((self.root / self.name / "state.json").read_text())["pids"][node][process]

    def docker(
        self, node: str, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against one node's engine."""
        proc = subprocess.run(
            ["docker", "-H", self.nodes[node], *args], capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker -H {self.nodes[node]} {' '.join(args)}: {proc.stderr}")
        return proc


# the session cluster's shape: `dev up` with these again must be a no-op
SESSION_UP = (
    "--nodes", "3", "--subnet", CLUSTER_SUBNET, "--label", "node1=disk=ssd", "--agent-label", "node3=zone=b",
    "--agent-interval", str(AGENT_INTERVAL), "--name", CLUSTER_NAME, "--root", str(ROOT),
)  # fmt: skip


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    """A 3-node dev cluster for the whole session, torn down even when tests fail."""
    args = ["--name", CLUSTER_NAME, "--root", str(ROOT)]
    shoal("dev", "down", *args)  # a killed earlier run may have left one behind
    try:
        shoal("dev", "up", *SESSION_UP)
        env = shoal("dev", "env", *args).stdout
        nodes = {}
        for line in env.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            if key.startswith("SHOAL_NODE_"):
                nodes[key.removeprefix("SHOAL_NODE_").lower()] = value
        yield DevCluster(name=CLUSTER_NAME, root=ROOT, nodes=nodes)
    finally:
        shoal("dev", "down", *args, check=False)
