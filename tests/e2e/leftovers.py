"""What a dev cluster might leave on the host, read with the host's own tools (not shoal's code)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def leftovers(name: str, root: Path) -> list[str]:
    """Every trace of cluster `name` still on the host; [] when `down` did its job."""
    found = []
    found += [f"netns {ns}" for ns in _sh("ip", "netns", "list").split() if ns.startswith(f"{name}-")]
    for line in _sh("ip", "-o", "link", "show").splitlines():
        ifname = line.split(":")[1].strip().split("@")[0]
        if ifname.startswith(f"{name}-"):
            found.append(f"link {ifname}")
    found += [
        f"iptables {r}" for r in _sh("iptables", "-S", "FORWARD").splitlines() if f"shoal-dev:{name}" in r
    ]
    cluster_dir = str(root / name)
    found += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(cluster_dir)
    ]
    found += [f"loop {line}" for line in _sh("losetup", "-a").splitlines() if cluster_dir in line]
    for line in _sh("ps", "-eo", "pid=,stat=,args=").splitlines():
        pid, stat, args = line.split(None, 2)
        if cluster_dir in args and not stat.startswith("Z"):
            found.append(f"process {pid} {args[:80]}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/shoal-{name}")]
    if Path(cluster_dir).exists():
        found.append(f"dir {cluster_dir}")
    return found
