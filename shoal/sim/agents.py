"""Simulated agents: one per simulated node, many per process, publishing to the registry through the real
agent's own `Agent.publish` -- its claim on the node name (`publish.claim`), the facts and info documents
under `shoal.keys`, the catalog entry with the TTL check (`publish.registration`), the session renewal --
so the registry and the manager see 1,000 nodes exactly as they would see 1,000 `shoal agent`s.

Only the gathering is simulated. Host facts start from `shoal.sim.nodes` and move a little each round
(uptime, load, free memory, as on a live host); the node's CPUs and memory are its engine's NCPU and
MemTotal, its address the loopback address its engine listens on, and its docker facts and engine labels
come from the simulated engine's own /info through the real `facts.docker.from_info`; the node's extra
facts (the documents' `zone`, and what `fact` commands set) go in as external sources through the real
`merge`, so core facts still win. Each agent runs on its interval (its first round at a random point
of it, each gather taking a few random milliseconds, as a real one's does), renews its session and TTL on
every publish, and backs off as the real agent does while the registry is away.

What a real agent does that these do not: read /proc (the documents stand for it), read the engine's
/info every round (here every `--engine-every` seconds: the docker facts move only when containers come
and go, and 1,000 /info reads a second would cost the simulated engines more than the manager), poll a
facts.d directory (a `fact` command stands for a changed file, and publishes at once), run a data
service.

    python -m shoal.sim.agents --registry http://127.0.0.1:8500 --engines engines.json --interval 5

`--engines` is a file holding the map `python -m shoal.sim.engines` prints (repeat it for several).
Prints {"agents": N, "published": P, "stopped": S} on one line once every agent has published (or stopped:
a node name another agent holds); then reads commands, one a line:
`interval SECONDS` (every agent's interval, and with it the TTL), `fact NODE KEY=VALUE...` (external facts
on NODE, published at once; `fact NODE` alone clears them), `stats` (one JSON line: publishes, errors,
publish latency and lateness since the last `stats`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from shoal import logs
from shoal.agent.facts import Facts
from shoal.agent.facts import docker as docker_facts
from shoal.agent.facts.external import SourceError
from shoal.agent.facts.host import human_memory
from shoal.agent.loop import MAX_BACKOFF, Agent, AgentConfig, Snapshot, merge
from shoal.errors import Conflict, RegistryUnreachable, ShoalError
from shoal.logs import kv
from shoal.signals import stop_on_signals
from shoal.sim.nodes import documents

log = logging.getLogger("shoal.sim.agents")
ENGINE_EVERY = 10.0  # seconds between reads of a node's engine /info
GATHER_MS = (5.0, 30.0)  # what a real gather takes (host facts and one /info), drawn per round
EXTERNAL = ("zone",)  # facts the documents carry that a real node would get from facts.d
SIM_SOURCE = "sim.yaml"  # the facts.d source those stand for
CONTROL_SOURCE = "control.txt"  # the source `fact` commands stand for
OS_FAMILIES = {"Debian": "Debian", "Ubuntu": "Debian", "CentOS": "RedHat"}  # the OSes shoal.sim.nodes draws


@dataclass(frozen=True, slots=True)
class SimNode:
    """One simulated node: its name, its engine, and what its host looks like at the start."""

    name: str
    engine: str  # tcp://127.0.0.1:PORT, from `python -m shoal.sim.engines`
    host: Facts  # host facts, as shoal.sim.nodes gives them
    external: Facts  # facts a real node would have in facts.d
    labels: dict[str, str] = field(default_factory=dict)  # the agent's --label


def sim_nodes(engines: Mapping[str, str], seed: int = 0, now: float | None = None) -> list[SimNode]:
    """The nodes of an engine map, in name order, each with the next node document (pure but for the
    seed): the documents' host facts, the engine's address as the node's."""
    names = sorted(engines)
    out = []
    for name, (facts_doc, info_doc, _) in zip(
        names, documents(len(names), now or time.time(), seed), strict=True
    ):
        facts = dict(facts_doc["facts"])
        external = {k: facts.pop(k) for k in EXTERNAL if k in facts}
        address = engines[name].removeprefix("tcp://").rsplit(":", 1)[0]
        facts.update(
            hostname=name,
            fqdn=f"{name}.{facts.get('domain', 'sim.example')}",
            ipaddress=address,
            netmask="255.0.0.0",
            network=str(ipaddress.ip_network(f"{address}/8", strict=False).network_address),
        )
        out.append(SimNode(name, engines[name], facts, external, dict(info_doc.get("labels") or {})))
    return out


