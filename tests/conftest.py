"""Fixtures shared by the end-to-end tests: the `shoal` CLI and a session-scoped 3-node dev cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SHOAL = [sys.executable, "-m", "shoal"]
# The test cluster never shares a name or subnet with a developer's own `shoal dev up` (and two suites run
# side by side by giving each its own SHOAL_TEST_CLUSTER, SHOAL_TEST_SUBNET and SHOAL_TEST_ROOT).
# Under pytest-xdist (`make test` runs files on two workers) each worker has its own session cluster.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_N = int(_WORKER[2:]) if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else -1
CLUSTER_NAME = os.environ.get("SHOAL_TEST_CLUSTER", "st" if _N < 0 else f"sw{_N}")
CLUSTER_SUBNET = os.environ.get("SHOAL_TEST_SUBNET", "10.99.1.0/24" if _N < 0 else f"10.99.{60 + _N}.0/24")
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
    nodes: dict[str, str]  # node name -> tcp://address:2376 (2375 on an --insecure cluster)
    env: dict[str, str] = field(default_factory=dict)  # what `shoal dev env` exports (TLS, tokens, addresses)

    def address(self, node: str) -> str:
        return self.nodes[node].removeprefix("tcp://").rsplit(":", 1)[0]

    @property
    def gateway(self) -> str:
        return self.address("node1").rsplit(".", 1)[0] + ".1"

    @property
    def secure(self) -> bool:
        return self.env.get("DOCKER_TLS_VERIFY", "") == "1"

    @property
    def manager(self) -> str:
        """DOCKER_HOST for the whole cluster."""
        return self.env.get("DOCKER_HOST", f"tcp://{self.gateway}:2375")

    @property
    def certs(self) -> Path:
        """DOCKER_CERT_PATH: the operator's admin certificate (the manager and every engine accept it)."""
        return Path(self.env["DOCKER_CERT_PATH"])

    @property
    def tls(self) -> Path:
        return self.root / self.name / "tls"

    def docker_argv(self, host: str | None = None) -> list[str]:
        """`docker` with -H and, on a secure cluster, the TLS flags spelled out (for a shell command line,
        as tmux runs it, where the environment may not follow)."""
        argv = ["docker", "-H", host or self.manager]
        if self.secure:
            c = self.certs
            argv += ["--tlsverify", f"--tlscacert={c / 'ca.pem'}", f"--tlscert={c / 'cert.pem'}"]
            argv += [f"--tlskey={c / 'key.pem'}"]
        return argv

    def manager_argv(self, listen: str, *flags: str) -> list[str]:
        """Another `shoal manager` over this cluster's registry, with the cluster's own TLS (the manager's
        certificate names the gateway), as `dev up` starts the first one; run it with `client_env()`, which
        holds the registry's token (CONSUL_HTTP_TOKEN: never on a command line)."""
        argv = [sys.executable, "-m", "shoal", "manager", "--registry", self.registry_url, "--listen", listen]
        if self.secure:
            m = self.tls / "manager"
            argv += ["--registry-cacert", str(self.tls / "node-ca.pem"), "--tlsverify"]
            argv += [
                "--tlscacert",
                str(m / "ca.pem"),
                "--tlscert",
                str(m / "cert.pem"),
                "--tlskey",
                str(m / "key.pem"),
            ]
        else:
            argv += ["--insecure-tcp"]
        return [*argv, *flags]

    def client_env(self, host: str | None = None) -> dict[str, str]:
        """The environment a user has after `eval "$(shoal dev env)"` (DOCKER_HOST set to `host` if given)."""
        return {**os.environ, **self.env, **({"DOCKER_HOST": host} if host else {})}

    def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        host: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against the manager (or `host`), configured as `shoal dev env` leaves it."""
        proc = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=self.client_env(host),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
        return proc

    def compose(
        self, project_dir: Path, project: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The real docker-compose 1.29 in `project_dir` against the manager, as `shoal dev env` leaves it."""
        proc = subprocess.run(
            ["docker-compose", *args],
            cwd=project_dir,
            env={**self.client_env(), "COMPOSE_PROJECT_NAME": project},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {proc.stderr}")
        return proc

    @property
    def registry(self) -> str:
        """host:port of the cluster's registry (the Consul API)."""
        return self.registry_url.split("://", 1)[1]

    @property
    def registry_url(self) -> str:
        return self.env.get("CONSUL_HTTP_ADDR", f"http://{self.gateway}:8500")

    def consul(self, registry: str | None = None):
        """py-consul as a user configures it from `shoal dev env` (HTTPS against the node CA, the token); or,
        for `registry` (HOST:PORT of another registry a test started, plain HTTP), that one."""
        import consul

        if registry is not None:
            host, port = registry.rsplit(":", 1)
            return consul.Consul(host=host, port=int(port))
        scheme, _, hostport = self.registry_url.partition("://")
        host, port = hostport.rsplit(":", 1)
        verify = self.env.get("CONSUL_CACERT") or True
        return consul.Consul(
            host=host, port=int(port), scheme=scheme, verify=verify, token=self.env.get("CONSUL_HTTP_TOKEN")
        )

    def http(self, method: str, path: str, **kw):
        """A request to the manager's own HTTP(S) endpoints with the operator's certificate."""
        import requests

        base = self.manager.replace("tcp://", "https://" if self.secure else "http://")
        if self.secure:
            kw |= {
                "cert": (str(self.certs / "cert.pem"), str(self.certs / "key.pem")),
                "verify": str(self.certs / "ca.pem"),
            }
        return requests.request(method, f"{base}{path}", timeout=kw.pop("timeout", 30), **kw)

    def docker_py(self, host: str | None = None):
        """docker-py as `docker.from_env()` sees the cluster's environment."""
        import docker

        client = docker.from_env(environment=self.client_env(host), version="1.41")
        # requests would let REQUESTS_CA_BUNDLE (set on this machine) replace the cluster CA that
        # DOCKER_CERT_PATH gave docker-py (requests issue 3829); a user's docker-py has the same trap
        client.api.trust_env = False
        return client

    def node_dir(self, node: str) -> Path:
        return self.root / self.name / node

    def layout(self):
        """The cluster's layout as `dev up` planned it (from its state file, labels and all)."""
        from shoal.dev.layout import plan_layout
        from shoal.dev.state import State

        return plan_layout(State.from_json((self.root / self.name / "state.json").read_text()).spec)

    def start_agent(self, node: str, *extra: str) -> int:
        """Starts the node's agent again exactly as `dev up` does (inside the engine's namespaces; `extra`
        arguments after its own), and keeps the state file true (as `shoal dev node start` does), so
        later tests find the live agent."""
        from dataclasses import replace

        from shoal.dev import state
        from shoal.dev.node import node_services, start

        layout = self.layout()
        [spec] = node_services(layout, layout.node(node))
        spec = replace(spec, argv=(*spec.argv, *extra))
        pid = start(spec, join_pid=self.pid(node, "engine"))
        st = state.read(layout.state_file)
        assert st is not None
        state.write(layout.state_file, replace(st, pids={**st.pids, node: {**st.pids[node], "agent": pid}}))
        return pid

    def agent_pids(self, node: str) -> set[int]:
        """Every `shoal agent` running for the node: in its network namespace, and the one the state file
        names (a test restarting an agent stops all of them, or a second agent would go on beside the new
        one, serving its moves and publishing its facts)."""
        from shoal.dev import host

        pids = host.netns_pids(f"{self.name}-{node}") | {self.pid(node, "agent")}
        return {p for p in pids if "shoal agent" in host.cmdline(p)}

    def pid(self, node: str, process: str) -> int:
        import json

        return json.loads((self.root / self.name / "state.json").read_text())["pids"][node][process]

    def docker(
        self, node: str, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against one node's engine (the admin certificate gets in there too)."""
        proc = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.client_env(self.nodes[node]),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker -H {self.nodes[node]} {' '.join(args)}: {proc.stderr}")
        return proc


def env_of(exports: str) -> dict[str, str]:
    """`shoal dev env`'s output as a dict (its `unset` lines drop those names)."""
    out: dict[str, str] = {}
    for line in exports.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key] = value
    return out


# the session cluster's shape: `dev up` with these again must be a no-op
SESSION_UP = (
    "--nodes", "3", "--subnet", CLUSTER_SUBNET, "--label", "node1=disk=ssd", "--agent-label", "node3=zone=b",
    "--agent-interval", str(AGENT_INTERVAL), "--name", CLUSTER_NAME, "--root", str(ROOT),
)  # fmt: skip


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    """A 3-node dev cluster for the whole session, torn down even when tests fail."""
    args = ["--name", CLUSTER_NAME, "--root", str(ROOT)]
    keep = os.environ.get("SHOAL_TEST_KEEP") == "1"  # a developer's loop: reuse it if up, leave it up
    if not keep:
        shoal("dev", "down", *args)  # a killed earlier run may have left one behind
    try:
        shoal("dev", "up", *SESSION_UP)
        exported = env_of(shoal("dev", "env", *args).stdout)
        nodes = {
            k.removeprefix("SHOAL_NODE_").lower(): v
            for k, v in exported.items()
            if k.startswith("SHOAL_NODE_")
        }
        yield DevCluster(name=CLUSTER_NAME, root=ROOT, nodes=nodes, env=exported)
    finally:
        if not keep:
            shoal("dev", "down", *args, check=False)


def wait_for(pred, timeout: float, what: str = ""):
    """What `pred` returns once it is truthy, polled every 0.1 s; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return got


@pytest.fixture
def gone(dev_cluster):
    """Containers and volumes a test made (append their names), removed at the end (containers first)."""
    made: dict[str, list[str]] = {"containers": [], "volumes": []}
    yield made
    if made["containers"]:
        dev_cluster.cli("rm", "-f", *made["containers"], check=False)
    for v in reversed(made["volumes"]):
        dev_cluster.cli("volume", "rm", v, check=False)
