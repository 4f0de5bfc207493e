"""The one registry client: the Consul HTTP API, async (aiohttp), for everything in shoal that reads or
writes the registry — the agent, the manager's cache, the dataset records, the dashboard and the CLI.

It speaks only Consul's API, so a site that runs a real Consul can point shoal at it. KV values come
back decoded from base64 once, here (`KVPair.value`, `.json()`); blocking queries (`index=`, `wait=`)
return the new `X-Consul-Index` beside the data. Every call has a deadline: a registry that does not
answer is a RegistryUnreachable the caller can retry, never a hang.

The address may be a list (`https://a:8501,https://b:8501`: every manager's registry, over one etcd). A
call whose connection could not be made was never sent, so it goes at once to the next address, and the
client stays on the one that answered. A write that failed after it may have been sent is not sent again
anywhere (it may have been applied): the next call goes to the next address and this one raises, as with
one address. A read is safe to repeat, so it goes on to the next address whatever failed. An HTTP answer,
a 5xx included, is an answer: the client stays where it is.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from shoal.errors import BadRequest, PermissionDenied, RegistryFailed, RegistryUnreachable, ShoalError
from shoal.registry.model import SINCE_HEADER

T = TypeVar("T")
TIMEOUT = 10.0  # one call; a blocking query gets its wait on top
BLOCK_MARGIN = 15.0  # Consul adds up to wait/16 of jitter; leave room for it and a slow store
# seconds to open a connection (TCP and TLS) to one address: past it the request was never sent, and the
# next address is tried (a manager host that died whole drops packets rather than refusing)
CONNECT = 3.0


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


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_ENTRY = re.compile(
    rf"(?:(?P<scheme>[^:/]*)://)?(?P<host>\[[^\]]*\]|{_LABEL}(?:\.{_LABEL})*)(?::(?P<port>[^/]*))?(?P<rest>.*)"
)


def address_problem(entry: str, schemes: tuple[str, ...]) -> str | None:
    """Why `entry` is no HOST:PORT or SCHEME://HOST[:PORT] address, or None when it is one (pure)."""
    if not entry:
        return "is empty"
    if any(c.isspace() for c in entry):
        return "has a space in it"
    m = _ENTRY.fullmatch(entry)
    if m is None:
        return "has no host name or IP address where one belongs"
    scheme, host, port, rest = m["scheme"], m["host"], m["port"], m["rest"]
    if scheme is not None and scheme.lower() not in schemes:
        return f"names the scheme {scheme!r}; only {' or '.join(f'{s}://' for s in schemes)} is spoken here"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"has {host}, which is no IPv6 address"
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return f"has the port {port!r}; a port is a number from 1 to 65535"
    if rest not in ("", "/"):
        return f"has {rest!r} after the host and port; give no path, query or user"
    return None


def addresses(
    text: str,
    *,
    scheme: str = "http",
    schemes: tuple[str, ...] = ("http", "https"),
    what: str = "registry",
    port: int = 8500,
) -> tuple[str, ...]:
    """A comma-separated list of addresses (`HOST:PORT` or URLs, as CONSUL_HTTP_ADDR allows each) to base
    URLs, in the order given, each once; an entry without a scheme gets `scheme`. A bad entry is a
    BadRequest naming it and showing a good list (of `what`s on `port`) (pure)."""
    out: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        problem = address_problem(entry, schemes)
        if problem is not None:
            where = f" in {text!r}" if text.strip() != entry else ""
            raise BadRequest(
                f"the {what} address {entry!r}{where} {problem}: give HOST:PORT or {scheme}://HOST:PORT, "
                f"several separated by commas (e.g. {scheme}://10.0.0.1:{port},{scheme}://10.0.0.2:{port})"
            )
        given, sep, rest = entry.rstrip("/").rpartition("://")
        url = f"{given.lower() if sep else scheme}://{rest}"
        if url not in out:
            out.append(url)
    return tuple(out)


