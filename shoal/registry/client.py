"""The one registry client: the Consul HTTP API, async (aiohttp), for everything in shoal that reads or
writes the registry — the agent, the manager's cache, the dataset records, the dashboard and the CLI.

It speaks only Consul's API, so a site that runs a real Consul can point shoal at it. KV values come
back decoded from base64 once, here (`KVPair.value`, `.json()`); blocking queries (`index=`, `wait=`)
return the new `X-Consul-Index` beside the data. Every call has a deadline: a registry that does not
answer is a RegistryUnreachable the caller can retry, never a hang.
"""

from __future__ import annotations

import base64
import json
import os
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from shoal.errors import PermissionDenied, RegistryUnreachable, ShoalError

T = TypeVar("T")
TIMEOUT = 10.0  # one call; a blocking query gets its wait on top
BLOCK_MARGIN = 15.0  # Consul adds up to wait/16 of jitter; leave room for it and a slow store


@dataclass(frozen=True, slots=True)
class KVPair:
    key: str
    value: bytes
    modify_index: int = 0
    create_index: int = 0
    lock_index: int = 0
    flags: int = 0
    session: str = ""

    def json(self) -> Any:
        """The value as JSON (shoal's own records); None when empty or not JSON."""
        if not self.value:
            return None
        try:
            return json.loads(self.value)
        except ValueError:
            return None

    def text(self) -> str:
        return self.value.decode(errors="replace")

    @staticmethod
    def from_consul(e: dict[str, Any]) -> KVPair:
        raw = e.get("Value")
        return KVPair(
            e["Key"],
            base64.b64decode(raw) if raw else b"",
            int(e.get("ModifyIndex", 0)),
            int(e.get("CreateIndex", 0)),
            int(e.get("LockIndex", 0)),
            int(e.get("Flags", 0)),
            e.get("Session") or "",
        )


