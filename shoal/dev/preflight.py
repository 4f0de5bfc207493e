"""Can this host hold the cluster asked for? Decided before anything is made.

`HostFacts` is what we read off the host (I/O in `gather_host_facts`); `check` is pure, so every
refusal is tested with plain data and each one names the problem and the way out.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from shoal.dev.layout import ClusterLayout

# What one node costs in memory: dockerd + containerd idle, measured by benchmarks/dev_up.py
# (~115 MiB RSS idle), with room for a few small containers.
NODE_MEMORY_MB = 256

# program -> Debian package that provides it
REQUIRED_TOOLS: dict[str, str] = {
    "dockerd": "docker.io",
    "ip": "iproute2",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "losetup": "mount",
    "mount": "mount",
    "mkfs.btrfs": "btrfs-progs",
    "busybox": "busybox-static",
    "redis-server": "redis-server",
}
# needed only by a cluster of several managers (`--managers 3`): each one's etcd member
MANAGERS_TOOLS: dict[str, str] = {"etcd": "etcd-server"}


@dataclass(frozen=True, slots=True)
class HostFacts:
    platform: str
    euid: int
    missing_tools: tuple[str, ...]
    mem_available_mb: int
    netns: frozenset[str]
    links: frozenset[str]
    # every network the host already uses: interface addresses and route destinations
    networks: tuple[str, ...]


def check(layout: ClusterLayout, facts: HostFacts) -> list[str]:
    """Every reason this host cannot hold `layout`, each one line that says what to do."""
    return check_host(facts) or check_room(layout, facts)


def check_host(facts: HostFacts) -> list[str]:
    """Can shoal dev run here at all? Asked before anything else, even before reading state."""
    if not facts.platform.startswith("linux"):
        return [
            f"shoal dev needs Linux (network namespaces, dockerd); this is {facts.platform}. "
            "Run it on a Debian or Ubuntu machine or VM"
        ]
    if facts.euid != 0:
        return [
            "shoal dev must run as root (it creates network namespaces, mounts and engines); "
            "run it with sudo"
        ]
    return []


def check_room(layout: ClusterLayout, facts: HostFacts) -> list[str]:
    """Does `layout` fit on this host beside what is already there?"""
    problems: list[str] = []
    packages = {**REQUIRED_TOOLS, **(MANAGERS_TOOLS if layout.managers else {})}
    missing = [t for t in facts.missing_tools if t in packages]
    if missing:
        pkgs = sorted({packages[t] for t in missing})
        problems.append(
            f"{', '.join(missing)} not found on PATH; "
            f"install with: apt-get install {' '.join(pkgs)} (or run `make deps`)"
        )
    n = len(layout.nodes)
    fits = facts.mem_available_mb // NODE_MEMORY_MB
    if n > fits:
        problems.append(
            f"--nodes {n} is more than this host can hold: each node needs ~{NODE_MEMORY_MB} MiB and "
            f"{facts.mem_available_mb} MiB is available; use --nodes {max(fits, 0)} or fewer"
        )
    if layout.bridge in facts.links:
        problems.append(
            f"network interface {layout.bridge!r} already exists and is not a running shoal "
            f"cluster; remove it (ip link del {layout.bridge}) or use another --name"
        )
    spaces = [*layout.nodes, *layout.managers]
    taken_ns = sorted(n.netns for n in spaces if n.netns in facts.netns)
    if taken_ns:
        problems.append(
            f"network namespace {', '.join(taken_ns)} already exists; remove it "
            f"(ip netns del {taken_ns[0]}) or use another --name"
        )
    taken_links = sorted(n.veth for n in spaces if n.veth in facts.links)
    if taken_links:
        problems.append(
            f"network interface {', '.join(taken_links)} already exists; remove it "
            f"(ip link del {taken_links[0]}) or use another --name"
        )
    ours = ipaddress.ip_network(layout.subnet)
    for other in facts.networks:
        net = ipaddress.ip_network(other, strict=False)
        if net.version == ours.version and net.overlaps(ours) and net.prefixlen > 0:
            problems.append(
                f"--subnet {layout.subnet} clashes with {other}, already used on this host; "
                "choose another, e.g. --subnet 10.98.0.0/24"
            )
            break
    return problems


def gather_host_facts() -> HostFacts:
    missing = tuple(t for t in {**REQUIRED_TOOLS, **MANAGERS_TOOLS} if shutil.which(t) is None)
    is_linux = sys.platform.startswith("linux")
    return HostFacts(
        platform=sys.platform,
        euid=os.geteuid(),
        missing_tools=missing,
        mem_available_mb=_mem_available_mb() if is_linux else 0,
        netns=frozenset(_ip_json(["netns", "list"], "name")) if is_linux else frozenset(),
        links=frozenset(_ip_json(["link", "show"], "ifname")) if is_linux else frozenset(),
        networks=tuple(_host_networks()) if is_linux else (),
    )


def _mem_available_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def _ip(args: list[str]) -> list[dict]:
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False).stdout
    return json.loads(out) if out.strip() else []


def _ip_json(args: list[str], key: str) -> list[str]:
    return [item[key] for item in _ip(args) if key in item]


def _host_networks() -> list[str]:
    nets = []
    for link in _ip(["-4", "addr", "show"]):
        for a in link.get("addr_info", []):
            nets.append(f"{a['local']}/{a['prefixlen']}")
    for r in _ip(["-4", "route", "show"]):
        dst = r.get("dst", "")
        if dst and dst != "default":
            nets.append(dst if "/" in dst else f"{dst}/32")
    return nets
