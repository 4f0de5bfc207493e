"""The engine's facts, from its /info: version, storage and cgroup driver, volume drivers, labels."""

from __future__ import annotations

import aiohttp

from shoal.agent.facts import Facts


def engine_url_parts(url: str) -> tuple[aiohttp.BaseConnector, str]:
    if url.startswith("unix://"):
        return aiohttp.UnixConnector(path=url.removeprefix("unix://")), "http://engine"
    return aiohttp.TCPConnector(), url.replace("tcp://", "http://", 1)


def from_info(info: dict, served_drivers: list[str]) -> tuple[Facts, dict[str, str]]:
    """Facts and engine labels from the engine's /info (pure)."""
    labels = {}
    for label in info.get("Labels") or []:
        k, _, v = label.partition("=")
        labels[k] = v
    volume = list((info.get("Plugins") or {}).get("Volume") or [])
    drivers = sorted(set(volume) | set(served_drivers))
    facts: Facts = {
        "docker_version": info.get("ServerVersion", ""),
        "docker_storage_driver": info.get("Driver", ""),
        "docker_cgroup_driver": info.get("CgroupDriver", ""),
        "docker_volume_drivers": ",".join(drivers),
        "docker_containers": info.get("Containers", 0),
        "docker_containers_running": info.get("ContainersRunning", 0),
        "docker_images": info.get("Images", 0),
    }
    facts.update({f"docker_labels.{k}": v for k, v in labels.items()})
    return facts, labels


async def gather(
    session: aiohttp.ClientSession, base: str, served_drivers: list[str]
) -> tuple[Facts, dict[str, str]]:
    async with session.get(f"{base}/v1.41/info", timeout=aiohttp.ClientTimeout(total=5)) as r:
        r.raise_for_status()
        return from_info(await r.json(), served_drivers)