def encode(value: Any) -> bytes:
    """bytes and str go as they are; anything else as JSON (sorted keys, so equal records are equal bytes)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, sort_keys=True).encode()


def base_url(address: str) -> str:
    """`HOST:PORT` or a URL, as CONSUL_HTTP_ADDR allows, to a base URL."""
    address = address.rstrip("/")
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


class RegistryClient:
    def __init__(
        self,
        base: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = TIMEOUT,
        token: str = "",
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.base = base_url(base)
        self.session = session
        self.timeout = timeout
        # Consul's header for an ACL token; never logged, never in an error message
        self._headers = {"X-Consul-Token": token} if token else {}
        self._ssl_arg: ssl_module.SSLContext | bool = ssl if ssl is not None else True

    # --- the one request path -------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        wait: float = 0.0,
    ) -> tuple[int, int, bytes]:
        """(status, X-Consul-Index, body); 404 is an answer, any other 4xx/5xx a ShoalError."""
        try:
            async with self.session.request(
                method,
                f"{self.base}{path}",
                params=params,
                data=data,
                headers=self._headers,
                ssl=self._ssl_arg,
                timeout=aiohttp.ClientTimeout(total=self.timeout + (wait + BLOCK_MARGIN if wait else 0)),
            ) as r:
                body = await r.read()
                index = int(r.headers.get("X-Consul-Index", "0") or 0)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise RegistryUnreachable(f"registry at {self.base} unreachable: {e or type(e).__name__}") from e
        if r.status == 403:
            raise PermissionDenied(
                f"registry {method} {path.split('?')[0]}: permission denied "
                f"({body.decode(errors='replace').strip()}); give a token that may (CONSUL_HTTP_TOKEN)"
            )
        if r.status >= 400 and r.status != 404:
            raise ShoalError(f"registry {method} {path}: {r.status} {body.decode(errors='replace').strip()}")
        return r.status, index, body

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        status, _, body = await self._call(method, path, **kw)
        if status == 404 or not body.strip():
            return None
        return json.loads(body)

    @staticmethod
    def _blocking(index: int, wait: float) -> dict[str, str]:
        return {"index": str(index), "wait": f"{wait:g}s"} if index else {}

    # --- KV ---------------------------------------------------------------------------------------

    async def get(self, key: str) -> KVPair | None:
        got = await self._json("GET", f"/v1/kv/{key}")
        return KVPair.from_consul(got[0]) if got else None

    async def get_json(self, key: str) -> Any:
        pair = await self.get(key)
        return pair.json() if pair else None

    async def list_prefix(
        self, prefix: str, *, index: int = 0, wait: float = 30.0
    ) -> tuple[list[KVPair], int]:
        """Every pair under `prefix`; with `index`, blocks until something there changes after it."""
        status, new_index, body = await self._call(
            "GET",
            f"/v1/kv/{prefix}",
            params={"recurse": "", **self._blocking(index, wait)},
            wait=wait if index else 0.0,
        )
        if status == 404 or not body.strip():
            return [], new_index
        return [KVPair.from_consul(e) for e in json.loads(body)], new_index

    async def put(
        self,
        key: str,
        value: Any,
        *,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        params: dict[str, str] = {}
        if cas is not None:
            params["cas"] = str(cas)
        if acquire:
            params["acquire"] = acquire
        if release:
            params["release"] = release
        return bool(await self._json("PUT", f"/v1/kv/{key}", params=params or None, data=encode(value)))

    async def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        params = {"recurse": ""} if recurse else {}
        if cas is not None:
            params["cas"] = str(cas)
        return bool(await self._json("DELETE", f"/v1/kv/{key}", params=params or None))

    async def token_self(self) -> dict[str, Any] | None:
        """The ACL token this client holds (Consul's /v1/acl/token/self); None where the registry runs
        without ACLs; an unknown token is PermissionDenied."""
        return await self._json("GET", "/v1/acl/token/self")

    async def txn(self, ops: list[dict[str, Any]]) -> tuple[bool, list[Any]]:
        """Consul's transaction API (KV operations), all applied or none: e.g. claim a dataset name and
        write its record in one step.

        Each op is one KV operation as Consul names its fields — `{"Verb": "cas", "Key": k, "Value": v,
        "Index": 0}`, or with "Flags", "Session" — where Value is anything `put` takes (bytes, str, or a
        record to store as JSON); base64 is done here. Returns `(True, [KVPair, ...])`, one result per
        operation that has one (Consul gives none for deletes), when applied, and
        `(False, [{"OpIndex": i, "What": "..."}, ...])` when an operation failed and nothing was written.
        """
        body = []
        for op in ops:
            kv = {k: v for k, v in op.items() if k != "Value"}
            if op.get("Value") is not None:
                kv["Value"] = base64.b64encode(encode(op["Value"])).decode()
            body.append({"KV": kv})
        try:
            async with self.session.put(
                f"{self.base}/v1/txn",
                data=json.dumps(body),
                headers=self._headers,
                ssl=self._ssl_arg,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise RegistryUnreachable(f"registry at {self.base} unreachable: {e or type(e).__name__}") from e
        if status == 403:
            raise PermissionDenied(
                f"registry PUT /v1/txn: permission denied ({raw.decode(errors='replace').strip()})"
            )
        if status not in (200, 409):
            raise ShoalError(f"registry PUT /v1/txn: {status} {raw.decode(errors='replace').strip()}")
        reply = json.loads(raw)
        if status == 409:
            return False, list(reply.get("Errors") or [])
        return True, [KVPair.from_consul(res["KV"]) for res in reply.get("Results") or [] if "KV" in res]

    # --- sessions ---------------------------------------------------------------------------------

    async def session_create(
        self, name: str, ttl: str, *, lock_delay: str = "0s", behavior: str = "release"
    ) -> str:
        body = {"Name": name, "TTL": ttl, "LockDelay": lock_delay, "Behavior": behavior}
        got = await self._json("PUT", "/v1/session/create", data=encode(body))
        if not isinstance(got, dict) or "ID" not in got:
            raise ShoalError(
                f"{self.base} does not answer as a Consul registry (session create gave {got!r}); "
                "check the registry address"
            )
        return str(got["ID"])

    async def session_renew(self, session_id: str) -> bool:
        return await self._json("PUT", f"/v1/session/renew/{session_id}") is not None

    async def session_destroy(self, session_id: str) -> None:
        await self._call("PUT", f"/v1/session/destroy/{session_id}")

    async def session_info(self, session_id: str) -> dict[str, Any] | None:
        got = await self._json("GET", f"/v1/session/info/{session_id}")
        return got[0] if got else None

    # --- catalog and health -------------------------------------------------------------------------

    async def catalog_register(self, body: dict[str, Any]) -> None:
        await self._call("PUT", "/v1/catalog/register", data=encode(body))

    async def health_checks(
        self, service: str, *, index: int = 0, wait: float = 30.0
    ) -> tuple[list[dict[str, Any]], int]:
        status, new_index, body = await self._call(
            "GET",
            f"/v1/health/checks/{service}",
            params=self._blocking(index, wait) or None,
            wait=wait if index else 0.0,
        )
        return (json.loads(body) if status != 404 and body.strip() else []), new_index

    async def health_state(self, state: str = "any") -> list[dict[str, Any]]:
        return await self._json("GET", f"/v1/health/state/{state}") or []

    async def health_node(self, node: str) -> list[dict[str, Any]]:
        return await self._json("GET", f"/v1/health/node/{node}") or []


@dataclass(frozen=True, slots=True)
class Access:
    """How to reach the registry: its address, the ACL token, and the CA its HTTPS certificate is signed by
    (Consul's CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY)."""

    address: str
    token: str = ""
    cacert: str = ""
    client_cert: str = ""
    client_key: str = ""

    @staticmethod
    def from_env(address: str = "", token: str = "") -> Access:
        env = os.environ
        return Access(
            address or env.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
            token or env.get("CONSUL_HTTP_TOKEN", ""),
            env.get("CONSUL_CACERT", ""),
            env.get("CONSUL_CLIENT_CERT", ""),
            env.get("CONSUL_CLIENT_KEY", ""),
        )

    def ssl_context(self) -> ssl_module.SSLContext | None:
        if not self.cacert:
            return None
        ctx = ssl_module.create_default_context(cafile=self.cacert)
        if self.client_cert and self.client_key:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx

    def client(self, session: aiohttp.ClientSession, **kw: Any) -> RegistryClient:
        return RegistryClient(self.address, session, token=self.token, ssl=self.ssl_context(), **kw)


async def with_registry(address: str | Access, call: Callable[[RegistryClient], Awaitable[T]]) -> T:
    """One call on a short-lived client (the CLI's road in)."""
    access = address if isinstance(address, Access) else Access.from_env(address)
    async with aiohttp.ClientSession() as session:
        return await call(access.client(session))
