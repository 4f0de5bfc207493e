"""Fact sources: core (host), external (facts.d), the engine (docker), Facter itself, load over time."""

from __future__ import annotations

from typing import Any

Facts = dict[str, Any]


def flatten(value: Any, prefix: str = "") -> Facts:
    """Structured facts as flat names joined with dots, as shoal publishes every fact."""
    if isinstance(value, dict):
        out: Facts = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return {prefix: ",".join(str(v) for v in value)}
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: value}
