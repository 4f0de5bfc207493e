"""`up`, `down` and their failures leave the host as they found it, checked with the host's own tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, SHOAL, shoal
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
    engine = ["docker", "-H", "tcp://10.99.2.11:2375"]
    subprocess.run(
        [*engine, "run", "-d", "-p", "8081:80", "busybox", "httpd", "-f", "-p", "80"],
        check=True,
        capture_output=True,
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
