"""Running the registry: store, Consul HTTP API and DNS in one asyncio process.

`shoal registry` runs it alone; `shoal manager` (next) embeds the same `RegistryServer`.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from aiohttp import web

from shoal.registry.checks import CheckRunner
from shoal.registry.core import Config, Registry
from shoal.registry.dns import DNSServer
from shoal.registry.http import make_app
from shoal.registry.store import Store, open_store
from shoal.signals import stop_on_signals

log = logging.getLogger("shoal.registry")


@dataclass
class RegistryServer:
    store: Store
    registry: Registry
    checks: CheckRunner
    runner: web.AppRunner
    dns: DNSServer

    @classmethod
    async def start(
        cls,
        config: Config,
        store_url: str,
        http_host: str,
        dns_host: str,
        https: tuple[str, int, ssl.SSLContext] | None = None,
    ) -> RegistryServer:
        store = await open_store(store_url)
        registry = Registry(store, config)
        await registry.start()
        checks = CheckRunner(registry, config.node)
        registry.checks = checks  # the registry tells the runner about each committed check change
        await checks.start()
        runner = web.AppRunner(make_app(registry), access_log=None, handler_cancellation=True)
        await runner.setup()
        if http_host:
            await web.TCPSite(runner, http_host, config.http_port, backlog=4096).start()
        if https is not None:
            host, port, ctx = https
            await web.TCPSite(runner, host, port, backlog=4096, ssl_context=ctx).start()
        dns = DNSServer(registry)
        if config.dns_port:
            await dns.start(dns_host, config.dns_port)
        log.info(
            "registry: http on %s:%d, dns on %s:%d, store %s",
            http_host,
            config.http_port,
            dns_host,
            config.dns_port,
            store_url,
        )
        return cls(store, registry, checks, runner, dns)

    async def close(self) -> None:
        await self.dns.close()
        await self.runner.cleanup()
        await self.checks.close()
        await self.registry.close()
        await self.store.close()


async def serve_forever(
    config: Config,
    store_url: str,
    http_host: str,
    dns_host: str,
    ready=None,
    https: tuple[str, int, ssl.SSLContext] | None = None,
) -> None:
    server = await RegistryServer.start(config, store_url, http_host, dns_host, https)
    if ready:
        ready()
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await server.close()
