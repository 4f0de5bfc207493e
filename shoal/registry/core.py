"""The registry's Consul semantics over a Store: KV with locks, sessions, the agent's services and checks,
and the catalog and health views.

The HTTP and DNS front ends call only this; it raises ShoalError subclasses, which http.py
renders as Consul replies. The one agent here is also the leader of a one-node datacenter, as DESIGN
says; services and checks registered through the agent belong to its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shoal.errors import BadRequest, NotFound, ServerError, TooLarge
from shoal.registry import model as m
from shoal.registry.model import (
    CHECKS,
    KV,
    NODES,
    SERVICES,
    SESSIONS,
    Check,
    CheckDef,
    KVEntry,
    Node,
    Service,
    Session,
)
from shoal.registry.store import Store

if TYPE_CHECKING:
    from shoal.registry.checks import CheckRunner

log = logging.getLogger("shoal.registry")
SERF_HEALTH = "serfHealth"
MIN_TTL, MAX_TTL = 10.0, 86400.0


@dataclass(frozen=True, slots=True)
class Config:
    node: str = "shoal"
    address: str = "127.0.0.1"
    datacenter: str = "dc1"
    domain: str = "shoal"
    server_port: int = 8300
    http_port: int = 8500
    dns_port: int = 8600
    enable_script_checks: bool = False


class Registry:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._lock_delay: dict[str, float] = {}  # kv key -> monotonic time until which acquire fails
        # every live session, so that one whose lease expired can still be invalidated with its own
        # lock delay and behavior after the store has deleted its record
        self._known: dict[str, Session] = {}
        self.checks: CheckRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, config.node))

    async def start(self) -> None:
        node = Node(self.config.node, self.config.address, self.config.datacenter, id=self.node_id)
        await self.store.put(NODES + node.name, m.dump(node))
        serf = Check(
            node.name, SERF_HEALTH, "Serf Health Status", m.PASSING, output="Agent alive and reachable"
        )
        await self._write_check(serf)
        self._known = {s.id: s for s in await self.sessions()}
        await self._release_orphans()
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch_sessions()))
        from shoal.registry.checks import CheckRunner

        self.checks = CheckRunner(self)
        await self.checks.start()

    async def close(self) -> None:
        if self.checks:
            await self.checks.close()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def index(self) -> int:
        return await self.store.index()

    async def wait(self, prefixes: Sequence[str], index: int, timeout: float) -> int:
        return await self.store.wait(prefixes, index, timeout)

    # --- KV -----------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> KVEntry | None:
        e = await self.store.get(KV + key)
        return KVEntry.decode(key, e.value, e.create_index, e.modify_index) if e else None

    async def kv_range(self, prefix: str) -> list[KVEntry]:
        n = len(KV)
        return [
            KVEntry.decode(e.key[n:], e.value, e.create_index, e.modify_index)
            for e in await self.store.range(KV + prefix)
        ]

    def _check_value(self, value: bytes) -> None:
        if len(value) > m.MAX_VALUE:
            raise TooLarge(
                f"Request body({len(value)} bytes) too large, max size: {m.MAX_VALUE} bytes. "
                "See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size."
            )

    async def kv_put(self, key: str, value: bytes, flags: int = 0, cas: int | None = None) -> bool:
        self._check_key(key)
        self._check_value(value)
        for _ in range(100):  # a plain PUT retries until no other write slips in between
            old = await self.kv_get(key)
            # a plain PUT keeps the lock fields: it neither takes nor releases a lock
            new = KVEntry(key, value, flags, old.lock_index if old else 0, old.session if old else "")
            current = old.modify_index if old else 0
            if cas is not None and cas != current:
                return False
            if await self.store.cas(KV + key, new.encode(), current) is not None:
                return True
            if cas is not None:
                return False
        raise ServerError(f"could not write {key!r}: too many concurrent writers")

    def _check_key(self, key: str) -> None:
        if not key:
            raise BadRequest("Missing key name")

    async def kv_acquire(self, key: str, value: bytes, session_id: str, flags: int = 0) -> bool:
        self._check_key(key)
        self._check_value(value)
        session = await self.session(session_id)
        if session is None:
            raise ServerError(f'invalid session "{session_id}"')
        until = self._lock_delay.get(key, 0.0)
        if until > time.monotonic():
            return False
        old = await self.kv_get(key)
        if old and old.session and old.session != session_id:
            return False
        if old and old.session == session_id:
            new = replace(old, value=value, flags=flags)
        else:
            new = KVEntry(key, value, flags, (old.lock_index if old else 0) + 1, session_id)
        return await self.store.cas(KV + key, new.encode(), old.modify_index if old else 0) is not None

    async def kv_release(self, key: str, value: bytes, session_id: str, flags: int = 0) -> bool:
        self._check_key(key)
        self._check_value(value)
        if await self.session(session_id) is None:
            raise ServerError(f'invalid session "{session_id}"')
        old = await self.kv_get(key)
        if old is None or old.session != session_id:
            return False
        new = replace(old, value=value, flags=flags, session="")
        return await self.store.cas(KV + key, new.encode(), old.modify_index) is not None

    async def kv_delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        if recurse:
            await self.store.delete_prefix(KV + key)
            return True
        if cas is not None:
            old = await self.kv_get(key)
            if (old.modify_index if old else 0) != cas:
                return False
            if old is None:
                return True
            return await self.store.delete(KV + key, index=cas) is not None
        await self.store.delete(KV + key)
        return True

    # --- sessions -------------------------------------------------------------------------------------

    async def session(self, session_id: str) -> Session | None:
        e = await self.store.get(SESSIONS + session_id)
        return m.load_session(e.value, e.create_index, e.modify_index) if e else None

    async def sessions(self, node: str | None = None) -> list[Session]:
        out = [
            m.load_session(e.value, e.create_index, e.modify_index) for e in await self.store.range(SESSIONS)
        ]
        return [s for s in out if node is None or s.node == node]

    async def session_create(self, body: dict[str, Any], dc: str | None) -> str:
        self._check_dc(dc)
        node = body.get("node") or self.config.node
        if await self.store.get(NODES + node) is None:
            raise ServerError(f"Missing node registration: node {node!r} is not in the catalog")
        behavior = (body.get("behavior") or "release").lower()
        if behavior not in ("release", "delete"):
            raise BadRequest(f"Invalid Behavior setting '{behavior}': must be 'release' or 'delete'")
        ttl = m.parse_duration(body.get("ttl"), "TTL")
        if ttl and not MIN_TTL <= ttl <= MAX_TTL:
            raise BadRequest(f"Invalid Session TTL '{m.format_duration(ttl)}', must be between [10s=24h0m0s]")
        lock_delay = m.parse_duration(body.get("lockdelay", "15s"), "LockDelay")
        if lock_delay > 60:
            lock_delay = 60.0  # Consul caps it at 60s
        checks = body.get("checks")
        checks = [SERF_HEALTH] if checks is None else list(checks)
        for cid in checks:
            c = await self.store.get(f"{CHECKS}{node}/{cid}")
            if c is None:
                raise ServerError(f'Missing check "{cid}" registration')
            if m.load_check(c.value, 0, 0).status == m.CRITICAL:
                raise ServerError(f'Check "{cid}" is in critical state')
        sid = str(uuid.uuid4())
        lease = await self.store.grant(ttl) if ttl else 0
        s = Session(sid, body.get("name") or "", node, lock_delay, behavior, ttl, tuple(checks), lease)
        await self.store.put(SESSIONS + sid, m.dump(s), lease=lease)
        self._known[sid] = s
        return sid

    async def session_destroy(self, session_id: str, dc: str | None = None) -> bool:
        self._check_dc(dc)
        s = await self.session(session_id)
        if s is None:
            return True
        if s.lease:
            await self.store.revoke(s.lease)
        await self.store.delete(SESSIONS + session_id)
        await self._invalidate(s)
        return True

    async def session_renew(self, session_id: str, dc: str | None = None) -> Session:
        self._check_dc(dc)
        s = await self.session(session_id)
        if s is None or (s.lease and not await self.store.keepalive(s.lease)):
            raise NotFound(f"Session id '{session_id}' not found")
        return s

    def _check_dc(self, dc: str | None) -> None:
        if dc and dc != self.config.datacenter:
            raise ServerError(
                f"No path to datacenter: {dc!r} is not known (this is {self.config.datacenter!r})"
            )

    async def _invalidate(self, s: Session) -> None:
        """What Consul does when a session ends: release or delete what it held, and start lock-delay."""
        self._known.pop(s.id, None)
        for e in await self.kv_range(""):
            if e.session != s.id:
                continue
            if s.lock_delay:
                self._lock_delay[e.key] = time.monotonic() + s.lock_delay
            if s.behavior == "delete":
                await self.store.delete(KV + e.key, index=e.modify_index)
            else:
                await self.store.cas(KV + e.key, replace(e, session="").encode(), e.modify_index)

    async def _watch_sessions(self) -> None:
        """Sessions whose lease expired vanish from the store; release their locks as Consul would."""
        index = await self.store.index()
        while True:
            try:
                index = max(index, await self.store.wait([SESSIONS], index, 30.0))
                live = {s.id: s for s in await self.sessions()}
                for sid in set(self._known) - set(live):
                    await self._invalidate(self._known[sid])
                self._known.update(live)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session watch failed; retrying")
                await asyncio.sleep(1)

    async def _release_orphans(self) -> None:
        live = {s.id for s in await self.sessions()}
        for e in await self.kv_range(""):
            if e.session and e.session not in live:
                await self.store.cas(KV + e.key, replace(e, session="").encode(), e.modify_index)

    # --- nodes, services, checks ----------------------------------------------------------------------

    async def nodes(self) -> list[Node]:
        return [m.load_node(e.value, e.create_index, e.modify_index) for e in await self.store.range(NODES)]

    async def services(self, node: str | None = None) -> list[Service]:
        prefix = SERVICES + (f"{node}/" if node else "")
        return [
            m.load_service(e.value, e.create_index, e.modify_index) for e in await self.store.range(prefix)
        ]

    async def service(self, service_id: str, node: str | None = None) -> Service | None:
        e = await self.store.get(f"{SERVICES}{node or self.config.node}/{service_id}")
        return m.load_service(e.value, e.create_index, e.modify_index) if e else None

    async def all_checks(self, node: str | None = None) -> list[Check]:
        prefix = CHECKS + (f"{node}/" if node else "")
        return [m.load_check(e.value, e.create_index, e.modify_index) for e in await self.store.range(prefix)]

    async def check(self, check_id: str, node: str | None = None) -> Check | None:
        e = await self.store.get(f"{CHECKS}{node or self.config.node}/{check_id}")
        return m.load_check(e.value, e.create_index, e.modify_index) if e else None

    async def _write_check(self, c: Check) -> None:
        await self.store.put(c.key(), m.dump(c))

    async def register_service(self, body: dict[str, Any]) -> Service:
        name = body.get("name")
        if not name or not isinstance(name, str):
            raise BadRequest("Missing service name")
        sid = body.get("id") or name
        port = body.get("port") or 0
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise BadRequest(f"Invalid service port {port!r}: must be 0-65535")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("Invalid Tags: must be a list of strings")
        weights = body.get("weights") or {}
        svc = Service(
            node=self.config.node,
            id=sid,
            name=name,
            tags=tuple(tags),
            address=body.get("address") or "",
            port=port,
            meta=body.get("meta") or {},
            weights={"Passing": int(weights.get("passing", 1)), "Warning": int(weights.get("warning", 1))},
            enable_tag_override=bool(body.get("enabletagoverride", False)),
        )
        defs = []
        if body.get("check"):
            defs.append(body["check"])
        defs += body.get("checks") or []
        checks = [self._check_from(d, svc, i + 1 if len(defs) > 1 else 0) for i, d in enumerate(defs)]
        # validate everything before writing anything
        await self.store.put(f"{SERVICES}{svc.node}/{svc.id}", m.dump(svc))
        old = {c.id for c in await self.all_checks(svc.node) if c.service_id == svc.id}
        for c in checks:
            await self._add_check(c)
        for cid in old - {c.id for c in checks}:
            await self._remove_check(cid)
        return svc

    def _check_from(self, d: dict[str, Any], svc: Service | None, n: int) -> Check:
        if not isinstance(d, dict):
            raise BadRequest("Invalid check: must be an object")
        ttl = m.parse_duration(d.get("ttl"), "TTL")
        interval = m.parse_duration(d.get("interval"), "Interval")
        timeout = m.parse_duration(d.get("timeout"), "Timeout") or 10.0
        args = d.get("args") or d.get("scriptargs") or []
        definition = CheckDef(
            ttl=ttl,
            http=d.get("http") or "",
            method=(d.get("method") or "GET").upper(),
            tcp=d.get("tcp") or "",
            args=tuple(args),
            interval=interval,
            timeout=timeout,
            deregister_after=m.parse_duration(
                d.get("deregistercriticalserviceafter"), "DeregisterCriticalServiceAfter"
            ),
        )
        kinds = [k for k in (ttl, definition.http, definition.tcp, definition.args) if k]
        if len(kinds) != 1:
            raise BadRequest("Invalid check: exactly one of TTL, HTTP, TCP or Args must be given")
        if not ttl and interval <= 0:
            raise BadRequest("Invalid check: HTTP, TCP and script checks need an Interval")
        if definition.args and not self.config.enable_script_checks:
            raise BadRequest(
                "Scripts are disabled on this agent; to enable, start it with --enable-script-checks"
            )
        status = (d.get("status") or m.CRITICAL).lower()
        if status not in m.STATUSES:
            raise BadRequest(f"Invalid check status {status!r}: must be passing, warning or critical")
        if svc is not None:
            default_id = f"service:{svc.id}" + (f":{n}" if n else "")
            cid = d.get("checkid") or d.get("id") or default_id
            name = d.get("name") or f"Service '{svc.name}' check"
        else:
            name = d.get("name")
            if not name:
                raise BadRequest("Missing check name")
            cid = d.get("checkid") or d.get("id") or name
        return Check(
            node=self.config.node,
            id=cid,
            name=name,
            status=status,
            service_id=svc.id if svc else "",
            service_name=svc.name if svc else "",
            service_tags=svc.tags if svc else (),
            notes=d.get("notes") or "",
            definition=definition,
        )

    async def register_check(self, body: dict[str, Any]) -> Check:
        svc = None
        service_id = body.get("serviceid")
        if service_id:
            svc = await self.service(service_id)
            if svc is None:
                raise NotFound(f'ServiceID "{service_id}" does not exist')
        c = self._check_from(body, svc, 0)
        await self._add_check(c)
        return c

    async def _add_check(self, c: Check) -> None:
        old = await self.check(c.id, c.node)
        if old is not None:
            c = replace(
                c, status=old.status if c.definition == old.definition else c.status, output=old.output
            )
        await self._write_check(c)
        if self.checks:
            self.checks.schedule(c)

    async def _remove_check(self, check_id: str, node: str | None = None) -> None:
        if self.checks:
            self.checks.unschedule(check_id, node or self.config.node)
        await self.store.delete(f"{CHECKS}{node or self.config.node}/{check_id}")

    async def deregister_check(self, check_id: str) -> None:
        if await self.check(check_id) is None or check_id == SERF_HEALTH:
            raise NotFound(
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
            )
        await self._remove_check(check_id)

    async def deregister_service(self, service_id: str) -> None:
        svc = await self.service(service_id)
        if svc is None:
            raise NotFound(
                f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the '
                "service name."
            )
        for c in await self.all_checks(svc.node):
            if c.service_id == service_id:
                await self._remove_check(c.id)
        await self.store.delete(f"{SERVICES}{svc.node}/{service_id}")

    async def update_check(self, check_id: str, status: str, output: str) -> Check:
        c = await self.check(check_id)
        if c is None or check_id == SERF_HEALTH:
            raise NotFound(
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
            )
        if status not in m.STATUSES:
            raise BadRequest(f"Invalid check status: {status!r}")
        if len(output) > 4096:
            output = output[:4096] + " ... (Output truncated)"
        if self.checks and c.definition.ttl:
            self.checks.ttl_touched(c)
        return await self.set_check_status(c, status, output)

    async def set_check_status(self, c: Check, status: str, output: str) -> Check:
        cur = await self.check(c.id, c.node)
        if cur is None:
            return c
        if cur.status == status and cur.output == output:
            return cur
        new = replace(cur, status=status, output=output)
        await self._write_check(new)
        if self.checks:
            self.checks.status_changed(new)
        return new

    # --- catalog registration (remote nodes: shoal agents) ---------------------------------------------

    async def catalog_register(self, body: dict[str, Any]) -> None:
        """Consul's /v1/catalog/register. shoal extension: a check given a TTL here is timed by the
        registry like an agent TTL check, and registering it again as passing renews it; that is how
        the node agents (which have no Consul agent of their own) keep their node's check alive."""
        node = body.get("node")
        address = body.get("address")
        if not node or not isinstance(node, str):
            raise BadRequest("Must provide node")
        if not address or not isinstance(address, str):
            raise BadRequest("Must provide address")
        self._check_dc(body.get("datacenter"))
        meta = body.get("nodemeta") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise BadRequest("Invalid NodeMeta: must map strings to strings")
        n = Node(
            node,
            address,
            self.config.datacenter,
            id=body.get("id") or str(uuid.uuid5(uuid.NAMESPACE_DNS, node)),
            meta=meta,
            tagged_addresses=body.get("taggedaddresses") or {},
        )
        svc = None
        if body.get("service"):
            s = body["service"]
            if not isinstance(s, dict) or not s.get("service"):
                raise BadRequest("Invalid Service: must have a Service name")
            svc = Service(
                node=node,
                id=s.get("id") or s["service"],
                name=s["service"],
                tags=tuple(s.get("tags") or ()),
                address=s.get("address") or "",
                port=int(s.get("port") or 0),
                meta=s.get("meta") or {},
            )
        defs = ([body["check"]] if body.get("check") else []) + list(body.get("checks") or [])
        checks = []
        for d in defs:
            if not isinstance(d, dict) or not (d.get("checkid") or d.get("name")):
                raise BadRequest("Invalid Check: must have a CheckID or Name")
            status = (d.get("status") or m.CRITICAL).lower()
            if status not in m.STATUSES:
                raise BadRequest(f"Invalid check status {status!r}: must be passing, warning or critical")
            ttl = m.parse_duration(d.get("ttl") or (d.get("definition") or {}).get("ttl"), "TTL")
            sid = d.get("serviceid") or ""
            checks.append(
                Check(
                    node=node,
                    id=d.get("checkid") or d["name"],
                    name=d.get("name") or d["checkid"],
                    status=status,
                    service_id=sid,
                    service_name=svc.name if svc and sid == svc.id else "",
                    service_tags=svc.tags if svc and sid == svc.id else (),
                    notes=d.get("notes") or "",
                    output=d.get("output") or "",
                    definition=CheckDef(ttl=ttl),
                )
            )
        old = await self.store.get(NODES + node)
        if old is None or m.load_node(old.value, 0, 0) != replace(n, create_index=0, modify_index=0):
            await self.store.put(NODES + node, m.dump(n))
        if svc is not None:
            await self.store.put(f"{SERVICES}{node}/{svc.id}", m.dump(svc))
        for c in checks:
            cur = await self.check(c.id, node)
            if cur is None or replace(cur, create_index=0, modify_index=0) != c:
                await self._write_check(c)
            if self.checks and c.definition.ttl:
                self.checks.ttl_touched(c)
            if self.checks:
                self.checks.status_changed(c)

    async def catalog_deregister(self, body: dict[str, Any]) -> None:
        node = body.get("node")
        if not node:
            raise BadRequest("Must provide node")
        if body.get("serviceid"):
            await self.store.delete(f"{SERVICES}{node}/{body['serviceid']}")
            for c in await self.all_checks(node):
                if c.service_id == body["serviceid"]:
                    await self._remove_check(c.id, node)
        elif body.get("checkid"):
            await self._remove_check(body["checkid"], node)
        else:
            for c in await self.all_checks(node):
                await self._remove_check(c.id, node)
            await self.store.delete_prefix(f"{SERVICES}{node}/")
            await self.store.delete(NODES + node)

    # --- views ----------------------------------------------------------------------------------------

    async def health_service(
        self, name: str, tag: str | None = None, passing: bool = False, ignore_case: bool = False
    ) -> list[dict]:
        fold = str.lower if ignore_case else str
        nodes = {n.name: n for n in await self.nodes()}
        checks = await self.all_checks()
        out = []
        for svc in sorted(await self.services(), key=lambda s: (s.node, s.id)):
            if fold(svc.name) != fold(name) or svc.node not in nodes:
                continue
            if tag and fold(tag) not in {fold(t) for t in svc.tags}:
                continue
            mine = [c for c in checks if c.node == svc.node and c.service_id in ("", svc.id)]
            if passing and any(c.status != m.PASSING for c in mine):
                continue
            out.append(
                {
                    "Node": nodes[svc.node].to_consul(),
                    "Service": svc.to_health(),
                    "Checks": [c.to_consul() for c in mine],
                }
            )
        return out

    async def catalog_service(self, name: str, tag: str | None = None) -> list[dict]:
        nodes = {n.name: n for n in await self.nodes()}
        out = []
        for svc in sorted(await self.services(), key=lambda s: (s.node, s.id)):
            if svc.name != name or (tag and tag not in svc.tags) or svc.node not in nodes:
                continue
            n = nodes[svc.node]
            out.append(
                {
                    "ID": n.id,
                    "Node": n.name,
                    "Address": n.address,
                    "Datacenter": n.datacenter,
                    "TaggedAddresses": n.to_consul()["TaggedAddresses"],
                    "NodeMeta": n.meta,
                    "ServiceKind": "",
                    "ServiceID": svc.id,
                    "ServiceName": svc.name,
                    "ServiceTags": list(svc.tags),
                    "ServiceAddress": svc.address,
                    "ServicePort": svc.port,
                    "ServiceMeta": svc.meta,
                    "ServiceWeights": svc.weights,
                    "ServiceEnableTagOverride": svc.enable_tag_override,
                    "CreateIndex": svc.create_index,
                    "ModifyIndex": svc.modify_index,
                }
            )
        return out

    async def catalog_services(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for svc in await self.services():
            out.setdefault(svc.name, set()).update(svc.tags)
        return {k: sorted(v) for k, v in sorted(out.items())}