def host_facts(host: Facts, engine_info: Mapping[str, Any], uptime: float, load: float, free: float) -> Facts:
    """A node's core host facts this round (pure): the host as it started, with what its engine's /info
    says of the same host (NCPU, MemTotal, KernelVersion, OperatingSystem) so the two never disagree,
    this round's uptime, load average (in CPUs busy) and fraction of memory free; in the names and shapes
    `facts.host.gather` and `overload` give a real node (processorN, Facter's memory strings, overload)."""
    facts = dict(host)
    cpus = int(engine_info.get("NCPU") or facts.get("processorcount") or 1)
    total = float(engine_info.get("MemTotal") or 0) / 2**20 or float(facts.get("memorysize_mb", 0.0))
    overloaded = round(load / cpus * 100)
    if kernel := str(engine_info.get("KernelVersion") or ""):
        version = kernel.split("-")[0]
        facts.update(
            kernelrelease=kernel, kernelversion=version, kernelmajversion=".".join(version.split(".")[:2])
        )
    os_name = str(engine_info.get("OperatingSystem") or "").split(" ")[0]
    if os_name in OS_FAMILIES and os_name != facts.get("operatingsystem"):
        family, major = OS_FAMILIES[os_name], str(engine_info.get("OSVersion") or "").split(".")[0]
        facts.update(
            operatingsystem=os_name,
            osfamily=family,
            operatingsystemrelease=major,
            operatingsystemmajrelease=major,
            architecture="amd64" if family == "Debian" else "x86_64",
            selinux=family == "RedHat",
            selinux_enforced=False,
        )
    facts.update(
        {
            "processorcount": cpus,
            "memorysize_mb": total,
            "memoryfree_mb": total * free,
            "memorysize": human_memory(total),
            "memoryfree": human_memory(total * free),
            "uptime_seconds": int(uptime),
            "load_averages.1m": round(load, 2),
            "load_averages.5m": round(load, 2),
            "load_averages.15m": round(load, 2),
            "system_overload_1min": overloaded,
            "system_overload_5min": overloaded,
            "system_overload_10min": overloaded,
            "shoal_load_source": "loadavg",
            **{f"processor{i}": "Simulated CPU @ 2.40GHz" for i in range(cpus)},
        }
    )
    return facts


@dataclass
class Tally:
    """What the agents of a process did since the last `stats`."""

    published: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    publish: list[float] = field(default_factory=list)  # seconds each publish took
    late: list[float] = field(default_factory=list)  # seconds each round started after it was due
    since: float = field(default_factory=time.monotonic)

    def take(self, agents: int, total: int) -> dict[str, Any]:
        now = time.monotonic()
        out = {
            "agents": agents,
            "published_total": total,
            "window_s": round(now - self.since, 3),
            "published": self.published,
            "errors": dict(self.errors),
            "publish_ms": _percentiles(self.publish),
            "late_ms": _percentiles(self.late),
        }
        self.published, self.errors, self.publish, self.late, self.since = 0, Counter(), [], [], now
        return out


def _percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    xs = sorted(xs)
    at = {p: xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] for p in (50, 90, 99)}
    return {**{f"p{p}": round(v * 1000, 2) for p, v in at.items()}, "max": round(xs[-1] * 1000, 2)}


