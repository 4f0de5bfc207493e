"""One contract, two agents: a simulated agent (shoal.sim.agents) and a real `Agent` (shoal.agent.loop, its
own gather and publish, run once in this process) publish to the same real registry, and what each leaves
there -- the facts and info documents, the claim, the catalog entry and its TTL check -- has the same keys
and types, so the scale benchmark's registry and manager see simulated nodes as they see real ones.

Both agents face a simulated engine: the real agent's docker facts then come from the same /info, and
tests/contract/test_engine.py holds that engine to a real dockerd, so no dev cluster is needed here (this
file runs anywhere, on loopback). What differs by nature is left out: values, the host's CPU count (the
processorN facts), `domain` (a host without one has none), and the simulated node's facts.d (`zone`).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from shoal import keys
from shoal.agent.loop import Agent, AgentConfig
from shoal.cluster.nodes import node_state
from shoal.sim.agents import Agents, sim_nodes
from shoal.sim.engines import serve

T = TypeVar("T")
BY_NATURE = re.compile(r"^processor\d+$|^domain$|^zone$")
AGENTS = [sys.executable, "-m", "shoal.sim.agents"]
OUTPUT = re.compile(r"^\d+ facts gathered$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `shoal registry` on SQLite, on loopback ports of its own."""
    d = tmp_path_factory.mktemp("registry")
    port = _free_port()
    log = open(d / "registry.log", "wb")  # noqa: SIM115
    argv = [sys.executable, "-m", "shoal", "registry", "--store", f"sqlite:///{d}/registry.db"]
    argv += ["--http", f"127.0.0.1:{port}", "--dns", f"127.0.0.1:{_free_port()}", "--node", "contract"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (d / "registry.log").read_text()
            try:
                urllib.request.urlopen(f"{url}/v1/status/leader", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the registry did not come up"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _get(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as r:
        return json.loads(r.read())


def _doc(url: str, key: str) -> Any:
    with urllib.request.urlopen(f"{url}/v1/kv/{key}?raw", timeout=10) as r:
        return json.loads(r.read())


def _claim(url: str, node: str) -> dict[str, Any]:
    return _get(url, f"/v1/kv/{keys.node_claim(node)}")[0]


def _shape(doc: Any) -> Any:
    """What a reader relies on: keys, and the JSON type of each value (nested)."""
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    return type(doc).__name__


def _facts_shape(facts: dict[str, Any]) -> dict[str, str]:
    return {k: type(v).__name__ for k, v in facts.items() if not BY_NATURE.match(k)}


async def _with_engine(body: Callable[[str, dict[str, Any]], Awaitable[T]]) -> T:
    """`body(engine url, its /info)` with one simulated engine up on a loopback port."""
    sim = await serve(1, latency=0.001)
    try:
        url = next(iter(sim.nodes.values()))
        async with (
            aiohttp.ClientSession() as s,
            s.get(url.replace("tcp://", "http://") + "/v1.41/info") as r,
        ):
            info = await r.json()
        return await body(url, info)
    finally:
        await sim.close()


async def _sim_agents(
    registry: str, nodes: dict[str, str], then: Callable[[Agents], Awaitable[None]]
) -> None:
    async with Agents(sim_nodes(nodes), registry, 5.0, 10.0) as agents:
        await asyncio.wait_for(agents.ready(), 60)
        await then(agents)


def _left(registry: str, node: str) -> dict[str, Any]:
    """Everything an agent leaves in the registry about its node."""
    return {
        "facts": _doc(registry, keys.node_facts(node)),
        "info": _doc(registry, keys.node_info(node)),
        "claim": _doc(registry, keys.node_claim(node)),
        "claim_session": _claim(registry, node)["Session"],
        "catalog": _get(registry, f"/v1/catalog/node/{node}"),
        "checks": _get(registry, f"/v1/health/node/{node}"),
    }


def test_a_simulated_agent_leaves_what_a_real_one_leaves(registry: str) -> None:
    seen: dict[str, Any] = {}

    async def body(engine: str, _info: dict[str, Any]) -> None:
        """The real agent's own gather and publish, once (this host's facts, the engine's docker facts),
        then a simulated agent's first round; both looked at while alive, and again once they left."""
        config = AgentConfig(
            manager=registry,
            node="real00000",
            engine=engine,
            advertise_engine=engine,
            labels={"rack": "r1"},
            interval=30.0,  # a TTL of 90 s: still passing when looked at, however slow the machine
        )
        async with Agent(config) as agent:
            await agent.publish(await agent.gather())

            async def look(_agents: Agents) -> None:
                seen["alive"] = {n: _left(registry, n) for n in ("real00000", "sim00000")}

            await _sim_agents(registry, {"sim00000": engine}, look)
            await agent.leave()
        seen["left"] = {n: _get(registry, f"/v1/health/node/{n}") for n in ("real00000", "sim00000")}

    asyncio.run(_with_engine(body))
    real, sim = seen["alive"]["real00000"], seen["alive"]["sim00000"]
    assert _shape({**sim["facts"], "facts": {}}) == _shape({**real["facts"], "facts": {}})
    assert sim["facts"]["failed_sources"] == real["facts"]["failed_sources"] == []
    assert _facts_shape(sim["facts"]["facts"]) == _facts_shape(real["facts"]["facts"])
    processors = {k for k in sim["facts"]["facts"] if re.match(r"^processor\d+$", k)}
    assert len(processors) == sim["facts"]["facts"]["processorcount"]

    assert _shape(sim["info"]) == _shape(real["info"])
    assert sim["info"]["engine"] == real["info"]["engine"]  # the simulated engine, where the manager goes
    assert _shape(sim["claim"]) == _shape(real["claim"])
    assert real["claim_session"] and sim["claim_session"]

    assert _shape(sim["catalog"]) == _shape(real["catalog"])
    meta = sim["catalog"]["Node"]["Meta"]
    assert meta.keys() == real["catalog"]["Node"]["Meta"].keys()
    assert (meta["engine"], meta["cpus"]) == (sim["info"]["engine"], str(sim["info"]["cpus"]))
    assert sim["catalog"]["Node"]["Address"] == sim["info"]["address"] == sim["facts"]["facts"]["ipaddress"]
    assert sim["catalog"]["Services"].keys() == real["catalog"]["Services"].keys() == {keys.AGENT_SERVICE}
    assert [_shape(c) for c in sim["checks"]] == [_shape(c) for c in real["checks"]]
    for who in (real, sim):
        [check] = who["checks"]
        assert (check["CheckID"], check["Type"], check["Status"]) == (keys.AGENT_SERVICE, "ttl", "passing")
        assert OUTPUT.match(check["Output"]), check["Output"]
    # stopped cleanly, as `shoal agent` leaves: the node critical at once, in the same words
    assert [(c["Status"], c["Output"]) for n in ("real00000", "sim00000") for c in seen["left"][n]] == [
        ("critical", "agent stopped")
    ] * 2


def test_a_publish_writes_the_facts_and_nothing_that_did_not_change(registry: str) -> None:
    """Every publish rewrites the facts document (the node's heartbeat) but neither the info document
    nor the catalog entry when they are as the registry holds them: a health watcher of the agents'
    service stays blocked across a publish, as it would under Consul, while the TTL is still renewed."""
    node = "quiet00000"
    seen: dict[str, Any] = {}

    def modify_index(key: str) -> int:
        return int(_get(registry, f"/v1/kv/{key}")[0]["ModifyIndex"])

    async def body(engine: str, _info: dict[str, Any]) -> None:
        config = AgentConfig(
            manager=registry, node=node, engine=engine, advertise_engine=engine, interval=30.0
        )
        async with Agent(config) as agent:
            await agent.publish(await agent.gather())
            before = {k: modify_index(k) for k in (keys.node_facts(node), keys.node_info(node))}
            url = f"{registry}/v1/health/checks/{keys.AGENT_SERVICE}"
            with urllib.request.urlopen(url, timeout=10) as r:
                index = r.headers["X-Consul-Index"]

            def watch() -> tuple[float, str]:
                t0 = time.monotonic()
                with urllib.request.urlopen(f"{url}?index={index}&wait=3s", timeout=30) as r:
                    return time.monotonic() - t0, r.headers["X-Consul-Index"]

            watcher = asyncio.get_running_loop().run_in_executor(None, watch)
            await asyncio.sleep(0.5)
            await agent.publish(await agent.gather())
            seen["watch"] = await watcher
            seen["after"] = {k: modify_index(k) for k in before}
            seen["before"] = before
            seen["checks"] = _get(registry, f"/v1/health/node/{node}")
            await agent.leave()

    asyncio.run(_with_engine(body))
    facts, info = keys.node_facts(node), keys.node_info(node)
    assert seen["after"][facts] > seen["before"][facts]  # the heartbeat, written again
    assert seen["after"][info] == seen["before"][info]  # the same document: not written again
    took, _ = seen["watch"]
    assert took >= 2.9, f"a publish that changed no check woke the health watcher after {took:.1f}s"
    assert [c["Status"] for c in seen["checks"]] == ["passing"]


def test_a_simulated_node_agrees_with_its_engine(registry: str) -> None:
    """What the agent publishes and what the engine answers are one node: CPUs, memory, docker version,
    storage driver, kernel, OS, address; and the manager's road turns them into that node."""
    seen: dict[str, Any] = {}

    async def body(engine: str, info: dict[str, Any]) -> None:
        async def look(_agents: Agents) -> None:
            facts = _doc(registry, keys.node_facts("sim00001"))
            infodoc = _doc(registry, keys.node_info("sim00001"))
            checks = _get(registry, f"/v1/health/node/{'sim00001'}")
            seen.update(facts=facts, info=infodoc, checks=checks)

        seen["engine_info"] = info
        await _sim_agents(registry, {"sim00001": engine}, look)

    asyncio.run(_with_engine(body))
    facts, info, engine_info = seen["facts"]["facts"], seen["info"], seen["engine_info"]
    assert facts["processorcount"] == info["cpus"] == engine_info["NCPU"]
    assert facts["memorysize_mb"] == info["memory_mb"] == engine_info["MemTotal"] / 2**20
    assert facts["memoryfree_mb"] <= facts["memorysize_mb"]
    assert facts["docker_version"] == engine_info["ServerVersion"] == "20.10.24+dfsg1"
    assert facts["docker_storage_driver"] == engine_info["Driver"] == "overlay2"
    assert facts["kernelrelease"] == engine_info["KernelVersion"]
    assert engine_info["OperatingSystem"].startswith(facts["operatingsystem"])
    assert facts["docker_containers"] == engine_info["Containers"]
    assert info["engine"].startswith("tcp://127.0.0.1:") and info["address"] == "127.0.0.1"
    # while it runs the node is alive, its check renewed by the publish, in the real agent's words
    [check] = seen["checks"]
    assert (check["Status"], check["Type"]) == ("passing", "ttl") and OUTPUT.match(check["Output"])
    state = node_state(seen["facts"], info, check["Status"], engine_info=engine_info)
    assert (state.name, state.engine, state.cpus) == ("sim00001", info["engine"], engine_info["NCPU"])
    assert state.memory == engine_info["MemTotal"]
    assert state.labels["storagedriver"] == "overlay2"


def test_a_changed_fact_is_published_at_once_and_core_facts_still_win(registry: str) -> None:
    """A `fact` command stands for a changed facts.d file: published without waiting out the interval
    (5 s here), and merged by the real agent's rules (a source naming a core fact is refused whole)."""
    seen: dict[str, Any] = {}

    async def changed(expect: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while not expect(doc := _doc(registry, keys.node_facts("sim00002"))):
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.05)
        return doc

    async def body(engine: str, _info: dict[str, Any]) -> None:
        async def steer(agents: Agents) -> None:
            assert agents.command("fact sim00002 rack_row=7 benchround=r1") == {
                "fact": "sim00002",
                "facts": 2,
            }
            seen["set"] = await changed(lambda d: d["facts"].get("benchround") == "r1")
            agents.command("fact sim00002 processorcount=999 benchround=r2")
            seen["core"] = await changed(lambda d: bool(d["failed_sources"]))
            seen["bad"] = [agents.command(c) for c in ("fact nosuch a=b", "fact sim00002 nokv", "interval x")]
            seen["stats"] = agents.command("stats")

        await _sim_agents(registry, {"sim00002": engine}, steer)

    asyncio.run(_with_engine(body))
    assert seen["set"]["facts"]["rack_row"] == "7"
    core = seen["core"]
    assert core["facts"]["processorcount"] != 999 and "benchround" not in core["facts"]
    assert core["facts"]["shoal_failed_sources"] == "control.txt"
    assert core["failed_sources"] == [
        {"source": "control.txt", "reason": "names core fact processorcount; source skipped"}
    ]
    assert [list(b) for b in seen["bad"]] == [["error"]] * 3
    assert "no simulated agent for node 'nosuch'" in seen["bad"][0]["error"]
    stats = seen["stats"]
    # the first round and the one for r1 are done by then (an agent publishes one round at a time);
    # the round for r2 may still be on its way when its facts document is read
    assert stats["agents"] == 1 and stats["published_total"] >= 2 and stats["errors"] == {}


def test_the_cli_prints_ready_and_answers_commands(registry: str, tmp_path: Path) -> None:
    """`python -m shoal.sim.agents` as the benchmark drives it: a ready line, then a JSON line per
    command; a missing engine map is a one-line error."""
    bad = subprocess.run(
        [*AGENTS, "--registry", registry, "--engines", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1, bad.stderr
    assert f"--engines {tmp_path / 'no'}: No such file or directory; give the file" in bad.stderr
    engines = subprocess.Popen(
        [sys.executable, "-m", "shoal.sim.engines", "--nodes", "3", "--first", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert engines.stdout is not None
        (tmp_path / "engines.json").write_text(engines.stdout.readline())
        agents = subprocess.Popen(
            [*AGENTS, "--registry", registry, "--interval", "1", "--engines", str(tmp_path / "engines.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert agents.stdin is not None and agents.stdout is not None
            assert json.loads(agents.stdout.readline()) == {"agents": 3, "published": 3, "stopped": 0}
            agents.stdin.write("stats\nbogus\n")
            agents.stdin.flush()
            stats, bogus = json.loads(agents.stdout.readline()), json.loads(agents.stdout.readline())
            assert (stats["agents"], stats["stopped"], stats["errors"]) == (3, 0, {})
            assert bogus["error"].startswith("unknown command 'bogus'")
            nodes = {n["Node"] for n in _get(registry, "/v1/catalog/nodes")}
            assert {"sim00010", "sim00011", "sim00012"} <= nodes
        finally:
            agents.terminate()
            agents.wait(30)
    finally:
        engines.terminate()
        engines.wait(30)
    assert agents.returncode == 0
    checks = {c["Node"]: c for c in _get(registry, f"/v1/health/checks/{keys.AGENT_SERVICE}")}
    # the agents said so as they stopped (once the TTL passes too, Consul's words come first:
    # "TTL expired (last output before timeout follows): agent stopped")
    outputs = [checks[n]["Output"] for n in ("sim00010", "sim00011", "sim00012")]
    assert all(o.endswith("agent stopped") for o in outputs), outputs
