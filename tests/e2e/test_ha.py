"""Three managers over a 3-member etcd (`shoal dev up --managers 3`), driven with the real docker CLI
and dig: one primary; placements from two managers never both take one host port; the leader killed
as a whole host (its namespace: manager and etcd member) costs no read and no acknowledged create;
two of three down, writes are refused naming quorum while reads answer; all back, all works.

Its own cluster (10.99.21.0/24), so it runs beside the session clusters. Deadlines are generous
(a loaded 2-core machine); the failover's speed is benchmarks/ha.py's figure.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT, env_of, shoal

pytestmark = pytest.mark.e2e

NAME, SUBNET = "ha", "10.99.21.0/24"
ARGS = ["--name", NAME, "--root", str(ROOT)]
WITHIN = 60.0


class HA:
    def __init__(self) -> None:
        self.env = {**os.environ, **env_of(shoal("dev", "env", *ARGS).stdout)}
        self.managers = self.env["SHOAL_MANAGERS"].split(",")  # tcp://ADDR:2376, manager 1 first
        assert len(self.managers) == 3, self.env["SHOAL_MANAGERS"]

    def docker(self, n: int, *args: str, check: bool = True, timeout: float = 60):
        return subprocess.run(
            ["docker", "-H", self.managers[n - 1], *args],
            capture_output=True, text=True, check=check, timeout=timeout, env=self.env,
        )  # fmt: skip

    def address(self, n: int) -> str:
        return self.managers[n - 1].removeprefix("tcp://").rsplit(":", 1)[0]

    def role(self, n: int) -> str:
        info = self.docker(n, "info", timeout=20).stdout
        return info.split("Role: ", 1)[1].split("\n", 1)[0].strip() if "Role: " in info else ""

    def primary(self, among: list[int]) -> int:
        end = time.monotonic() + WITHIN
        while time.monotonic() < end:
            try:
                roles = {n: self.role(n) for n in among}
            except subprocess.SubprocessError:
                roles = {}
            leaders = [n for n, r in roles.items() if r == "primary"]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.2)
        raise AssertionError(f"no single primary among managers {among}")

    def dig(self, n: int, name: str, kind: str) -> list[str]:
        out = subprocess.run(
            ["dig", "+short", "+time=2", "+tries=1", "-p", "8600", f"@{self.address(n)}", name, kind],
            capture_output=True, text=True, check=False, timeout=20,
        )  # fmt: skip
        return sorted(line for line in out.stdout.split("\n") if line) if out.returncode == 0 else []


@pytest.fixture(scope="module")
def ha() -> Iterator[HA]:
    shoal("dev", "down", *ARGS, check=False)
    try:
        shoal("dev", "up", "--nodes", "2", "--managers", "3", "--subnet", SUBNET, "--agent-interval", "1",
              *ARGS, timeout=600)  # fmt: skip
        yield HA()
    finally:
        shoal("dev", "down", *ARGS, check=False, timeout=300)


def test_one_primary_and_every_manager_in_dns(ha: HA) -> None:
    leader = ha.primary([1, 2, 3])
    for n in (1, 2, 3):
        info = ha.docker(n, "info").stdout
        if n == leader:
            assert "Role: primary" in info
        else:
            assert "Role: replica" in info and f"Primary: {ha.address(leader)}:2376" in info
    end = time.monotonic() + WITHIN
    while ha.dig(1, "manager.service.shoal", "A") != sorted(ha.address(n) for n in (1, 2, 3)):
        assert time.monotonic() < end, ha.dig(1, "manager.service.shoal", "A")
        time.sleep(0.5)
    srv = [line.split() for line in ha.dig(2, "manager.service.shoal", "SRV") if line]
    assert len(srv) == 3 and {row[2] for row in srv} == {"2376"}


def test_two_managers_racing_for_one_host_port_place_one_container_per_node(ha: HA) -> None:
    def run(i: int) -> subprocess.CompletedProcess[str]:
        return ha.docker(
            1 + i % 2, "run", "-d", "--name", f"race{i}", "-p", "18080:80",
            "busybox", "httpd", "-f", "-p", "80", check=False, timeout=120,
        )  # fmt: skip

    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(run, range(20)))
        won = [r for r in results if r.returncode == 0]
        lost = [r for r in results if r.returncode != 0]
        assert len(won) == 2, [r.stderr for r in results]  # one per node: 2 nodes, one port
        for r in lost:
            assert "port 18080/tcp" in r.stderr, r.stderr
        # the third manager saw both (its cache follows the engines' event streams: soon, not at once)
        end = time.monotonic() + WITHIN
        while (
            len(rows := ha.docker(3, "ps", "--filter", "name=race", "--format", "{{.Names}}").stdout.split())
            < 2
        ):
            assert time.monotonic() < end, rows
            time.sleep(0.2)
        assert len(rows) == 2 and len({r.split("/")[0] for r in rows}) == 2, rows  # node1/raceN, node2/raceM
    finally:
        names = [f"race{i}" for i in range(20)]
        ha.docker(3, "rm", "-f", *names, check=False, timeout=120)


def test_the_leader_killed_costs_no_read_and_no_acknowledged_create(ha: HA) -> None:
    leader = ha.primary([1, 2, 3])
    rest = [n for n in (1, 2, 3) if n != leader]
    reader, writer = rest
    stop = threading.Event()
    failed_reads: list[str] = []
    acked: list[str] = []
    refused: list[str] = []

    def read() -> None:
        while not stop.is_set():
            r = ha.docker(reader, "ps", "-a", check=False, timeout=30)
            if r.returncode != 0:
                failed_reads.append(r.stderr)
            time.sleep(0.1)

    def write() -> None:
        i = 0
        while not stop.is_set():
            name = f"hawrite{i}"
            r = ha.docker(writer, "run", "-d", "--name", name, "busybox", "true", check=False, timeout=60)
            (acked if r.returncode == 0 else refused).append(name if r.returncode == 0 else r.stderr)
            i += 1

    ha.docker(leader, "run", "-d", "--name", "hawhy", "busybox", "sleep", "600")  # placed by the leader
    time.sleep(1)  # its decision record lands in the registry in the background
    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        assert "killed" in shoal("dev", "manager", "kill", str(leader), *ARGS).stdout
        new = ha.primary(rest)
        assert new in rest
        time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert failed_reads == []
    assert acked, refused  # creates went on through the survivor
    listed = ha.docker(
        reader, "ps", "-a", "--filter", "name=hawrite", "--format", "{{.Names}}"
    ).stdout.split()
    names = [n.split("/", 1)[1] for n in listed]
    assert sorted(set(names)) == sorted(names)  # none created twice
    assert set(acked) <= set(names)  # none acknowledged and lost
    # `shoal why` through a survivor still answers for a container the dead manager placed
    why = shoal("why", "hawhy", env={**ha.env, "DOCKER_HOST": ha.managers[reader - 1]}).stdout
    assert "hawhy → node" in why, why

    # the agents' sessions and checks rode it out: every node still passing, and its facts still fresh
    # through the survivors (the agents moved to a live registry; the managers follow their own)
    def fresh() -> bool:
        info = ha.docker(reader, "info").stdout
        stamps = [
            line.split("UpdatedAt: ", 1)[1].strip() for line in info.splitlines() if "UpdatedAt: " in line
        ]
        ages = [
            time.time() - datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            for t in stamps
        ]
        return info.count("└ Status: Healthy") == 2 and len(ages) == 2 and max(ages) < 5

    time.sleep(3)
    end = time.monotonic() + 15
    while not fresh():
        assert time.monotonic() < end, ha.docker(reader, "info").stdout
        time.sleep(0.5)
    end = time.monotonic() + WITHIN
    while ha.dig(new, "manager.service.shoal", "A") != sorted(ha.address(n) for n in rest):
        assert time.monotonic() < end, ha.dig(new, "manager.service.shoal", "A")
        time.sleep(0.5)
    shoal("dev", "manager", "start", str(leader), *ARGS, timeout=300)
    end = time.monotonic() + WITHIN
    while ha.dig(new, "manager.service.shoal", "A") != sorted(ha.address(n) for n in (1, 2, 3)):
        assert time.monotonic() < end, "the restarted manager is not back in manager.service.shoal"
        time.sleep(0.5)
    ha.docker(new, "rm", "-f", "hawhy", *names, check=False, timeout=120)


def test_two_of_three_down_refuse_writes_naming_quorum_and_reads_answer_then_all_resumes(ha: HA) -> None:
    ha.primary([1, 2, 3])
    try:
        for n in (2, 3):
            shoal("dev", "manager", "kill", str(n), *ARGS)
        r = ha.docker(1, "run", "-d", "--name", "noquorum", "busybox", "true", check=False, timeout=120)
        assert r.returncode != 0 and "quorum" in r.stderr, r.stderr
        assert ha.docker(1, "ps", "-a").returncode == 0
    finally:
        for n in (2, 3):
            shoal("dev", "manager", "start", str(n), *ARGS, timeout=300)
    ha.primary([1, 2, 3])
    end = time.monotonic() + WITHIN
    while ha.docker(1, "run", "--rm", "busybox", "true", check=False).returncode != 0:
        assert time.monotonic() < end, "creates did not resume with quorum back"
        time.sleep(1)
