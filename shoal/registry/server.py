"""Running the registry: store, Consul HTTP API and DNS in one asyncio process.

`shoal registry` runs it alone; `shoal manager --store etcd://...` embeds the same `RegistryServer`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from shoal.logs import kv
from shoal.metrics import RegistryMetrics
from shoal.registry import acl_http
from shoal.registry.acl_http import AclConfig, AclState
from shoal.registry.checks import CheckRunner
from shoal.registry.core import Config, Registry
from shoal.registry.dns import DNSServer
from shoal.registry.http import make_app
from shoal.registry.leader import DEFAULT_TTL, Leadership
from shoal.registry.store import Store, open_store
from shoal.signals import serve_until_signal

log = logging.getLogger("shoal.registry")


@dataclass
class RegistryServer:
    store: Store
    registry: Registry
    checks: CheckRunner
    runner: web.AppRunner
    dns: DNSServer
    acl: AclState | None = None
    leadership: Leadership | None = None

    @classmethod
    async def start(
        cls,
        config: Config,
        store_url: str,
        http_host: str,
        dns_host: str,
        https: tuple[str, int, ssl.SSLContext] | None = None,
        acl: AclConfig | None = None,
        me: Mapping[str, Any] | None = None,
        leader_ttl: float = DEFAULT_TTL,
    ) -> RegistryServer:
        """With `acl` enabled, every HTTP request is checked against Consul-style ACL tokens (DNS is
        not: containers keep discovering services by name).

        Over etcd, several registries (each embedded in a manager) share the store: this one enters the
        leader election (`leader_ttl` seconds of lease) as `me` (its name and addresses), and only the
        leader runs the cluster-wide loops. Over SQLite it is alone and always leads."""
        store = await open_store(store_url)
        port = https[1] if https is not None else config.http_port
        ident = {"name": config.node, "address": config.address, "consul": f"{config.address}:{port}"}
        ident.update(me or {})
        shared = store_url.startswith("etcd://")
        leadership = Leadership(store, ident, ttl=leader_ttl) if shared else Leadership.solo(ident)
        registry = Registry(store, config)
        registry.leadership = leadership
        await registry.start()
        checks = CheckRunner(registry, config.node, leadership)
        registry.checks = checks  # the registry tells the runner about each committed check change
        await checks.start()
        await leadership.start()
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
        kv(
            log,
            "registry ready",
            http=f"{http_host}:{config.http_port}" if http_host else None,
            https=f"{https[0]}:{https[1]}" if https is not None else None,
            dns=f"{dns_host}:{config.dns_port}" if config.dns_port else None,
            store=store_url,
            acl="on" if acl_state else "off",
            acl_default=acl.default_policy if acl_state and acl else None,
        )
        return cls(store, registry, checks, runner, dns, acl_state, leadership)

    async def close(self) -> None:
        await self.dns.close()
        await self.runner.cleanup()
        if self.leadership is not None:
            await self.leadership.close()  # the successor leads now, not one lease later
        if self.acl is not None:
            await self.acl.close()
        await self.checks.close()
        await self.registry.close()
        await self.store.close()


def https_context(cert: str, key: str) -> ssl.SSLContext:
    """The registry's HTTPS server context (TLS 1.2 at least), for `shoal registry --https` and for the
    registry a manager serves itself."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve_forever(
    config: Config,
    store_url: str,
    http_host: str,
    dns_host: str,
    ready=None,
    https: tuple[str, int, ssl.SSLContext] | None = None,
    acl: AclConfig | None = None,
    leader_ttl: float = DEFAULT_TTL,
) -> None:
    server = await RegistryServer.start(
        config, store_url, http_host, dns_host, https, acl, leader_ttl=leader_ttl
    )
    await serve_until_signal(server.close, ready)