class SimAgent:
    """One simulated node's agent: a real `Agent` (never started on a host) fed simulated snapshots."""

    def __init__(
        self, node: SimNode, registry: str, interval: float, engine: aiohttp.ClientSession, tally: Tally
    ) -> None:
        config = AgentConfig(
            manager=registry,
            node=node.name,
            engine=node.engine,
            advertise_engine=node.engine,
            labels=node.labels,
            interval=interval,
        )
        self.node = node
        self.agent = Agent(config)
        self.extra: Facts = {}  # what `fact` commands set
        self.poke = asyncio.Event()
        self._engine = engine
        self._base = node.engine.replace("tcp://", "http://", 1)
        self._tally = tally
        self._rng = random.Random(node.name)
        self._started = time.time() - float(node.host.get("uptime_seconds", 0))
        cpus = int(node.host.get("processorcount") or 1)
        self._load = float(node.host.get("load_averages.1m", 0.0)) / cpus  # per CPU; the engine says how many
        self._free = float(node.host.get("memoryfree_mb", 0.0)) / max(float(node.host["memorysize_mb"]), 1.0)
        self._docker: tuple[Facts, dict[str, str], dict[str, Any]] | None = None
        self._docker_at = -1e9

    @property
    def interval(self) -> float:
        return self.agent.config.interval

    def set_interval(self, seconds: float) -> None:
        """As `shoal agent --interval`: the next publish renews the TTL check at 3 intervals."""
        self.agent.config = replace(self.agent.config, interval=seconds)
        self.poke.set()

    def set_facts(self, facts: Facts) -> None:
        """The node's facts.d says `facts` now: published at once, as the real agent's facts.d watch does."""
        self.extra = dict(facts)
        self.poke.set()

    async def _docker_facts(
        self, every: float
    ) -> tuple[Facts, dict[str, str], dict[str, Any], list[SourceError]]:
        """The docker facts from the engine's /info (through the real `from_info`), read again every
        `every` seconds; an engine that does not answer is reported as the real agent reports it."""
        if self._docker is None or time.monotonic() - self._docker_at >= every:
            try:
                async with self._engine.get(
                    f"{self._base}/v1.41/info", timeout=aiohttp.ClientTimeout(total=5)
                ) as r:
                    r.raise_for_status()
                    info = await r.json()
                facts, labels = docker_facts.from_info(info, [])
                self._docker, self._docker_at = (facts, labels, info), time.monotonic()
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                self._docker_at = -1e9
                reason = f"engine {self.node.engine} unreachable: {e}"
                return {}, {}, self._docker[2] if self._docker else {}, [SourceError("docker", reason)]
        facts, labels, info = self._docker
        return facts, labels, info, []

    async def gather(self, engine_every: float = ENGINE_EVERY) -> Snapshot:
        """This round's snapshot, shaped as `Agent.gather` makes it."""
        t0 = time.perf_counter()
        now = time.time()
        await asyncio.sleep(self._rng.uniform(*GATHER_MS) / 1000)
        dfacts, labels, info, errors = await self._docker_facts(engine_every)
        self._load = min(2.0, max(0.0, self._load + self._rng.gauss(0, 0.02)))
        self._free = min(0.95, max(0.05, self._free + self._rng.gauss(0, 0.01)))
        cpus = int(info.get("NCPU") or self.node.host.get("processorcount") or 1)
        core = host_facts(self.node.host, info, now - self._started, self._load * cpus, self._free)
        core.update(dfacts)
        sources = {SIM_SOURCE: self.node.external, **({CONTROL_SOURCE: self.extra} if self.extra else {})}
        facts, errors = merge(core, sources, {}, errors)
        return Snapshot(facts, tuple(errors), labels, now, time.perf_counter() - t0)

    async def run(self, stop: asyncio.Event, engine_every: float = ENGINE_EVERY) -> None:
        """`Agent.run`'s loop: gather, publish, sleep out the interval (or until poked); back off while the
        registry is away. A name another agent holds stops this one, as it stops `shoal agent`."""
        due = time.monotonic() + self._rng.uniform(0, self.interval)
        backoff = 0.0
        while not stop.is_set():
            await self._sleep(stop, due - time.monotonic())
            if stop.is_set():
                return
            t0 = time.monotonic()
            self._tally.late.append(max(0.0, t0 - due))
            snap = await self.gather(engine_every)
            try:
                await self.agent.publish(snap)
                self._tally.published += 1
                self._tally.publish.append(time.monotonic() - t0 - snap.took)
                backoff = 0.0
                due = t0 + self.interval
            except Conflict as e:
                self._tally.errors["conflict"] += 1
                kv(log, "node name taken; agent stops", logging.ERROR, node=self.node.name, error=e.message)
                return
            except (RegistryUnreachable, ShoalError) as e:
                kind = "unreachable" if isinstance(e, RegistryUnreachable) else "refused"
                self._tally.errors[kind] += 1
                backoff = min(MAX_BACKOFF, backoff * 2 if backoff else 0.5)
                due = time.monotonic() + backoff * self._rng.uniform(0.8, 1.2)

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        if delay > 0 and not self.poke.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: it can drop a cancel (3.11)
                    await self.poke.wait()
        self.poke.clear()


