"""CPU time used by one cgroup (v1 cpuacct or v2 cpu.stat): a node's own load where several nodes share one
kernel (the dev cluster), where the host's load average would say the same for every node."""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_seconds(path: str, root: Path = CGROUP_ROOT) -> float | None:
    """Cumulative CPU seconds of cgroup `path` (e.g. /shoal-dev/node1), 0.0 if it does not exist yet (no
    container ran), None if this host has no CPU accounting to read."""
    rel = path.strip("/")
    for v1 in (root / "cpuacct", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        if (v1 / "cpuacct.usage").exists():
            f = v1 / rel / "cpuacct.usage"
            return int(f.read_text()) / 1e9 if f.exists() else 0.0
    if (root / "cgroup.controllers").exists():
        f = root / rel / "cpu.stat"
        if not f.exists():
            return 0.0
        for line in f.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    return None
