"""Registry documents for N simulated nodes, shaped exactly as `shoal agent` publishes them (~40 facts),
so they reach the scheduler through `shoal.cluster.nodes.node_state` like real ones."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

ZONES = ("eu-1", "eu-2", "us-1", "us-2", "ap-1")
OSES = (("Debian", "12.11", "Debian"), ("Ubuntu", "24.04", "Debian"), ("CentOS", "9", "RedHat"))


def documents(n: int, now: float, seed: int = 0) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """(facts doc, info doc, health) per node."""
    rng = random.Random(seed)
    for i in range(n):
        name = f"sim{i:05d}"
        os_name, release, family = rng.choice(OSES)
        cpus = rng.choice((2, 4, 8, 16, 32))
        mem_mb = cpus * rng.choice((2048.0, 4096.0, 8192.0))
        load = rng.random() * cpus * 1.2
        facts: dict[str, Any] = {
            "architecture": "amd64" if family == "Debian" else "x86_64",
            "hardwaremodel": "x86_64",
            "is_virtual": rng.random() < 0.8,
            "virtual": rng.choice(("kvm", "kvm", "vmware", "physical")),
            "selinux": family == "RedHat",
            "selinux_enforced": family == "RedHat" and rng.random() < 0.5,
            "kernel": "Linux",
            "kernelrelease": f"6.{rng.randrange(1, 12)}.0-{rng.randrange(40)}-amd64",
            "kernelversion": "6.1.0",
            "kernelmajversion": "6.1",
            "operatingsystem": os_name,
            "operatingsystemrelease": release,
            "operatingsystemmajrelease": release.split(".")[0],
            "osfamily": family,
            "hostname": name,
            "fqdn": f"{name}.sim.example",
            "domain": "sim.example",
            "ipaddress": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            "netmask": "255.255.0.0",
            "network": f"10.{i >> 16 & 255}.0.0",
            "macaddress": f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            "interfaces": "eth0,lo",
            "processorcount": cpus,
            "physicalprocessorcount": 1,
            "memorysize_mb": mem_mb,
            "memoryfree_mb": mem_mb * rng.random(),
            "swapsize_mb": 0.0,
            "swapfree_mb": 0.0,
            "uptime_seconds": rng.randrange(10**6),
            "load_averages.1m": round(load, 2),
            "load_averages.5m": round(load, 2),
            "load_averages.15m": round(load, 2),
            "timezone": "UTC",
            "system_overload_1min": round(load / cpus * 100),
            "system_overload_5min": round(load / cpus * 100),
            "system_overload_10min": round(load / cpus * 100),
            "docker_version": "20.10.24+dfsg1",
            "docker_storage_driver": "overlay2",
            "docker_cgroup_driver": "cgroupfs",
            "docker_volume_drivers": "local,shoal,flocker" if rng.random() < 0.5 else "local",
            "docker_containers": rng.randrange(50),
            "docker_containers_running": rng.randrange(50),
            "docker_images": rng.randrange(20),
            "zone": rng.choice(ZONES),
        }
        info = {
            "node": name,
            "address": facts["ipaddress"],
            "engine": f"tcp://{facts['ipaddress']}:2375",
            "cpus": cpus,
            "memory_mb": mem_mb,
            "labels": {"rack": f"r{rng.randrange(40)}"},
            "engine_labels": {"disk": rng.choice(("ssd", "hdd"))},
        }
        health = "passing" if rng.random() < 0.98 else "critical"
        yield {"node": name, "gathered_at": now - rng.random() * 5, "facts": facts}, info, health
