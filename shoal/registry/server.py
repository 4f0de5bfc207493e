"""Running the registry: store, Consul HTTP API and DNS in one asyncio process.

`shoal registry` runs it alone; `shoal manager` (next) embeds the same `RegistryServer`.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from aiohttp import web

from shoal.metrics import RegistryMetrics
from shoal.registry import acl_http
from shoal.registry.acl_http import AclConfig, AclState
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
    acl: AclState | None = None

    @classmethod
    async def start(
        cls,
        config: Config,
        store_url: str,
        http_host: str,
        dns_host: str,
        https: tuple[str, int, ssl.SSLContext] | None = None,
        acl: AclConfig | None = None,
    ) -> RegistryServer:
        """With `acl` enabled, every HTTP request is checked against Consul-style ACL tokens (DNS is
        not: containers keep discovering services by name)."""
        store = await open_store(store_url)
        registry = Registry(store, config)
        await registry.start()
        checks = CheckRunner(registry, config.node)
        registry.checks = checks  # the registry tells the runner about each committed check change
        await checks.start()
        figures = RegistryMetrics()  # this server's own CollectorRegistry (see shoal.metrics)
        figures.watch_store(store)
        figures.watch_checks(checks.held)
        app = make_app(registry, figures)
        acl_state = None
        if acl is not None and acl.enabled:
            acl_state = AclState(registry, acl)
            await acl_state.start()
            acl_http.install(app, acl_state)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
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
            "registry: http on %s:%d, dns on %s:%d, store %s, acl %s",
            http_host,
            config.http_port,
            dns_host,
            config.dns_port,
            store_url,
            f"on (default {acl.default_policy})" if acl_state and acl else "off",
        )
        return cls(store, registry, checks, runner, dns, acl_state)

    async def close(self) -> None:
        await self.dns.close()
        await self.runner.cleanup()
        if self.acl is not None:
            await self.acl.close()
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
    acl: AclConfig | None = None,
) -> None:
    server = await RegistryServer.start(config, store_url, http_host, dns_host, https, acl)
    if ready:
        ready()
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await server.close()
