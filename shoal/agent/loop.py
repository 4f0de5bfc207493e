"""The agent's loop: gather every fact source, publish, renew, sleep; back off while the manager is away.

A source that fails is skipped and reported (a warning when the set of failures changes, and the
fact `shoal_failed_sources`); nothing a source does stops the loop. External facts never override
core ones: a source that names a core fact is refused whole, as any other bad source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from shoal import __version__, keys, pki
from shoal.agent import join, publish
from shoal.agent.datasets import DataService
from shoal.agent.facts import Facts, cgroup, external, facter, host
from shoal.agent.facts import docker as docker_facts
from shoal.agent.facts.external import SourceError
from shoal.agent.overload import overload, trim
from shoal.agent.record_writes import ManagerRecords
from shoal.agent.transfer import Transport
from shoal.data.model import DRIVERS
from shoal.data.pool import open_pool
from shoal.data.profiles import load_profiles
from shoal.data.records import Records
from shoal.errors import Conflict, RegistryUnreachable, ShoalError, Unavailable
from shoal.logs import kv
from shoal.registry.client import Access, RegistryClient

FACTS_D_POLL = 0.2  # seconds between looks at facts.d for a changed file
log = logging.getLogger("shoal.agent")
MAX_BACKOFF = 10.0
FACTER_EVERY = 30.0  # facter costs ~0.4 s of CPU: run it at most this often
RENEW_RETRY = 60.0  # seconds before a certificate renewal that failed is asked again
INFO_EVERY = 60.0  # an unchanged info document is written again at most this often


@dataclass(frozen=True, slots=True)
class AgentConfig:
    manager: str
    node: str
    engine: str = "unix:///var/run/docker.sock"
    advertise_engine: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    facts_dir: Path | None = None
    interval: float = 5.0
    fact_timeout: float = external.DEFAULT_TIMEOUT
    use_facter: bool = False
    state_file: Path | None = None
    served_drivers: tuple[str, ...] = ()
    pool: Path | None = None  # where the node's datasets live; None = no data service
    pool_kind: str = "auto"
    mount_prefix: Path = Path("/flocker")
    plugins_dir: Path = Path("/run/docker/plugins")
    profiles_file: Path | None = None
    load_cgroup: str = ""  # measure load as this cgroup's CPU use (dev nodes share the host's loadavg)
    join_token: str = ""  # presented once to `manager` (the manager's join listener) for a node certificate
    state_dir: Path | None = None  # where joining's credentials are kept (a restarted agent needs no token)
    registry: str = ""  # publish here instead of where joining said (another registry, a site's own Consul)


@dataclass(frozen=True, slots=True)
class Snapshot:
    facts: Facts
    errors: tuple[SourceError, ...]
    engine_labels: dict[str, str]
    gathered_at: float
    took: float


def merge(
    core: Facts, by_source: dict[str, Facts], facter_facts: Facts, errors: list[SourceError]
) -> tuple[Facts, list[SourceError]]:
    """Core facts win; an external source naming a core fact is refused whole; Facter fills gaps (pure)."""
    facts = dict(core)
    errors = list(errors)
    for source, extra in sorted(by_source.items()):
        clash = sorted(k for k in extra if k in core)
        if clash:
            errors.append(SourceError(source, f"names core fact {', '.join(clash)}; source skipped"))
            continue
        facts.update(extra)
    for k, v in facter_facts.items():
        facts.setdefault(k, v)
    if errors:
        facts["shoal_failed_sources"] = ",".join(sorted({e.source for e in errors}))
    return facts, errors


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._samples: list[tuple[float, float]] = []
        self._facter: Facts = {}
        self._facter_at = 0.0
        self._last_errors: frozenset[tuple[str, str]] = frozenset()
        self._http: aiohttp.ClientSession | None = None
        self._engine: aiohttp.ClientSession | None = None
        self._engine_base = ""
        self.claim: publish.Claim | None = None
        self._info: dict[str, Any] = {}
        self._info_written: tuple[dict[str, Any], float] | None = None  # (the document, when) last written
        self.published = 0
        self.data: DataService | None = None
        self.access = Access(config.manager)
        self._registry: RegistryClient | None = None  # one client, so it stays on the registry that answered
        self._registry_access = self.access
        self.credentials: join.Credentials | None = None
        self._renew_at = 0.0  # no renewal is asked before then (one failed)
        self._cpu_prev: tuple[float, float] | None = None
        self.started_at = time.time()

    async def __aenter__(self) -> Agent:
        self._http = aiohttp.ClientSession()
        try:
            self.access = await self._access()
        except BaseException:
            await self._http.close()
            raise
        connector, self._engine_base = docker_facts.engine_url_parts(self.config.engine)
        self._engine = aiohttp.ClientSession(connector=connector)
        if self.config.pool is not None:
            profiles, default = load_profiles(self.config.profiles_file)
            transport = self._transport()
            self.data = DataService(
                self.config.node,
                open_pool(self.config.pool, self.config.pool_kind),
                self._records(transport),
                profiles,
                default,
                self.config.mount_prefix,
                self.config.plugins_dir,
                engine=self._engine,
                engine_base=self._engine_base,
                transport=transport,
            )
            await self.data.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.data is not None:
            await self.data.stop()
        for s in (self._http, self._engine):
            if s:
                await s.close()

    async def _access(self) -> Access:
        """The registry as joining granted it (a node certificate, the registry's address, a node-scoped
        token), or, for an agent that does not join, `--manager` itself as the registry (plain clusters).
        Either may be a comma-separated list (every manager's), each address tried in turn."""
        c = self.config
        if c.state_dir is None or not (c.join_token or join.load(c.state_dir) is not None):
            return Access.from_env(c.registry or c.manager)
        backoff = 0.0
        while True:  # a manager that does not answer yet is waited for; a refusal ends the agent
            try:
                self.credentials = await join.credentials(c.manager, c.join_token, c.node, c.state_dir)
                granted = self.credentials.access()
                return replace(granted, address=c.registry) if c.registry else granted
            except RegistryUnreachable as e:
                backoff = min(MAX_BACKOFF, backoff * 2 if backoff else 0.5)
                kv(log, "manager unreachable; retrying the join", logging.WARNING, node=c.node,
                   error=e.message, retry_in=round(backoff, 1))  # fmt: skip
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))

    def _transport(self) -> Transport:
        """Dataset streams between agents: mutual TLS with the node certificate joining gave (each end
        checks the other's against the node CA); plain TCP only on a cluster whose agents do not join."""
        creds = self.credentials
        return Transport.tls(creds.ca, creds.cert, creds.key) if creds is not None else Transport()

    def _records(self, transport: Transport) -> Records:
        """A joined agent writes its dataset records through the manager, with its node certificate (its
        registry token may touch none); an agent of a plain cluster, or one told to publish to another
        registry than the manager's (`--registry`), writes them to that registry itself."""
        creds = self.credentials
        if creds is None or transport.client is None or not creds.manager or self.config.registry:
            return Records(self.registry)
        assert self._http is not None
        return ManagerRecords(self.registry, self._http, creds.manager, transport.client)

    @property
    def registry(self) -> RegistryClient:
        """The registry client: one until the access or the certificate changes, so that, given several
        registries, it stays on the one that last answered rather than asking a dead one first each round."""
        assert self._http is not None
        if self._registry is None or self._registry_access != self.access:
            self._registry, self._registry_access = self.access.client(self._http), self.access
        return self._registry

    def _load_sample(self, now: float, core: Facts) -> float:
        """The host's 1-minute load average; or, with --load-cgroup, the CPUs the node's cgroup used since
        the last sample (the same unit: CPUs busy), so each dev node reports its own load."""
        if not self.config.load_cgroup:
            core["shoal_load_source"] = "loadavg"
            return float(core["load_averages.1m"])
        secs = cgroup.cpu_seconds(self.config.load_cgroup)
        core["shoal_load_source"] = f"cgroup:{self.config.load_cgroup}"
        prev, self._cpu_prev = self._cpu_prev, (now, secs or 0.0)
        if prev is None or secs is None or now <= prev[0]:
            return 0.0
        return max(0.0, (secs - prev[1]) / (now - prev[0]))

    async def gather(self) -> Snapshot:
        t0 = time.perf_counter()
        now = time.time()
        core = host.gather()
        self._samples = trim([*self._samples, (now, self._load_sample(now, core))], now)
        core.update(overload(self._samples, now, int(core["processorcount"])))
        errors: list[SourceError] = []
        engine_labels: dict[str, str] = {}
        assert self._engine is not None
        try:
            dfacts, engine_labels = await docker_facts.gather(
                self._engine,
                self._engine_base,
                [*self.config.served_drivers, *(DRIVERS if self.data else ())],
            )
            core.update(dfacts)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            errors.append(SourceError("docker", f"engine {self.config.engine} unreachable: {e}"))
        by_source, ext_errors = await external.gather(self.config.facts_dir, self.config.fact_timeout)
        errors += ext_errors
        if self.config.use_facter and time.monotonic() - self._facter_at > FACTER_EVERY:
            try:
                self._facter = await facter.gather()
            except ValueError as e:
                errors.append(SourceError("facter", str(e)))
            self._facter_at = time.monotonic()
        facts, errors = merge(core, by_source, self._facter, errors)
        self._report(errors)
        return Snapshot(facts, tuple(errors), engine_labels, now, time.perf_counter() - t0)

    def _report(self, errors: list[SourceError]) -> None:
        now = frozenset((e.source, e.reason) for e in errors)
        for source, reason in sorted(now - self._last_errors):
            node = self.config.node
            kv(log, "fact source skipped", logging.WARNING, node=node, source=source, reason=reason)
        for source in sorted({s for s, _ in self._last_errors} - {s for s, _ in now}):
            kv(log, "fact source recovered", node=self.config.node, source=source)
        self._last_errors = now

    def advertised_engine(self, address: str) -> str:
        """Where the manager should reach this node's engine: as told, else the TCP address the agent
        itself uses (unless it is loopback), else port 2375 on the node's address."""
        if self.config.advertise_engine:
            return self.config.advertise_engine
        engine = self.config.engine
        if engine.startswith("tcp://") and not engine.startswith(("tcp://127.", "tcp://localhost")):
            return engine
        return f"tcp://{address}:2375"

    def info(self, snap: Snapshot) -> dict[str, Any]:
        address = str(snap.facts.get("ipaddress", "127.0.0.1"))
        return {
            "node": self.config.node,
            "address": address,
            "engine": self.advertised_engine(address),
            "cpus": snap.facts.get("processorcount", 0),
            "memory_mb": snap.facts.get("memorysize_mb", 0),
            "labels": self.config.labels,
            "engine_labels": snap.engine_labels,
            "agent": {"version": __version__, "pid": os.getpid(), "started_at": self.started_at},
            "pool": self._pool_info(),
        }

    def _pool_info(self) -> dict[str, Any] | None:
        if self.data is None:
            return None
        pool = self.data.pool
        return {
            "kind": pool.kind,
            "device": pool.device(),
            "free_bytes": pool.free_bytes(),
            "root": str(pool.root),
        }

    async def publish(self, snap: Snapshot) -> None:
        reg = self.registry
        info = self._info = self.info(snap)
        if self.claim is None:
            self._info_written = None
            self.claim = await publish.claim(
                reg,
                self.config.node,
                info["address"],
                self.config.state_file,
                ttl=publish.session_ttl(self.config.interval),
            )
            kv(log, "claimed node", node=self.config.node, session=self.claim.session_id)
        elif not await reg.session_renew(self.claim.session_id):
            kv(log, "session lost; claiming the node again", logging.WARNING, node=self.config.node,
               session=self.claim.session_id)  # fmt: skip
            self.claim = None
            return await self.publish(snap)
        doc = {
            "node": self.config.node,
            "gathered_at": snap.gathered_at,
            "facts": snap.facts,
            "failed_sources": [{"source": e.source, "reason": e.reason} for e in snap.errors],
        }
        await reg.put(keys.node_facts(self.config.node), doc)
        await self._write_info(info)
        # the same words while nothing is wrong: a registration the registry already holds writes nothing
        # (as Consul's catalog skips an unchanged check), so 1,000 nodes' heartbeats wake no health watch
        output = f"{len(snap.facts)} facts gathered"
        if snap.errors:
            output += f"; skipped: {'; '.join(map(str, snap.errors))}"
        await reg.catalog_register(
            publish.registration(
                self.config.node, info["address"], info, self.config.interval, "passing", output
            )
        )
        self.published += 1

    async def _write_info(self, info: dict[str, Any]) -> None:
        """The info document (engine address, labels, pool) changes rarely; the facts document, written
        every interval, is the node's heartbeat. An unchanged one is written again only after a new claim
        (the registry may have lost it) or INFO_EVERY seconds (someone may have deleted it): at 1,000 nodes
        that is a third of the registry's writes and half of what the manager's watch reads again."""
        now = time.monotonic()
        last = self._info_written
        if last is not None and last[0] == info and now - last[1] < INFO_EVERY:
            return
        await self.registry.put(keys.node_info(self.config.node), info)
        self._info_written = (info, now)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            t0 = time.monotonic()
            seen = self._facts_d_signature()
            snap = await self.gather()
            try:
                await self._renew_if_due(time.time())
                await self.publish(snap)
                if backoff:
                    kv(log, "registry is back; facts published", node=self.config.node,
                       registry=self.registry.base)  # fmt: skip
                backoff = 0.0
                delay = self.config.interval - (time.monotonic() - t0)
            except Conflict:
                raise
            except Unavailable as e:  # unreachable, or answering 5xx (its store without quorum)
                backoff = min(MAX_BACKOFF, backoff * 2 if backoff else 0.5)
                delay = backoff * random.uniform(0.8, 1.2)
                what = "unreachable" if isinstance(e, RegistryUnreachable) else "unavailable"
                kv(log, f"registry {what}; retrying", logging.WARNING, node=self.config.node,
                   error=e.message, retry_in=round(delay, 1))  # fmt: skip
            await self._sleep(stop, delay, seen if not backoff else None)

    async def _renew_if_due(self, now: float) -> None:
        """A node certificate past two thirds of its life is renewed (with itself) before it expires. A
        renewal that fails (no manager answers, or one refuses) keeps the certificate the agent has (a third
        of its life was left when it fell due) and is asked again RENEW_RETRY seconds on: the managers' join
        listeners being down must not stop the node's facts reaching the registry, nor end the agent."""
        creds = self.credentials
        if creds is None or now < self._renew_at or not creds.due(now):
            return
        try:
            self.credentials = await join.renew(creds, self.config.node)
        except ShoalError as e:
            self._renew_at = now + RENEW_RETRY
            expires = round(pki.expires(creds.cert.read_bytes()))
            kv(log, "certificate renewal failed; using the current one", logging.WARNING,
               node=self.config.node, error=e.message, expires=expires, retry_in=RENEW_RETRY)  # fmt: skip
            return
        if self.data is not None:  # new streams show the new certificate
            self.data.transfer.transport.reload(self.credentials.cert, self.credentials.key)
        granted = self.credentials.access()
        self.access = replace(granted, address=self.config.registry) if self.config.registry else granted
        self._registry = None  # the next client loads the new certificate

    async def _sleep(self, stop: asyncio.Event, delay: float, seen: tuple | None) -> None:
        """Until the next round, or sooner when a facts.d file changes: a custom fact is the user's own
        lever on placement, so it should not wait out the interval (stat-ing a few files is cheap)."""
        deadline = time.monotonic() + max(0.0, delay)
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, FACTS_D_POLL)):  # not wait_for: it can drop a cancel
                    await stop.wait()
            if seen is not None and self._facts_d_signature() != seen:
                return

    def _facts_d_signature(self) -> tuple:
        d = self.config.facts_dir
        if d is None:
            return ()
        try:
            return tuple(
                sorted((p.name, st.st_mtime_ns, st.st_size) for p in d.iterdir() for st in [p.stat()])
            )
        except OSError:
            return ()

    async def leave(self) -> None:
        """A clean stop: the node turns critical at once and the node name is free for the next agent."""
        if self.claim is None:
            return
        reg = self.registry
        with contextlib.suppress(Exception):
            address = self.claim.identity["address"]
            await reg.catalog_register(
                publish.registration(
                    self.config.node, address, self._info, self.config.interval, "critical", "agent stopped"
                )
            )
        with contextlib.suppress(Exception):
            await reg.session_destroy(self.claim.session_id)
        if self.config.state_file:
            with contextlib.suppress(OSError):
                self.config.state_file.unlink()
