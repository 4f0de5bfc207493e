"""`up`, `down` and their failures leave the host as they found it, checked with the host's own tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from shoal.dev import host
from tests.conftest import ROOT, SHOAL, env_of, shoal
from tests.e2e.leftovers import leftovers

pytestmark = pytest.mark.e2e


def _args(name: str) -> list[str]:
    return ["--name", name, "--root", str(ROOT)]


@pytest.fixture
def scratch():
    """A cluster name and subnet of its own for one test, always cleaned up."""
    made = []

    def make(name: str, subnet: str) -> tuple[str, str]:
        made.append(name)
        shoal("dev", "down", *_args(name), check=False)
        return name, subnet

    yield make
    for name in made:
        shoal("dev", "down", *_args(name), check=False)


def test_down_removes_everything_up_made(scratch):
    name, subnet = scratch("lc", "10.99.2.0/24")
    shoal("dev", "up", "--nodes", "2", "--subnet", subnet, *_args(name))
    env = {
        **os.environ,
        **env_of(shoal("dev", "env", *_args(name)).stdout),
        "DOCKER_HOST": "tcp://10.99.2.11:2376",
    }
    subprocess.run(
        ["docker", "run", "-d", "-p", "8081:80", "busybox", "httpd", "-f", "-p", "80"],
        check=True,
        capture_output=True,
        env=env,
    )
    assert leftovers(name, ROOT)  # sanity: the checker sees a live cluster
    out = shoal("dev", "down", *_args(name))
    assert f"dev cluster {name!r} removed" in out.stdout
    assert leftovers(name, ROOT) == []


def test_down_with_nothing_up_says_so_and_succeeds(scratch):
    name, _ = scratch("nx", "10.99.5.0/24")
    out = shoal("dev", "down", *_args(name))
    assert out.returncode == 0
    assert f"no dev cluster {name!r} is up; nothing to do" in out.stdout


def test_down_cleans_up_after_a_crash_that_lost_the_state_file(scratch):
    name, subnet = scratch("cr", "10.99.6.0/24")
    shoal("dev", "up", "--nodes", "2", "--subnet", subnet, *_args(name))
    state = json.loads((ROOT / name / "state.json").read_text())
    for pid in (p for node in state["pids"].values() for p in node.values()):
        os.kill(pid, signal.SIGKILL)  # the engines die hard, their containerd and shims live on
    (ROOT / name / "state.json").unlink()
    out = shoal("dev", "down", *_args(name))
    assert "removed" in out.stdout
    assert leftovers(name, ROOT) == []


def test_up_after_a_crash_names_the_stale_state_and_the_way_out(scratch):
    name, subnet = scratch("st2", "10.99.7.0/24")
    shoal("dev", "up", "--nodes", "1", "--subnet", subnet, *_args(name))
    state = json.loads((ROOT / name / "state.json").read_text())
    os.kill(state["pids"]["node1"]["engine"], signal.SIGKILL)
    time.sleep(0.2)
    again = shoal("dev", "up", "--nodes", "1", "--subnet", subnet, *_args(name), check=False)
    assert again.returncode == 1
    assert "stale state (engine not running on node1)" in again.stderr
    assert "run `shoal dev down`" in again.stderr
    shoal("dev", "down", *_args(name))
    assert leftovers(name, ROOT) == []


def test_ctrl_c_during_up_leaves_nothing_behind(scratch):
    name, subnet = scratch("ix", "10.99.4.0/24")
    proc = subprocess.Popen(
        [*SHOAL, "dev", "up", "--nodes", "3", "--subnet", subnet, *_args(name)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a Ctrl-C must reach it even when the suite itself runs as a background job (which ignores SIGINT,
        # and Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state_file = ROOT / name / "state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # interrupt once engines are starting: the most to undo
        if state_file.exists() and '"engine"' in state_file.read_text():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "aborted" in err or "Interrupt" in err
    assert leftovers(name, ROOT) == []


def test_node_stop_kill_start_and_manager_restart(scratch):
    name, subnet = scratch("ctl", "10.99.8.0/24")
    shoal("dev", "up", "--nodes", "2", "--subnet", subnet, "--agent-interval", "1", *_args(name))
    env = {**os.environ, **env_of(shoal("dev", "env", *_args(name)).stdout)}  # the manager, over mutual TLS

    def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, check=check, timeout=60, env=env
        )

    def node2_status() -> str:
        info = docker("info").stdout
        return info.split(" node2:", 1)[1].split("└ Status: ", 1)[1].split("\n", 1)[0]

    out = shoal("dev", "node", "stop", "node2", *_args(name)).stdout
    assert "node2: agent and engine stopped" in out
    status = shoal("dev", "status", *_args(name), check=False)
    assert status.returncode == 1 and "down" in status.stdout
    deadline = time.monotonic() + 10
    while node2_status() != "Unhealthy":
        assert time.monotonic() < deadline, docker("info").stdout
        time.sleep(0.2)
    refused = docker("run", "--rm", "-e", "constraint:node==node2", "busybox", "true", check=False)
    assert refused.returncode != 0 and "node2 critical" in refused.stderr
    assert docker("run", "--rm", "busybox", "echo", "still placed").stdout == "still placed\n"  # on node1

    shoal("dev", "node", "start", "node2", *_args(name))
    assert shoal("dev", "status", *_args(name)).returncode == 0
    deadline = time.monotonic() + 10
    while docker("run", "--rm", "-e", "constraint:node==node2", "busybox", "true", check=False).returncode:
        assert time.monotonic() < deadline, "node2 never came back for placement"
        time.sleep(0.3)

    docker("run", "-d", "--name", "survivor", "-e", "constraint:node==node2", "--restart", "always",
           "busybox", "sleep", "300")  # fmt: skip
    assert "killed" in shoal("dev", "node", "kill", "node2", *_args(name)).stdout
    assert not host.netns_pids(f"{name}-node2")  # nothing left running on the node
    shoal("dev", "node", "start", "node2", *_args(name))
    deadline = time.monotonic() + 15
    while "Up " not in docker("ps", "--filter", "name=survivor", "--format", "{{.Status}}").stdout:
        assert time.monotonic() < deadline, "the restart-always container did not come back"
        time.sleep(0.3)

    again = shoal("dev", "node", "start", "node2", *_args(name), check=False)
    assert again.returncode != 0 and "running already" in again.stderr
    out = shoal("dev", "manager", "restart", "--strategy", "binpack", *_args(name)).stdout
    assert "strategy binpack" in out and "Strategy: binpack" in docker("info").stdout
    assert "export DOCKER_HOST=tcp://10.99.8.1:2376" in shoal("dev", "env", *_args(name)).stdout