class Agents:
    """Every simulated agent of one process, and the commands that steer them."""

    def __init__(self, nodes: Sequence[SimNode], registry: str, interval: float, engine_every: float) -> None:
        self.nodes = list(nodes)
        self.registry = registry
        self.interval = interval
        self.engine_every = engine_every
        self.tally = Tally()
        self.agents: dict[str, SimAgent] = {}
        self.stop = asyncio.Event()
        self._engine: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Agents:
        self._engine = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        for node in self.nodes:
            a = SimAgent(node, self.registry, self.interval, self._engine, self.tally)
            await a.agent.__aenter__()  # its registry session (the engine's is the shared one above)
            self.agents[node.name] = a
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(a.run(self.stop, self.engine_every)) for a in self.agents.values()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        for a in self.agents.values():
            a.poke.set()
        await asyncio.wait(self._tasks, timeout=10)
        # a clean stop, as `shoal agent` leaves: each node critical at once, its name free again
        leaving = [asyncio.ensure_future(a.agent.leave()) for a in self.agents.values()]
        if leaving:
            await asyncio.wait(leaving, timeout=10)
        for a in self.agents.values():
            await a.agent.__aexit__(None, None, None)
        if self._engine is not None:
            await self._engine.close()

    @property
    def stopped(self) -> int:
        """Agents that stopped for good (their node name held by another agent)."""
        return sum(t.done() for t in self._tasks)

    @property
    def published(self) -> int:
        return sum(a.agent.published for a in self.agents.values())

    async def ready(self) -> None:
        """Until every agent has published once (or stopped)."""
        pairs = list(zip(self.agents.values(), self._tasks, strict=True))
        while not all(a.agent.published or t.done() for a, t in pairs):
            await asyncio.sleep(0.1)

    def command(self, line: str) -> dict[str, Any] | None:
        """One control line; what to print back (an error is printed too, never raised)."""
        words = line.split()
        if not words:
            return None
        match words:
            case ["interval", seconds]:
                try:
                    value = float(seconds)
                except ValueError:
                    return {"error": f"interval {seconds!r}: not a number of seconds"}
                if not 0.05 <= value <= 3600:
                    return {"error": f"interval {seconds}: pick 0.05 to 3600 seconds"}
                self.interval = value
                for a in self.agents.values():
                    a.set_interval(value)
                return {"interval": value}
            case ["fact", node, *pairs]:
                if node not in self.agents:
                    return {"error": f"no simulated agent for node {node!r} in this process"}
                if any("=" not in p for p in pairs):
                    return {"error": "fact takes NODE KEY=VALUE..."}
                self.agents[node].set_facts(dict(p.split("=", 1) for p in pairs))
                return {"fact": node, "facts": len(pairs)}
            case ["stats"]:
                return self.tally.take(len(self.agents), self.published) | {"stopped": self.stopped}
        return {"error": f"unknown command {line.strip()!r}: interval SECONDS | fact NODE K=V... | stats"}


async def _control(agents: Agents) -> None:
    """Commands from stdin, answers on stdout. A daemon thread reads (a pipe, a tty or a file alike), so a
    stdin left open never holds up the exit; the end of stdin stops nothing (a benchmark may close it)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)

    threading.Thread(target=read, name="control", daemon=True).start()
    while True:
        out = agents.command(await lines.get())
        if out is not None:
            print(json.dumps(out), flush=True)


def engine_maps(files: Sequence[str]) -> dict[str, str]:
    """Node name -> engine URL, from the maps `python -m shoal.sim.engines` printed."""
    engines: dict[str, str] = {}
    for f in files:
        try:
            doc = json.loads(Path(f).read_text())
        except OSError as e:
            raise ShoalError(f"--engines {f}: {e.strerror}; give the file holding the line "
                             "`python -m shoal.sim.engines` printed") from None  # fmt: skip
        except ValueError as e:
            raise ShoalError(f"--engines {f}: not JSON ({e}); give the file holding the line "
                             "`python -m shoal.sim.engines` printed") from None  # fmt: skip
        if not isinstance(doc, dict) or not all(
            isinstance(v, str) and v.startswith("tcp://") for v in doc.values()
        ):
            raise ShoalError(f"--engines {f}: not a map of node names to tcp:// engine addresses")
        engines.update(doc)
    if not engines:
        raise ShoalError("the engine maps name no nodes; start `python -m shoal.sim.engines --nodes N` first")
    return engines


async def _main(args: argparse.Namespace) -> None:
    nodes = sim_nodes(engine_maps(args.engines), args.seed)
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    async with Agents(nodes, args.registry, args.interval, args.engine_every) as agents:
        await agents.ready()
        print(json.dumps({"agents": len(agents.agents), "published": agents.published,
                          "stopped": agents.stopped}), flush=True)  # fmt: skip
        control = loop.create_task(_control(agents))
        await stop.wait()
        control.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m shoal.sim.agents", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", required=True, help="the registry's URL (http://127.0.0.1:PORT)")
    p.add_argument("--engines", action="append", required=True, metavar="FILE",
                   help="a file with the map `python -m shoal.sim.engines` prints (repeatable)")  # fmt: skip
    p.add_argument("--interval", type=float, default=5.0, help="seconds between publishes, as `shoal agent`")
    p.add_argument("--engine-every", type=float, default=ENGINE_EVERY, help="seconds between /info reads")
    p.add_argument("--seed", type=int, default=0, help="the node documents' seed (shoal.sim.nodes)")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    logs.setup(args.log_level)
    if args.interval < 0.05:
        p.error("--interval must be at least 0.05 seconds")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_main(args))
    except ShoalError as e:
        p.exit(1, f"{p.prog}: {e}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
