"""Running `shoal manager`: the cluster cache, the Docker API on TCP (and a unix socket)."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from shoal.api.docker.app import make_app
from shoal.cluster.state import Cluster
from shoal.data.profiles import load_profiles
from shoal.logs import kv
from shoal.manager.service import Manager, Settings
from shoal.signals import stop_on_signals

log = logging.getLogger("shoal.manager")


async def serve(
    registry: str,
    host: str,
    port: int,
    unix: str | None,
    strategy: str,
    fact_ttl: float,
    profiles_file: Path | None = None,
    ready=None,
) -> None:
    profiles, default_profile = load_profiles(profiles_file)
    cluster = Cluster(registry)
    await cluster.start()
    manager = Manager(cluster, Settings(strategy, fact_ttl, "shoal", profiles, default_profile))
    runner = web.AppRunner(make_app(manager), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    if unix:
        Path(unix).unlink(missing_ok=True)
        await web.UnixSite(runner, unix).start()
    kv(log, "manager ready", docker_api=f"tcp://{host}:{port}", unix=unix, nodes=len(cluster.index),
       strategy=strategy)  # fmt: skip
    if ready:
        ready()
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await cluster.close()
