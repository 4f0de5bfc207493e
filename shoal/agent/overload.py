"""`system_overload_Nmin`: load over the last N minutes as a whole percentage of the node's CPUs.

Pure: the agent feeds samples of the 1-minute load average (with the time it took them); each
window is the mean of the samples inside it, so a 10-minute figure exists, as in the seed, which
the kernel's own 1/5/15-minute averages do not give.
"""

from __future__ import annotations

from collections.abc import Sequence

WINDOWS = {"system_overload_1min": 60.0, "system_overload_5min": 300.0, "system_overload_10min": 600.0}


def overload(samples: Sequence[tuple[float, float]], now: float, cpus: int) -> dict[str, int]:
    out = {}
    for name, window in WINDOWS.items():
        inside = [load for t, load in samples if now - t <= window]
        mean = sum(inside) / len(inside) if inside else 0.0
        out[name] = round(mean / max(cpus, 1) * 100)
    return out


def trim(samples: list[tuple[float, float]], now: float) -> list[tuple[float, float]]:
    horizon = max(WINDOWS.values())
    return [(t, v) for t, v in samples if now - t <= horizon]
