"""Decisions are data: a dataset's move is a recorded decision with its reasons, which `shoal why DATASET`
and the dashboard show, and which a manager restart does not lose (the registry's decision log)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import requests

from tests.conftest import wait_for

pytestmark = pytest.mark.e2e
SHOAL = [sys.executable, "-m", "shoal"]


def shoal(dev_cluster, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    """The `shoal` CLI as a user runs it after `eval "$(shoal dev env)"`."""
    p = subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=timeout, env=dev_cluster.client_env()
    )
    assert not check or p.returncode == 0, f"shoal {' '.join(args)}: {p.stdout}\n{p.stderr}"
    return p


def _shows_the_move(out: str, vol: str) -> bool:
    return (
        f"dataset {vol} (" in out
        and "its latest move" in out
        and "moved node1 → node2" in out
        and f"shoal volume move: {vol} from node1 to node2" in out
        and "node2 holds the writable copy" in out
    )


def _logged_on_dashboard(dev_cluster, vol: str) -> bool:
    """The dashboard's document lists the move among its decisions."""
    try:
        got = dev_cluster.http("GET", "/shoal/v1/overview", timeout=10)
    except requests.RequestException:
        return False
    return got.status_code == 200 and any(
        d.get("kind") == "move" and d.get("name") == vol and d.get("target") == "node2"
        for d in got.json()["decisions"]
    )


def test_shoal_why_shows_a_datasets_move_and_still_does_after_a_manager_restart(dev_cluster, gone):
    vol = f"dd{uuid.uuid4().hex[:6]}"
    gone["volumes"].append(f"{vol}@bronze")
    dev_cluster.cli("volume", "create", "-d", "shoal", f"node1/{vol}@bronze")

    def moved() -> bool:
        # refused before it begins while the manager of a cluster just brought up has not yet listed
        # node2's engine ("node2 does not answer"): asked again; any other refusal fails the test
        p = shoal(dev_cluster, "volume", "move", vol, "node2", check=False)
        assert p.returncode == 0 or "does not answer" in p.stderr, p.stderr
        return p.returncode == 0

    wait_for(moved, 60, "the manager never saw node2's engine")

    why = shoal(dev_cluster, "why", vol).stdout
    assert _shows_the_move(why, vol), why
    assert _logged_on_dashboard(dev_cluster, vol)

    shoal(
        dev_cluster, "dev", "manager", "restart", "--name", dev_cluster.name, "--root", str(dev_cluster.root)
    )
    # the new manager has nothing in memory: what it shows comes from the registry's decision log
    again = wait_for(
        lambda: (p := shoal(dev_cluster, "why", vol, check=False)).returncode == 0 and p.stdout,
        60,
        "the restarted manager never answered `shoal why`",
    )
    assert _shows_the_move(again, vol), again
    wait_for(lambda: _logged_on_dashboard(dev_cluster, vol), 30, "the dashboard lost the move")