def never_sent(e: BaseException) -> bool:
    """The connection could not be made (refused, no route, a name that does not resolve, the TLS
    handshake, the connect deadline), or the request's body could not be written whole because the
    connection was closed under it (a kept-alive connection to a peer that died: aiohttp's "Can not write
    request body", caused by a reset): no server acts on half a request, so another address may take it."""
    if isinstance(e, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return True
    return (
        isinstance(e, aiohttp.ClientOSError)
        and isinstance(e.__cause__, ConnectionResetError)
        and (e.strerror or "").startswith("Can not write request body")
    )


class Rotation:
    """Which of several addresses a client uses now: the one that last answered. Calls in flight at once
    each move it only from the address they found failing, so two failures of one address move it once."""

    def __init__(self, bases: tuple[str, ...]) -> None:
        self.bases = bases
        self.at = 0

    @property
    def current(self) -> str:
        return self.bases[self.at]

    def order(self) -> list[int]:
        """Every address once, from the current one on."""
        n = len(self.bases)
        return [(self.at + k) % n for k in range(n)]

    def answered(self, started_at: int, i: int) -> None:
        if self.at == started_at:
            self.at = i

    def failed(self, i: int) -> None:
        if self.at == i:
            self.at = (i + 1) % len(self.bases)


def unreachable(what: str, failures: list[tuple[str, BaseException]]) -> RegistryUnreachable:
    """Every address tried and none answered: one error naming each, and what each said."""
    if len(failures) == 1:
        base, e = failures[0]
        return RegistryUnreachable(f"{what} at {base} unreachable: {e or type(e).__name__}")
    each = "; ".join(f"{base}: {e or type(e).__name__}" for base, e in failures)
    return RegistryUnreachable(f"none of the {len(failures)} {what} addresses answered ({each})")


async def first_answer(
    rotation: Rotation, attempt: Callable[[str], Awaitable[T]], *, read: bool, what: str = "registry"
) -> tuple[str, T]:
    """`attempt(base)` on each address from the current one on, until one answers (returns): the one
    place shoal's clients decide where a request goes next. A connection that could not be made moves on
    at once; so does any failure of a `read` (nothing was changed). A write that failed after it may have
    been sent is not sent again, here or anywhere (it may have been applied): the next call goes to the
    next address, and this one raises RegistryUnreachable, as with a single address."""
    started_at = rotation.at
    failures: list[tuple[str, BaseException]] = []
    for i in rotation.order():
        base = rotation.bases[i]
        try:
            got = await attempt(base)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            failures.append((base, e))
            if read or never_sent(e):
                continue
            rotation.failed(i)
            after = f" (the next call goes to {rotation.current})" if len(rotation.bases) > 1 else ""
            raise RegistryUnreachable(
                f"{what} at {base} failed after the request was sent ({e or type(e).__name__}); it may or "
                f"may not have been applied, so it was not sent again{after}"
            ) from e
        rotation.answered(started_at, i)
        return base, got
    raise unreachable(what, failures) from failures[-1][1]


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    index: int  # X-Consul-Index
    body: bytes
    headers: Mapping[str, str]


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
        self.bases = addresses(base)
        self._rotation = Rotation(self.bases)
        self.session = session
        self.timeout = timeout
        # Consul's header for an ACL token; never logged, never in an error message
        self._headers = {"X-Consul-Token": token} if token else {}
        self._ssl_arg: ssl_module.SSLContext | bool = ssl if ssl is not None else True

    @property
    def base(self) -> str:
        """The address in use: the one that last answered."""
        return self._rotation.current

    # --- the one request path -------------------------------------------------------------------

    @asynccontextmanager
    async def _sender(self, write: bool) -> AsyncIterator[aiohttp.ClientSession]:
        """The session a request goes out on. aiohttp sends a PUT or DELETE a second time, on its own,
        when the connection fails before the answer (RFC 9112 lets it, for idempotent methods), but a
        Consul write is often not idempotent (a session create, a CAS): writes go out on a session over the
        same connection pool that never repeats one (`_retry_connection`, aiohttp's only switch for it)."""
        if not write or self.session.closed:
            yield self.session
            return
        once = aiohttp.ClientSession(
            connector=self.session.connector, connector_owner=False, headers=self.session.headers
        )
        once._retry_connection = False
        try:
            yield once
        finally:
            await once.close()

    async def _call(self, method: str, path: str, **kw: Any) -> tuple[int, int, bytes]:
        """`_exchange`'s (status, X-Consul-Index, body)."""
        got = await self._exchange(method, path, **kw)
        return got.status, got.index, got.body

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        wait: float = 0.0,
        answers: tuple[int, ...] = (404,),
    ) -> _Answer:
        """The answer, headers and all; a status in `answers` is an answer, any other 4xx/5xx a
        ShoalError. Goes over the addresses as the module docstring says."""
        timeout = aiohttp.ClientTimeout(
            total=self.timeout + (wait + BLOCK_MARGIN if wait else 0), sock_connect=min(CONNECT, self.timeout)
        )
        read = method == "GET"

        async def attempt(base: str) -> _Answer:
            async with (
                self._sender(not read) as session,
                session.request(
                    method,
                    f"{base}{path}",
                    params=params,
                    data=data,
                    headers=self._headers,
                    ssl=self._ssl_arg,
                    timeout=timeout,
                ) as r,
            ):
                index = int(r.headers.get("X-Consul-Index", "0") or 0)
                return _Answer(r.status, index, await r.read(), r.headers.copy())

        _, got = await first_answer(self._rotation, attempt, read=read)
        status, body = got.status, got.body
        if status == 403:
            raise PermissionDenied(
                f"registry {method} {path.split('?')[0]}: permission denied "
                f"({body.decode(errors='replace').strip()}); give a token that may (CONSUL_HTTP_TOKEN)"
            )
        if status >= 400 and status not in answers:
            cls = RegistryFailed if status >= 500 else ShoalError
            raise cls(f"registry {method} {path}: {status} {body.decode(errors='replace').strip()}")
        return got

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
        entries, _, new_index = await self.list_changes(prefix, 0, index=index, wait=wait)
        return [KVPair.from_consul(e) for e in entries], new_index

    async def list_changes(
        self, prefix: str, since: int, *, index: int = 0, wait: float = 30.0
    ) -> tuple[list[dict[str, Any]], bool, int]:
        """The entries under `prefix` as Consul sends them (each Value still base64, for a reader that
        decodes only those whose ModifyIndex moved), only those written after index `since` where the
        registry can tell (shoal's ?since, views.Views.kv_changes): (entries, whole, index). `whole`
        says they are every entry under the prefix (what is not among them is gone); else they are the
        changes, and nothing was deleted. A Consul agent ignores ?since and always answers whole."""
        params = {"recurse": "", **self._blocking(index, wait)}
        if since > 0:
            params["since"] = str(since)
        got = await self._exchange("GET", f"/v1/kv/{prefix}", params=params, wait=wait if index else 0.0)
        whole = got.headers.get(SINCE_HEADER) != str(since) or since <= 0
        if got.status == 404 or not got.body.strip():
            return [], whole, got.index
        return json.loads(got.body), whole, got.index

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
        status, _, raw = await self._call("PUT", "/v1/txn", data=json.dumps(body).encode(), answers=(409,))
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
    (Consul's CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY). The address may
    be a comma-separated list (every manager's registry): the client goes to the next when one dies."""

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
