"""When a node is down: one rule, over what the registry and the engine say.

    A node is down when its agent's check (`shoal-agent`, a TTL of 3 agent intervals) is critical AND its
    engine does not answer a ping (refused at once, or no answer within PING_TIMEOUT: 2 s, so a live
    engine on a busy machine is not taken for a dead one), both without a break for DOWN_AFTER seconds
    (1 s by default; `SHOAL_DOWN_AFTER` sets it). It is back when its engine answers again.

Either alone is not enough: an agent restarting (check critical, engine fine) or a manager that cannot
reach one engine for a moment (the engine's node still publishing) loses nothing. A node's containers with
classic Swarm's reschedule policy are created again elsewhere once it is down (shoal.manager.reschedule).
Detection takes the check's TTL plus DOWN_AFTER: ~4 s with the dev cluster's 1 s agent interval.

The rule itself is pure (`observe`, `is_down`); `Failure.sample` does the looking.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from shoal.manager.service import Manager

DOWN_AFTER = float(os.environ.get("SHOAL_DOWN_AFTER", "1.0"))
PING_TIMEOUT = float(os.environ.get("SHOAL_PING_TIMEOUT", "2.0"))


@dataclass(frozen=True, slots=True)
class Seen:
    """Since when each half of the rule has held without a break (None: it does not hold now)."""

    critical_since: float | None = None
    unanswered_since: float | None = None


def observe(prev: Seen | None, critical: bool, answered: bool, now: float) -> Seen:
    prev = prev or Seen()
    return Seen(
        (prev.critical_since if prev.critical_since is not None else now) if critical else None,
        (prev.unanswered_since if prev.unanswered_since is not None else now) if not answered else None,
    )


def is_down(seen: Seen, now: float, after: float = DOWN_AFTER) -> bool:
    if seen.critical_since is None or seen.unanswered_since is None:
        return False
    return now - max(seen.critical_since, seen.unanswered_since) >= after


def down_reason(node: str, seen: Seen, now: float) -> str:
    return (
        f"{node} is down: its agent's check critical for {now - (seen.critical_since or now):.1f}s and its "
        f"engine unanswered for {now - (seen.unanswered_since or now):.1f}s (rule: both for {DOWN_AFTER:g}s)"
    )


class Failure:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.seen: dict[str, Seen] = {}
        self.down: dict[str, float] = {}  # node -> when it was declared down

    async def _answers(self, node: str) -> bool:
        e = self.m.cluster.engines.get(node)
        if e is None:
            return False
        try:
            async with e.session.get(
                e.url_for("/_ping"),
                ssl=e.ssl,  # the engine's mutual TLS (the manager's client certificate), as every call
                timeout=aiohttp.ClientTimeout(total=PING_TIMEOUT, sock_connect=PING_TIMEOUT),
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def sample(self, now: float) -> tuple[dict[str, str], list[str]]:
        """One look: the nodes newly down (with the reason) and the nodes back up."""
        c = self.m.cluster
        # the cache's health watch (woken by each status change): a read of 1,000 checks every second cost
        # the registry a tenth of a core
        status = c.agent_checks()
        if status is None:
            return {}, []  # the registry away says nothing about the nodes
        # only a node whose check is critical (or that is down) can change state: its engine is pinged;
        # the others count as answering, so a thousand healthy nodes cost no pings
        nodes = list(c.engines)
        asked = [n for n in nodes if status.get(n) == "critical" or n in self.down]
        pinged = dict(zip(asked, await asyncio.gather(*(self._answers(n) for n in asked)), strict=True))
        answers = [pinged.get(n, True) for n in nodes]
        newly, back = {}, []
        for node, answered in zip(nodes, answers, strict=True):
            seen = observe(self.seen.get(node), status.get(node) == "critical", answered, now)
            self.seen[node] = seen
            if node not in self.down and is_down(seen, now):
                self.down[node] = now
                newly[node] = down_reason(node, seen, now)
            elif node in self.down and answered:
                del self.down[node]
                back.append(node)
        return newly, back
