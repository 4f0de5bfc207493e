"""A container's STATUS column ("Up 5 minutes", "Exited (0) 2 hours ago"), computed the way dockerd does
(container/state.go State.String and go-units HumanDuration), so `docker ps` can be answered from the
manager's event-fed cache and still read as the engine would say it now (classic Swarm did the same).
Pure: inspect's State document (or the `RunState` kept of it) and a clock in, text out."""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ZERO = "0001-01-01T00:00:00Z"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 46:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


@functools.lru_cache(maxsize=1 << 12)
def parse_time(ts: str | None) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, Z) to epoch seconds; None for Go's zero time. The
    manager's cache keeps `RunState`s, each parsed once when its container is inspected, so this cache
    only serves callers passing raw documents and need not hold 30,000 containers' timestamps."""
    if not ts or ts.startswith("0001-01-01"):
        return None
    head, _, frac = ts.rstrip("Z").partition(".")
    frac, _, tz = frac.partition("+")
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    text = head + (f".{digits}" if digits else "") + (f"+{tz}" if tz else "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def next_change(seconds: float) -> float:
    """The least duration past `seconds` at which `human_duration`'s text may change (pure; never later
    than it does): every second within the first minute, every minute to 46, then at each half hour
    (its rounded hours) or whole hour (the years branch), whichever comes first."""
    if seconds < 60:
        return math.floor(seconds) + 1
    if seconds < 46 * 60:
        return 60 * (int(seconds / 60) + 1)
    return min((int(seconds / 3600 + 0.5) + 0.5) * 3600, (int(seconds / 3600) + 1) * 3600)


@dataclass(frozen=True, slots=True)
class RunState:
    """What STATUS needs of inspect's State document, parsed once: the manager keeps one per container
    (30,000 at 1,000 nodes), and the whole decoded document cost ~1.2 KB each (Pid, Error, OOMKilled,
    a health check's last five outputs, two timestamp strings); this costs ~150 bytes (the instance and
    its two floats)."""

    status: str = ""
    running: bool = False
    paused: bool = False
    restarting: bool = False
    dead: bool = False
    exit_code: int = 0
    started: float | None = None
    finished: float | None = None
    health: str = ""

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> RunState:
        """From an inspect State document (any missing key reads as dockerd's zero value)."""
        health = state.get("Health")
        return cls(
            status=str(state.get("Status") or ""),
            running=bool(state.get("Running")),
            paused=bool(state.get("Paused")),
            restarting=bool(state.get("Restarting")),
            dead=bool(state.get("Dead")),
            exit_code=int(state.get("ExitCode") or 0),
            started=parse_time(state.get("StartedAt")),
            finished=parse_time(state.get("FinishedAt")),
            health=str(health.get("Status") or "") if isinstance(health, Mapping) else "",
        )


def status_text(state: RunState | Mapping[str, Any], now: float) -> str:
    """dockerd's State.String() for an inspect State document."""
    return status_until(state, now)[0]


def status_until(state: RunState | Mapping[str, Any], now: float) -> tuple[str, float]:
    """`status_text`, and the time until which it reads the same (a cache of 30,000 containers' STATUS
    recomputes only those whose text moved: `docker ps -a` at 1,000 nodes spent a quarter of its time
    here)."""
    s = state if isinstance(state, RunState) else RunState.of(state)
    started, finished = s.started, s.finished
    if s.running:
        since = started or now
        up, until = human_duration(now - since), since + next_change(now - since)
        if s.paused:
            return f"Up {up} (Paused)", until
        if s.restarting:
            ended = finished or now
            return (
                f"Restarting ({s.exit_code}) {human_duration(now - ended)} ago",
                min(until, ended + next_change(now - ended)),
            )
        if s.health:
            return f"Up {up} ({'health: starting' if s.health == 'starting' else s.health})", until
        return f"Up {up}", until
    if s.status == "removing":
        return "Removal In Progress", math.inf
    if s.dead:
        return "Dead", math.inf
    if started is None:
        return "Created", math.inf
    if finished is None:
        return "", math.inf
    return (
        f"Exited ({s.exit_code}) {human_duration(now - finished)} ago",
        finished + next_change(now - finished),
    )
