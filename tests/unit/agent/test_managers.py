"""An agent given several managers (issue 16, `shoal agent --manager a,b,c`), against real processes on
loopback: a plain agent publishes through the live registry of a list whose first is dead; a joining
agent joins through the first manager that answers, keeps every manager and the registry list the join
answer names, writes its dataset records through the managers and renews its certificate through one
that is still up once the one it used is killed -9; and a bad list is refused at once, naming the entry.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from shoal import keys, pki
from shoal.agent import join
from shoal.agent.record_writes import ManagerRecords
from shoal.agent.transfer import Transport
from shoal.data.model import Dataset
from shoal.registry.etcd_server import free_port
from tests.registry.conftest import RegistryProc, sqlite_registry
from tests.unit.agent.managers import SHOAL, start_manager, wait_until


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as r:
        yield r


# --- the command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["--manager", "127.0.0.1:8500,,127.0.0.2:8500"], "''"),
        (["--manager", "127.0.0.1:8500,127.0.0.2:85000"], "'127.0.0.2:85000'"),
        (
            ["--manager", "https://10.0.0.1:2377,http://10.0.0.2:2377", "--join", "x"],
            "'http://10.0.0.2:2377'",
        ),
        (
            ["--manager", "127.0.0.1:8500", "--registry", "127.0.0.1:8501,unix:///run/consul"],
            "'unix:///run/consul'",
        ),
    ],
)
def test_a_bad_manager_list_is_refused_at_once_naming_the_entry(argv, bad, tmp_path):
    state = ["--state-dir", str(tmp_path)] if "--join" in argv else []
    proc = subprocess.run(
        [*SHOAL, "agent", *argv, *state, "--node", "n1"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert bad in proc.stderr and "separated by commas" in proc.stderr


def test_a_plain_agent_given_a_dead_registry_first_publishes_to_the_live_one(registry, tmp_path):
    node = f"n{uuid.uuid4().hex[:6]}"
    dead = f"127.0.0.1:{free_port()}"
    (tmp_path / "facts.d").mkdir()
    agent = subprocess.Popen(
        [
            *SHOAL,
            "agent",
            "--manager",
            f"{dead},{registry.url}",
            "--node",
            node,
            "--engine",
            f"unix://{tmp_path}/no-engine.sock",
            "--facts-dir",
            str(tmp_path / "facts.d"),
            "--interval",
            "1",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "agent.log", "wb"),  # noqa: SIM115
    )
    try:
        consul = registry.client()

        def published() -> bool:
            _, checks = consul.health.node(node)
            return any(c["Status"] == "passing" for c in checks)

        wait_until("the node's check passing", published, proc=agent)
        _, doc = consul.kv.get(keys.node_info(node))
        assert doc is not None
    finally:
        agent.terminate()
        agent.wait(30)
    log = (tmp_path / "agent.log").read_text()
    assert "registry unreachable" not in log, log  # the dead one was skipped, never an error


# --- joining through several managers ---------------------------------------------------------------------


@dataclass
class Managers:
    tls: Path
    token: str
    join_ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    advertised: str

    def urls(self, dead: int) -> str:
        return ",".join([f"https://127.0.0.1:{dead}", *(f"https://127.0.0.1:{p}" for p in self.join_ports)])


@pytest.fixture(scope="module")
def managers(registry) -> Iterator[Managers]:
    """Two managers over one registry, each with its join listener; the join answer names a dead registry
    before the live one (the list an agent is told, with one manager's registry down)."""
    d = Path(tempfile.mkdtemp(prefix="shoal-managers-"))
    subprocess.run(
        [*SHOAL, "init", "--dir", str(d / "tls"), "--name", "127.0.0.1"], check=True, capture_output=True
    )
    advertised = f"http://127.0.0.1:{free_port()},{registry.url}"
    procs: list[subprocess.Popen] = []
    try:
        started = [
            start_manager(d / "tls", registry, advertised=advertised, log=d / f"manager{i}.log")
            for i in range(2)
        ]
        procs = [m.proc for m in started]
        token = subprocess.run(
            [*SHOAL, "token", "create", "-q", "-H", f"tcp://127.0.0.1:{started[0].api}"],
            check=True, capture_output=True, text=True, env={**os.environ, "DOCKER_TLS_VERIFY": ""},
        ).stdout.strip()  # fmt: skip
        yield Managers(d / "tls", token, [m.join for m in started], procs, advertised)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_an_agent_joins_writes_and_renews_through_whichever_manager_is_up(managers, registry, tmp_path):
    dead = free_port()
    given = managers.urls(dead)
    state = tmp_path / "agent"
    node = f"n{uuid.uuid4().hex[:6]}"

    async def main() -> dict:
        creds = await join.credentials(given, managers.token, node, state)
        async with aiohttp.ClientSession() as s:
            reg = creds.access().client(s)
            records = ManagerRecords(
                reg, s, creds.manager, Transport.tls(creds.ca, creds.cert, creds.key).client
            )
            first = Dataset(str(uuid.uuid4()), f"vol-{node}-1", "default", node)
            await records.commit((first,))
            written_first = (await records.record(first.id))[0]

            managers.procs[0].kill()  # the manager the agent joined and wrote through dies (-9)
            await asyncio.to_thread(managers.procs[0].wait)

            second = Dataset(str(uuid.uuid4()), f"vol-{node}-2", "default", node)
            await records.commit((second,))
            written_second = (await records.record(second.id))[0]
            before = creds.cert.read_bytes()
            renewed = await join.renew(creds, node)
            return {
                "creds": creds,
                "registry_in_use": reg.base,
                "first": written_first,
                "second": written_second,
                "renewed": renewed.cert.read_bytes() != before,
                "expires": pki.expires(renewed.cert.read_bytes()),
            }

    got = asyncio.run(main())
    creds = got["creds"]
    assert creds.manager == given  # every manager kept, the dead one too (it may come back)
    assert creds.registry == managers.advertised  # the registry list, as the join answer named it
    assert got["registry_in_use"] == registry.url
    assert got["first"] is not None and got["first"].node == node
    assert got["second"] is not None and got["second"].node == node
    assert got["renewed"] and got["expires"] > time.time()
    # a restarted agent renews through the managers given now, not only the ones it joined with
    again = asyncio.run(join.credentials(f"https://127.0.0.1:{managers.join_ports[1]}", "", node, state))
    assert again.manager == f"https://127.0.0.1:{managers.join_ports[1]}"
