"""Bad requests to `shoal dev up` get one clear line naming the problem and the way out, and make nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT, shoal
from tests.e2e.leftovers import leftovers

pytestmark = pytest.mark.e2e
NAME = "bx"


def _up(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return shoal("dev", "up", "--name", NAME, "--root", str(ROOT), *args, check=False, env=env)


def _one_clear_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("shoal: ")
    return lines[0]


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    assert leftovers(NAME, ROOT) == []


def test_zero_nodes():
    line = _one_clear_line(_up("--nodes", "0"))
    assert "--nodes 0: a cluster needs at least 1 node; try --nodes 3" in line


def test_more_nodes_than_the_host_can_hold():
    line = _one_clear_line(_up("--nodes", "200", "--subnet", "10.99.0.0/16"))
    assert "--nodes 200 is more than this host can hold" in line and "or fewer" in line


def test_not_root():
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv = [*nobody, sys.executable, "-m", "shoal", "dev", "up", "--name", NAME, "--root", tempfile.mkdtemp()]
    line = _one_clear_line(subprocess.run(argv, capture_output=True, text=True))
    assert "must run as root" in line and "sudo" in line


def test_dockerd_missing():
    bindir = tempfile.mkdtemp()
    for tool in (
        "ip",
        "iptables",
        "nsenter",
        "unshare",
        "losetup",
        "mount",
        "mkfs.btrfs",
        "busybox",
        "redis-server",
    ):
        os.symlink(shutil.which(tool), os.path.join(bindir, tool))
    try:
        line = _one_clear_line(_up("--nodes", "1", env={**os.environ, "PATH": bindir}))
    finally:
        shutil.rmtree(bindir)
    assert "dockerd not found on PATH" in line and "apt-get install docker.io" in line


def test_a_clashing_netns_name():
    subprocess.run(["ip", "netns", "add", f"{NAME}-node2"], check=True)
    try:
        line = _one_clear_line(_up("--nodes", "3", "--subnet", "10.99.3.0/24"))
    finally:
        subprocess.run(["ip", "netns", "del", f"{NAME}-node2"], check=True)
    assert f"network namespace {NAME}-node2 already exists" in line and "--name" in line


def test_a_clashing_network():
    subprocess.run(["ip", "link", "add", "bxclash0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.99.3.5/24", "dev", "bxclash0"], check=True)
        line = _one_clear_line(_up("--nodes", "1", "--subnet", "10.99.3.0/24"))
    finally:
        subprocess.run(["ip", "link", "del", "bxclash0"], check=True)
    assert "--subnet 10.99.3.0/24 clashes with 10.99.3.5/24" in line and "choose another" in line


def test_a_malformed_label():
    line = _one_clear_line(_up("--label", "node1-disk-ssd"))
    assert "'node1-disk-ssd' is not NODE=KEY=VALUE" in line
