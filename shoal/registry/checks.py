"""Running the agent's health checks: TTL timers, HTTP, TCP and script probes, and reaping services
whose check stayed critical past DeregisterCriticalServiceAfter.

Outcomes follow Consul: HTTP 2xx passing, 429 warning, anything else critical; TCP connect passing
or critical; a script's exit 0 passing, 1 warning, other critical. A TTL check is critical from the
moment its TTL passes without an update (a timer per check, not a poll, so a 100 ms TTL is critical
within a few ms of its deadline).

The runner knows the registry only as a `CheckSink` (three calls), and the registry knows the runner
only as the `CheckEvents` it is told to notify; server.py wires the two, so neither module imports the
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from shoal.logs import kv
from shoal.registry import model as m
from shoal.registry.leader import Leadership
from shoal.registry.model import TTL_TOUCH, Check

log = logging.getLogger("shoal.registry.checks")
MAX_OUTPUT = 4096


def expired_output(last: str) -> str:
    """A TTL check's output once its TTL passed with no update, as Consul words it (CheckTTL's
    getExpiredOutput): the last output it was given follows, so a reader tells a service that said it
    was failing from one that stopped saying anything."""
    if not last or last.startswith("TTL expired"):  # (re-armed after a restart: already the expiry's words)
        return last or "TTL expired"
    return f"TTL expired (last output before timeout follows): {last}"


class CheckSink(Protocol):
    """What the runner needs from the registry: the checks, a way to record a status, and the reaper's
    deregistration."""

    async def all_checks(self, node: str | None = None) -> list[Check]: ...

    async def set_check_status(self, c: Check, status: str, output: str) -> Check: ...

    async def deregister_service(self, service_id: str) -> None: ...

    async def touch_ttl(self, c: Check) -> None: ...

    async def ttl_touches(self) -> dict[tuple[str, str], int]: ...

    async def index(self) -> int: ...

    async def wait(
        self, prefixes: Sequence[str], index: int, timeout: float, keys: Sequence[str] = ()
    ) -> int: ...


class CheckRunner:
    """Probes run in every registry, for its own node's checks. TTL timers and the reaper are
    cluster-wide: a lone registry runs them from start; registries sharing a store run them on the
    elected leader only (`leadership`), which on each takeover arms every TTL check with its full TTL
    from then (so none flaps across a failover) and follows the renewals other registries record."""

    def __init__(self, registry: CheckSink, node: str, leadership: Leadership | None = None) -> None:
        self.registry = registry
        self.leadership = leadership or Leadership.solo({"name": node})
        self.node = node  # the agent's own node: only its HTTP, TCP and script checks run here
        # keyed by (node, check id): remote nodes' TTL checks are timed here too
        self._ttl_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._probes: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._critical_since: dict[tuple[str, str], tuple[float, Check]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        if self.leadership.shared:
            for c in await self.registry.all_checks():
                if not c.definition.ttl and c.definition.type and c.node == self.node:
                    self.schedule(c)
            self.leadership.add_task(self._lead)
            return
        for c in await self.registry.all_checks():
            if c.definition.ttl or (c.definition.type and c.node == self.node):
                self.schedule(c)
            self.status_changed(c)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _lead(self) -> None:
        """The leader's TTL timers and reaper, over a shared store. Every TTL check is armed with its
        full TTL at takeover; after that a check written by any registry (a status or a registration),
        or a renewal recorded by a follower (`touch_ttl`), re-arms it, a check gone is dropped, and a
        critical one enters the reaper's count. Stepping down cancels it all."""
        index = await self.registry.index()
        seen: dict[tuple[str, str], int] = {}
        touched = await self.registry.ttl_touches()
        for c in await self.registry.all_checks():
            seen[(c.node, c.id)] = c.modify_index
            if c.definition.ttl:
                self._arm_ttl(c)
            self.status_changed(c)
        reaper = asyncio.get_running_loop().create_task(self._reap())
        try:
            while True:
                try:
                    index = max(index, await self.registry.wait([m.CHECKS, TTL_TOUCH], index, 30.0))
                    now_touched = await self.registry.ttl_touches()
                    checks = {(c.node, c.id): c for c in await self.registry.all_checks()}
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    kv(log, "check watch failed; retrying", logging.WARNING, error=str(e), retry_in=1)
                    await asyncio.sleep(1)
                    continue
                for key, c in checks.items():
                    written = seen.get(key) != c.modify_index
                    renewed = now_touched.get(key, 0) != touched.get(key, 0)
                    if not (written or renewed):
                        continue
                    seen[key] = c.modify_index
                    if c.definition.ttl and (renewed or not c.output.startswith("TTL expired")):
                        self._arm_ttl(c)
                    if written:
                        self.status_changed(c)
                for key in set(seen) - set(checks):
                    seen.pop(key)
                    if h := self._ttl_timers.pop(key, None):
                        h.cancel()
                    self._critical_since.pop(key, None)
                touched = now_touched
        finally:
            reaper.cancel()
            for h in self._ttl_timers.values():
                h.cancel()
            self._ttl_timers.clear()
            self._critical_since.clear()

    async def close(self) -> None:
        for h in self._ttl_timers.values():
            h.cancel()
        for t in [*self._probes.values(), *self._pending]:
            t.cancel()
        if self._reaper:
            self._reaper.cancel()
        if self._session:
            await self._session.close()

    def held(self) -> dict[str, int]:
        """Timers held now, by kind (the registry's /metrics shows them)."""
        return {"ttl": len(self._ttl_timers), "probe": len(self._probes)}

    def schedule(self, c: Check) -> None:
        self.unschedule(c.id, c.node)
        d = c.definition
        if d.ttl:
            if self.leadership.is_leader:  # a follower's registration reaches the leader's watch
                self._arm_ttl(c)
        elif d.interval:
            self._probes[(c.node, c.id)] = asyncio.get_running_loop().create_task(self._probe_loop(c))

    def unschedule(self, check_id: str, node: str) -> None:
        key = (node, check_id)
        if h := self._ttl_timers.pop(key, None):
            h.cancel()
        if t := self._probes.pop(key, None):
            t.cancel()
        self._critical_since.pop(key, None)

    def ttl_touched(self, c: Check) -> None:
        if self.leadership.is_leader:
            self._arm_ttl(c)
        else:  # the leader times it: tell it through the store
            self._spawn(self._touch(c))

    async def _touch(self, c: Check) -> None:
        try:
            await self.registry.touch_ttl(c)
        except Exception as e:  # the next renewal tries again; the TTL has room for a few
            kv(log, "recording a TTL renewal failed", logging.WARNING, check=c.id, error=str(e))

    def _arm_ttl(self, c: Check) -> None:
        if h := self._ttl_timers.pop((c.node, c.id), None):
            h.cancel()
        loop = asyncio.get_running_loop()
        self._ttl_timers[(c.node, c.id)] = loop.call_later(c.definition.ttl, self._ttl_expired, c)

    def _ttl_expired(self, c: Check) -> None:
        self._ttl_timers.pop((c.node, c.id), None)
        self._spawn(self.registry.set_check_status(c, m.CRITICAL, expired_output(c.output)))

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)

    def status_changed(self, c: Check) -> None:
        if not self.leadership.is_leader:
            return  # the leader's reaper counts it (it sees the write)
        if c.status == m.CRITICAL and c.definition.deregister_after and c.service_id:
            self._critical_since.setdefault((c.node, c.id), (time.monotonic(), c))
        else:
            self._critical_since.pop((c.node, c.id), None)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for key, (since, c) in list(self._critical_since.items()):
                if now - since >= c.definition.deregister_after:
                    self._critical_since.pop(key, None)
                    kv(
                        log,
                        "deregistering critical service",
                        service=c.service_id,
                        check=c.id,
                        critical_for=round(now - since),
                    )
                    with contextlib.suppress(Exception):
                        await self.registry.deregister_service(c.service_id)

    async def _probe_loop(self, c: Check) -> None:
        d = c.definition
        await asyncio.sleep(random.uniform(0, min(d.interval, 1.0) / 4))  # first run well within an interval
        while True:
            try:
                status, output = await self.probe(c)
            except Exception as e:  # a probe never ends the loop: a broken one reads as critical
                status, output = m.CRITICAL, f"{d.type} check failed to run: {e or type(e).__name__}"
            try:
                await self.registry.set_check_status(c, status, output)
            except Exception:
                kv(log, "recording check status failed", logging.ERROR, exc_info=True, check=c.id)
            await asyncio.sleep(d.interval)

    async def probe(self, c: Check) -> tuple[str, str]:
        d = c.definition
        try:
            if d.http:
                return await asyncio.wait_for(self._http(c), d.timeout)
            if d.tcp:
                return await asyncio.wait_for(self._tcp(c), d.timeout)
            return await self._script(c)
        except TimeoutError:
            what = d.http or d.tcp or " ".join(d.args)
            return (
                m.CRITICAL,
                f"{d.type.upper()} check {what}: timed out after {m.format_duration(d.timeout)}",
            )

    async def _http(self, c: Check) -> tuple[str, str]:
        d = c.definition
        assert self._session is not None
        try:
            async with self._session.request(d.method, d.http) as r:
                body = (await r.content.read(MAX_OUTPUT)).decode(errors="replace")
                out = f"HTTP {d.method} {d.http}: {r.status} {r.reason} Output: {body}"
                if 200 <= r.status < 300:
                    return m.PASSING, out
                return (m.WARNING if r.status == 429 else m.CRITICAL), out
        except (aiohttp.ClientError, ValueError) as e:
            return m.CRITICAL, f"HTTP {d.method} {d.http}: {e or type(e).__name__}"

    async def _tcp(self, c: Check) -> tuple[str, str]:
        host, _, port = c.definition.tcp.rpartition(":")
        try:
            _, w = await asyncio.open_connection(host.strip("[]"), int(port))
            w.close()
            return m.PASSING, f"TCP connect {c.definition.tcp}: Success"
        except (OSError, ValueError, OverflowError) as e:
            return m.CRITICAL, f"dial tcp {c.definition.tcp}: {e or type(e).__name__}"

    async def _script(self, c: Check) -> tuple[str, str]:
        d = c.definition
        try:
            proc = await asyncio.create_subprocess_exec(
                *d.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as e:
            return m.CRITICAL, f"script {d.args[0]}: {e}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), d.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return m.CRITICAL, f"Timed out ({m.format_duration(d.timeout)}) running check"
        text = out.decode(errors="replace")[:MAX_OUTPUT]
        code = proc.returncode
        return (m.PASSING if code == 0 else m.WARNING if code == 1 else m.CRITICAL), text
