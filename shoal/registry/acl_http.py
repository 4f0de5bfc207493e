"""Consul's ACLs on the registry's HTTP API: tokens resolved, every route checked, listings filtered,
and the `/v1/acl/*` endpoints that Consul's tooling uses to bootstrap and manage tokens and policies.

It hooks onto the app `http.make_app` returns (`install`): one middleware, inside the app's error
middleware so every refusal is answered in Consul's form, and the ACL routes. The decisions are
`acl.allowed`; this module only says which resource each route needs (`_GUARDS`) and drops what a
token may not read from answers (setting `X-Consul-Results-Filtered-By-ACLs`, as Consul does).

ACL state lives in the registry's own KV under `shoal/acl/` (so it is as durable as the store and
shared by every manager over etcd), written only through `/v1/acl/*`: with ACLs on, no `/v1/kv` or
`/v1/txn` request sees or changes that prefix, whatever its token. Each manager keeps the state in
memory and reloads it when the prefix changes (a blocking wait on the store), so a request resolves
its token without a store read. Secrets are found by their SHA-256 and compared in constant time, and
never written to a log line or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from shoal import keys
from shoal.errors import BadRequest, NotFound, PermissionDenied, ShoalError
from shoal.logs import kv
from shoal.registry import acl, decode, txn
from shoal.registry import http as h
from shoal.registry.acl import ANONYMOUS_ID, DISCOVERY_POLICY_ID, MANAGEMENT_POLICY_ID, Authz, Policy, Token
from shoal.registry.core import Registry
from shoal.registry.model import KV

log = logging.getLogger("shoal.registry.acl")

MAX_SECRET = 256
_POLICY_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


@dataclass(frozen=True, slots=True)
class AclConfig:
    """`shoal registry --acl`: on, the default policy, and an initial management token (Consul's
    acl.tokens.initial_management) — never shown in a repr."""

    enabled: bool = False
    default_policy: str = acl.DENY
    initial_management: str = field(default="", repr=False)


BUILTIN = {
    MANAGEMENT_POLICY_ID: Policy(
        MANAGEMENT_POLICY_ID,
        "global-management",
        acl.MANAGEMENT_RULES,
        "Builtin Policy that grants unlimited access",
    ),
    DISCOVERY_POLICY_ID: Policy(
        DISCOVERY_POLICY_ID,
        "anonymous-discovery",
        acl.DISCOVERY_RULES,
        "Builtin Policy: read services and nodes (what DNS-style discovery needs), nothing else",
    ),
}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _set(key: str, value: dict[str, Any] | str) -> txn.KVOp:
    data = value if isinstance(value, str) else json.dumps(value)
    return txn.KVOp("set", key, data.encode())


class AclState:
    """Tokens and policies, as stored under shoal/acl/ and cached here; the writes go through the
    registry's KV transactions, so two managers never both bootstrap or reuse a secret or a name."""

    def __init__(self, registry: Registry, config: AclConfig) -> None:
        self.registry = registry
        self.config = config
        self.tokens: dict[str, Token] = {}
        self.by_secret: dict[str, Token] = {}
        self.policies: dict[str, Policy] = dict(BUILTIN)
        self.names: dict[str, str] = {p.name: p.id for p in BUILTIN.values()}
        self._authz: dict[str, Authz] = {}
        self.index = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.load()
        if self.config.initial_management:
            await self._initial_management(self.config.initial_management)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def load(self) -> None:
        index = await self.registry.index()
        tokens: dict[str, Token] = {}
        policies: dict[str, Policy] = dict(BUILTIN)
        for e in await self.registry.kv_range(keys.ACL):
            try:
                if e.key.startswith(keys.ACL_TOKENS):
                    t = Token.from_record(json.loads(e.value), e.create_index, e.modify_index)
                    tokens[t.accessor_id] = t
                elif e.key.startswith(keys.ACL_POLICIES):
                    p = Policy.from_record(json.loads(e.value), e.create_index, e.modify_index)
                    policies[p.id] = p
            except (ValueError, KeyError, TypeError):
                kv(log, "acl record unreadable; skipped", logging.ERROR, key=e.key)
        self.tokens, self.policies = tokens, policies
        self.by_secret = {_digest(t.secret_id): t for t in tokens.values()}
        self.names = {p.name: p.id for p in policies.values()}
        self._authz = {}
        self.index = max(self.index, index)

    async def _watch(self) -> None:
        """Reload when anything under shoal/acl/ changes (a token made or deleted on another manager)."""
        while True:
            try:
                index = await self.registry.wait([KV + keys.ACL], self.index, 300.0)
                if index > self.index:
                    await self.load()
                    self.index = max(self.index, index)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store is away: try again, keep serving the cached state
                kv(log, "acl watch failed; retrying", logging.WARNING, error=str(e), retry_in=1)
                await asyncio.sleep(1.0)

    # --- resolution ----------------------------------------------------------------------------------

    def anonymous(self) -> Token:
        t = self.tokens.get(ANONYMOUS_ID)
        if t is not None:
            return t
        links = (
            (acl.PolicyLink(DISCOVERY_POLICY_ID, "anonymous-discovery"),)
            if self.config.default_policy == acl.DENY
            else ()
        )
        return Token(ANONYMOUS_ID, "anonymous", "Anonymous Token", links)

    async def resolve(self, secret: str) -> Token | None:
        """The token with this secret, or None. A secret made on another manager a moment ago, which the
        watch has not brought yet, is found in the store, and the whole ACL state is read again with it:
        the policies it links were made there a moment before it, and a token resolved without them would
        be refused what they grant."""
        if not secret or len(secret) > MAX_SECRET:
            return None
        if secret == "anonymous":
            return self.anonymous()
        derived = acl.resolve_derived(self.config.initial_management, secret)
        if derived is not None:
            return derived
        d = _digest(secret)
        t = self.by_secret.get(d)
        if t is None:
            if await self.registry.kv_get(keys.ACL_SECRETS + d) is None:
                return None
            await self.load()
            t = self.by_secret.get(d)
            if t is None:  # deleted meanwhile
                return None
        if hmac.compare_digest(
            t.secret_id.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
        ):
            return t
        return None

    def authz(self, token: Token) -> Authz:
        a = self._authz.get(token.accessor_id)
        if a is not None and a.accessor == token.accessor_id:
            return a
        management = any(p.id == MANAGEMENT_POLICY_ID for p in token.policies)
        rules: list[acl.Rule] = []
        if not management:
            for link in token.policies:
                p = self.policies.get(link.id)
                if p is not None:  # a deleted policy's link just grants nothing
                    rules += acl.parse_rules(p.rules)
            for n in token.node_identities:
                rules += acl.parse_rules(acl.node_policy(n))
            for s in token.service_identities:
                rules += acl.parse_rules(acl.service_policy(s))
            if token.rules:
                rules += acl.parse_rules(token.rules)
        default = "allow" if self.config.default_policy == "allow" else acl.DENY
        a = acl.compile_authz(token.accessor_id, rules, default, management)
        if len(self._authz) < 10_000:
            self._authz[token.accessor_id] = a
        return a

    # --- writes --------------------------------------------------------------------------------------

    async def _txn(self, ops: list[txn.KVOp]) -> list[tuple[int, str]] | None:
        applied, reply = await self.registry.kv_txn(ops)
        await self.load()
        if applied:
            return None
        return [(e["OpIndex"], e["What"]) for e in reply.get("Errors") or []]

    def _links(self, body: decode.Obj) -> tuple[acl.PolicyLink, ...]:
        links: list[acl.PolicyLink] = []
        for o in body.objs("policies"):
            pid, name = o.str("id"), o.str("name")
            p = self.policies.get(pid) if pid else self.policies.get(self.names.get(name, ""))
            if p is None:
                if pid:
                    raise BadRequest(f"No such ACL policy with ID {json.dumps(pid[:64])}")
                raise BadRequest(f"No such ACL policy with name {json.dumps(name[:128])}")
            if all(x.id != p.id for x in links):
                links.append(acl.PolicyLink(p.id, p.name))
        return tuple(links)

    def _token_fields(self, body: decode.Obj) -> dict[str, Any]:
        for unsupported in ("roles", "templatedpolicies", "expirationtime", "expirationttl", "authmethod"):
            v = body.raw(unsupported)
            if v not in (None, "", [], 0):
                raise BadRequest(
                    f"Invalid Token: {unsupported} is not supported by shoal's registry; "
                    "use Policies, NodeIdentities or ServiceIdentities"
                )
        nodes = tuple(o.str("nodename") for o in body.objs("nodeidentities"))
        services = tuple(o.str("servicename") for o in body.objs("serviceidentities"))
        if any(not n for n in nodes) or any(not s for s in services):
            raise BadRequest(
                "Invalid Token: a NodeIdentity needs a NodeName and a ServiceIdentity a ServiceName"
            )
        return {
            "description": body.str("description"),
            "policies": self._links(body),
            "node_identities": nodes,
            "service_identities": services,
            "local": body.bool("local"),
        }

    async def _create(self, token: Token, extra: tuple[txn.KVOp, ...] = ()) -> Token:
        ops = [
            *extra,
            txn.KVOp("check-not-exists", keys.ACL_TOKENS + token.accessor_id),
            txn.KVOp("check-not-exists", keys.ACL_SECRETS + _digest(token.secret_id)),
            _set(keys.ACL_TOKENS + token.accessor_id, token.record()),
            _set(keys.ACL_SECRETS + _digest(token.secret_id), token.accessor_id),
        ]
        errs = await self._txn(ops)
        if errs:
            i = errs[0][0] - len(extra)
            if i < 0:
                e = await self.registry.kv_get(keys.ACL_BOOTSTRAP)
                raise PermissionDenied(
                    "Permission denied: ACL bootstrap no longer allowed "
                    f"(reset index: {e.modify_index if e else 0})"
                )
            what = "AccessorID" if i == 0 else "SecretID"
            raise BadRequest(f"Invalid Token: {what} is already in use")
        return self.tokens.get(token.accessor_id, token)

    async def bootstrap(self, secret: str = "") -> Token:
        token = Token(
            str(uuid.uuid4()),
            secret or str(uuid.uuid4()),
            "Bootstrap Token (Global Management)",
            (acl.PolicyLink(MANAGEMENT_POLICY_ID, "global-management"),),
            create_time=_now(),
        )
        claim = (
            txn.KVOp("check-not-exists", keys.ACL_BOOTSTRAP),
            _set(keys.ACL_BOOTSTRAP, {"AccessorID": token.accessor_id}),
        )
        return await self._create(token, claim)

    async def _initial_management(self, secret: str) -> None:
        if await self.resolve(secret) is not None:
            return
        token = Token(
            str(uuid.uuid4()),
            secret,
            "Initial Management Token",
            (acl.PolicyLink(MANAGEMENT_POLICY_ID, "global-management"),),
            create_time=_now(),
        )
        await self.registry.kv_put(
            keys.ACL_BOOTSTRAP, json.dumps({"AccessorID": token.accessor_id}).encode(), cas=0
        )
        try:
            await self._create(token)
        except BadRequest:  # another manager made it at the same moment
            await self.load()
        kv(log, "acl initial management token created", accessor=token.accessor_id)

    async def token_create(self, body: decode.Obj) -> Token:
        accessor, secret = body.str("accessorid"), body.str("secretid")
        for what, v in (("AccessorID", accessor), ("SecretID", secret)):
            if v and not _UUID.fullmatch(v):
                raise BadRequest(f"Invalid Token: {what} must be a UUID")
        if accessor == ANONYMOUS_ID or secret == "anonymous":
            raise BadRequest("Invalid Token: AccessorID is already in use")
        token = Token(
            accessor or str(uuid.uuid4()),
            secret or str(uuid.uuid4()),
            create_time=_now(),
            **self._token_fields(body),
        )
        return await self._create(token)

    async def token_update(self, accessor: str, body: decode.Obj) -> Token:
        given = body.str("accessorid")
        if given and given != accessor:
            raise BadRequest("Token Accessor ID in URL and payload do not match")
        old = self.tokens.get(accessor)
        if old is None and accessor == ANONYMOUS_ID:
            old = self.anonymous()
            stored = None
        elif old is None:
            raise BadRequest(f"Cannot find token {json.dumps(accessor[:64])}")
        else:
            stored = old
        secret = body.str("secretid")
        if secret and not hmac.compare_digest(secret.encode(), old.secret_id.encode()):
            raise BadRequest("Changing a token's SecretID is not permitted")
        new = replace(old, **self._token_fields(body))
        if stored is None:
            ops = [
                txn.KVOp("check-not-exists", keys.ACL_TOKENS + accessor),
                _set(keys.ACL_TOKENS + accessor, new.record()),
                _set(keys.ACL_SECRETS + _digest(new.secret_id), accessor),
            ]
        else:
            ops = [
                txn.KVOp("check-index", keys.ACL_TOKENS + accessor, index=stored.modify_index),
                _set(keys.ACL_TOKENS + accessor, new.record()),
            ]
        if await self._txn(ops):
            raise BadRequest(
                f"Token {json.dumps(accessor[:64])} was changed meanwhile; read it and try again"
            )
        return self.tokens[accessor]

    async def token_delete(self, accessor: str, own: Token) -> None:
        if accessor == ANONYMOUS_ID:
            raise BadRequest("Delete operation not permitted on the anonymous token")
        if accessor == own.accessor_id:
            raise BadRequest("Deletion of the request's authorization token is not permitted")
        t = self.tokens.get(accessor)
        if t is None:
            raise NotFound("Cannot find token to delete")
        await self._txn(
            [
                txn.KVOp("delete", keys.ACL_TOKENS + accessor),
                txn.KVOp("delete", keys.ACL_SECRETS + _digest(t.secret_id)),
            ]
        )

    def _policy_fields(self, body: decode.Obj) -> tuple[str, str, str]:
        name = body.str("name")
        if not name:
            raise BadRequest("Invalid Policy: no Name is set")
        if not _POLICY_NAME.fullmatch(name):
            raise BadRequest(
                "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
            )
        rules = body.str("rules")
        if rules.lstrip().startswith('"'):
            # py-consul sends Rules through json.dumps: a rule string arrives as a JSON string literal
            with contextlib.suppress(ValueError):
                inner = json.loads(rules)
                rules = inner if isinstance(inner, str) else rules
        acl.parse_rules(rules)
        return name, rules, body.str("description")

    async def policy_create(self, body: decode.Obj) -> Policy:
        if body.str("id"):
            raise BadRequest("Cannot specify the ID when creating a new policy")
        name, rules, desc = self._policy_fields(body)
        if name in self.names:
            raise BadRequest(f"Invalid Policy: A Policy with Name {json.dumps(name)} already exists")
        p = Policy(str(uuid.uuid4()), name, rules, desc)
        errs = await self._txn(
            [
                txn.KVOp("check-not-exists", keys.ACL_POLICY_NAMES + name),
                txn.KVOp("check-not-exists", keys.ACL_POLICIES + p.id),
                _set(keys.ACL_POLICY_NAMES + name, p.id),
                _set(keys.ACL_POLICIES + p.id, p.record()),
            ]
        )
        if errs:
            raise BadRequest(f"Invalid Policy: A Policy with Name {json.dumps(name)} already exists")
        return self.policies[p.id]

    async def policy_update(self, pid: str, body: decode.Obj) -> Policy:
        given = body.str("id")
        if given and given != pid:
            raise BadRequest("Policy ID in URL and payload do not match")
        if pid in BUILTIN:
            raise BadRequest(f"Changing the builtin {BUILTIN[pid].name} policy is not permitted")
        old = self.policies.get(pid)
        if old is None:
            raise BadRequest(f"Cannot find policy {json.dumps(pid[:64])}")
        name, rules, desc = self._policy_fields(body)
        if name != old.name and name in self.names:
            raise BadRequest(f"Invalid Policy: A policy with name {json.dumps(name)} already exists")
        new = replace(old, name=name, rules=rules, description=desc)
        ops = [
            txn.KVOp("check-index", keys.ACL_POLICIES + pid, index=old.modify_index),
            _set(keys.ACL_POLICIES + pid, new.record()),
        ]
        if name != old.name:
            ops += [
                txn.KVOp("check-not-exists", keys.ACL_POLICY_NAMES + name),
                _set(keys.ACL_POLICY_NAMES + name, pid),
                txn.KVOp("delete", keys.ACL_POLICY_NAMES + old.name),
            ]
        if await self._txn(ops):
            raise BadRequest(f"Policy {json.dumps(pid[:64])} was changed meanwhile; read it and try again")
        return self.policies[pid]

    async def policy_delete(self, pid: str) -> None:
        if pid in BUILTIN:
            raise BadRequest(f"Deletion of the builtin {BUILTIN[pid].name} policy is not permitted")
        p = self.policies.get(pid)
        if p is None:
            raise NotFound("Cannot find policy to delete")
        await self._txn(
            [txn.KVOp("delete", keys.ACL_POLICIES + pid), txn.KVOp("delete", keys.ACL_POLICY_NAMES + p.name)]
        )


# --- request context ---------------------------------------------------------------------------------

STATE: web.AppKey[AclState] = web.AppKey("acl", AclState)
AUTHZ, TOKEN = "shoal.acl.authz", "shoal.acl.token"


def token_of(request: web.Request) -> str:
    """The request's token, where Consul looks: ?token=, X-Consul-Token, then Authorization: Bearer."""
    t = request.query.get("token", "")
    if t:
        return t
    t = request.headers.get("X-Consul-Token", "")
    if t:
        return t
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return ""


def _require(authz: Authz, resource: str, name: str, access: str, *, tree: bool = False) -> None:
    d = acl.allowed(authz, resource, name, access, tree=tree)
    if not d.allowed:
        raise PermissionDenied(d.message())


def _may(authz: Authz, resource: str, name: str, access: str = acl.READ) -> bool:
    return acl.allowed(authz, resource, name, access).allowed


def _reserved(key: str) -> bool:
    return key.startswith(keys.ACL)


def _refuse_reserved() -> PermissionDenied:
    return PermissionDenied(
        f"Permission denied: keys under {keys.ACL} hold ACL state; change them with /v1/acl/*"
    )


# A post-filter: the decoded JSON answer -> (the answer to send, whether anything was dropped)
Post = Callable[[Any], tuple[Any, bool]]
Guard = Callable[[web.Request, Authz], Awaitable[Post | None]]


def _keep_list(keep: Callable[[Any], bool]) -> Post:
    def post(data: Any) -> tuple[Any, bool]:
        if not isinstance(data, list):
            return data, False
        out = [x for x in data if keep(x)]
        return out, len(out) != len(data)

    return post


def _keep_dict(keep: Callable[[str, Any], bool]) -> Post:
    def post(data: Any) -> tuple[Any, bool]:
        if not isinstance(data, dict):
            return data, False
        out = {k: v for k, v in data.items() if keep(k, v)}
        return out, len(out) != len(data)

    return post


def _check_visible(a: Authz, c: Any) -> bool:
    if not isinstance(c, dict):
        return False
    svc = c.get("ServiceName") or ""
    return _may(a, "node", c.get("Node") or "") and (not svc or _may(a, "service", svc))


async def _open(request: web.Request, a: Authz) -> None:
    return None


async def _manage(request: web.Request, a: Authz) -> None:
    """A route no rule names: only a management token may use it (default deny, failing closed)."""
    if not a.management:
        raise PermissionDenied(
            f"Permission denied: {request.method} {request.path[:200]} needs a management token"
        )


async def _agent_self(request: web.Request, a: Authz) -> None:
    _require(a, "agent", request.app[h.REGISTRY].config.node, acl.READ)


async def _agent_members(request: web.Request, a: Authz) -> Post | None:
    return (
        None
        if a.reads_all("node")
        else _keep_list(lambda m: isinstance(m, dict) and _may(a, "node", m.get("Name", "")))
    )


async def _kv_get(request: web.Request, a: Authz) -> Post | None:
    key = request.match_info["key"]
    if "keys" in request.query or "recurse" in request.query:
        if not a.reads_all("key") or keys.ACL.startswith(key) or _reserved(key):
            return await _kv_list_filter(request, a, key)
        return None
    if _reserved(key):
        raise NotFound("")  # answered as a missing key (see _enforce)
    _require(a, "key", key, acl.READ)
    return None


async def _kv_list_filter(request: web.Request, a: Authz, prefix: str) -> Post:
    """?recurse drops entries the token may not read and everything under shoal/acl/; ?keys does the
    same, and a key cut at the separator that only covers shoal/acl/ keys is dropped too."""
    sep = request.query.get("separator", request.query.get("seperator", ""))
    covers: dict[str, bool] = {}
    reg = request.app[h.REGISTRY]
    if "keys" in request.query and sep and keys.ACL.startswith(prefix):
        for e in await reg.kv_range(prefix):
            if _reserved(e.key):
                continue
            cut = e.key.find(sep, len(prefix))
            covers[e.key[: cut + len(sep)] if cut >= 0 else e.key] = True

    def keep_key(k: Any) -> bool:
        if not isinstance(k, str) or _reserved(k):
            return False
        if sep and k.endswith(sep) and keys.ACL.startswith(k) and not covers.get(k):
            return False
        return _may(a, "key", k)

    def keep_entry(e: Any) -> bool:
        return isinstance(e, dict) and keep_key(e.get("Key"))

    return _keep_list(keep_key if "keys" in request.query else keep_entry)


async def _kv_put(request: web.Request, a: Authz) -> None:
    key = request.match_info["key"]
    if _reserved(key):
        raise _refuse_reserved()
    _require(a, "key", key, acl.WRITE)


async def _kv_delete(request: web.Request, a: Authz) -> None:
    key = request.match_info["key"]
    recurse = "recurse" in request.query
    if _reserved(key) or (recurse and keys.ACL.startswith(key)):
        raise _refuse_reserved()
    _require(a, "key", key, acl.WRITE, tree=recurse)


async def _txn(request: web.Request, a: Authz) -> Post | None:
    """Consul's txn pre-check: every operation the token may not do is an error (409, nothing
    written); reads are filtered on the way out."""
    try:
        ops = txn.parse(await request.read())
    except ShoalError:
        return None  # the handler answers the same error
    errors: list[dict[str, Any]] = []
    for i, op in enumerate(ops):
        if _reserved(op.key) or (op.verb == "delete-tree" and keys.ACL.startswith(op.key)):
            errors.append({"OpIndex": i, "What": "Permission denied"})  # shoal/acl/ is /v1/acl/*'s alone
            continue
        if op.verb in ("get", "get-tree", "get-or-empty"):
            continue  # filtered on the way out, as Consul does
        access = acl.READ if op.verb.startswith("check-") else acl.WRITE
        if not acl.allowed(a, "key", op.key, access, tree=op.verb == "delete-tree").allowed:
            errors.append({"OpIndex": i, "What": "Permission denied"})
    if errors:
        raise _TxnRefused(errors)

    def post(data: Any) -> tuple[Any, bool]:
        if not isinstance(data, dict) or not isinstance(data.get("Results"), list):
            return data, False
        res = data["Results"]
        out = [
            r
            for r in res
            if not (isinstance(r, dict) and isinstance(r.get("KV"), dict))
            or (not _reserved(r["KV"].get("Key", "")) and _may(a, "key", r["KV"].get("Key", "")))
        ]
        return {**data, "Results": out}, len(out) != len(res)

    return post


class _TxnRefused(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


async def _body(request: web.Request) -> decode.Obj | None:
    try:
        raw = await request.read()
        data = decode.parse_json(raw) if raw.strip() else {}
    except ShoalError:
        return None  # the handler answers it
    return decode.Obj(data) if isinstance(data, dict) else None


async def _session_create(request: web.Request, a: Authz) -> None:
    body = await _body(request)
    node = request.app[h.REGISTRY].config.node
    if body is not None and isinstance(body.raw("node"), str) and body.raw("node"):
        node = body.raw("node")
    _require(a, "session", node, acl.WRITE)


async def _session_by_id(request: web.Request, a: Authz) -> None:
    s = await request.app[h.REGISTRY].session(request.match_info["id"])
    if s is not None:
        _require(a, "session", s.node, acl.WRITE)


async def _session_read(request: web.Request, a: Authz) -> Post | None:
    if a.reads_all("session"):
        return None
    return _keep_list(lambda s: isinstance(s, dict) and _may(a, "session", s.get("Node", "")))


async def _agent_services(request: web.Request, a: Authz) -> Post | None:
    if a.reads_all("service"):
        return None
    return _keep_dict(lambda k, s: isinstance(s, dict) and _may(a, "service", s.get("Service", "")))


async def _agent_service(request: web.Request, a: Authz) -> None:
    reg = request.app[h.REGISTRY]
    s = await reg.service(request.match_info["id"], reg.config.node)
    if s is not None:
        _require(a, "service", s.name, acl.READ)


def _service_write(a: Authz, name: str, node: str) -> None:
    """A service on `node` may be written by a token that may write the service, or the node (so an
    agent's node token covers what it registers on its own node; Consul's deregistration rule)."""
    if _may(a, "node", node, acl.WRITE):
        return
    _require(a, "service", name, acl.WRITE)


async def _agent_service_register(request: web.Request, a: Authz) -> None:
    body = await _body(request)
    if body is None:
        return
    name = body.raw("name")
    _service_write(a, name if isinstance(name, str) else "", request.app[h.REGISTRY].config.node)


async def _agent_service_deregister(request: web.Request, a: Authz) -> None:
    reg = request.app[h.REGISTRY]
    s = await reg.service(request.match_info["id"], reg.config.node)
    if s is not None:
        _service_write(a, s.name, reg.config.node)


async def _agent_checks(request: web.Request, a: Authz) -> Post | None:
    if a.reads_all("service") and a.reads_all("node"):
        return None
    return _keep_dict(lambda k, c: _check_visible(a, c))


async def _check_owner(reg: Registry, a: Authz, node: str, service_id: str) -> None:
    if service_id:
        s = await reg.service(service_id, node)
        if s is not None:
            _service_write(a, s.name, node)
            return
    _require(a, "node", node, acl.WRITE)


async def _agent_check_register(request: web.Request, a: Authz) -> None:
    reg = request.app[h.REGISTRY]
    body = await _body(request)
    sid = body.raw("serviceid") if body is not None else ""
    await _check_owner(reg, a, reg.config.node, sid if isinstance(sid, str) else "")


async def _agent_check_by_id(request: web.Request, a: Authz) -> None:
    reg = request.app[h.REGISTRY]
    c = await reg.check(request.match_info["id"], reg.config.node)
    if c is not None:
        await _check_owner(reg, a, reg.config.node, c.service_id)


async def _catalog_services(request: web.Request, a: Authz) -> Post | None:
    if a.reads_all("service"):
        return None
    return _keep_dict(lambda name, tags: _may(a, "service", name))


async def _catalog_service(request: web.Request, a: Authz) -> Post | None:
    name = request.match_info["name"]
    if not _may(a, "service", name):
        return lambda data: ([], bool(data))
    if a.reads_all("node"):
        return None
    return _keep_list(lambda e: isinstance(e, dict) and _may(a, "node", e.get("Node", "")))


async def _catalog_nodes(request: web.Request, a: Authz) -> Post | None:
    if a.reads_all("node"):
        return None
    return _keep_list(lambda n: isinstance(n, dict) and _may(a, "node", n.get("Node", "")))


async def _catalog_node(request: web.Request, a: Authz) -> Post | None:
    if not _may(a, "node", request.match_info["node"]):
        return lambda data: (None, data is not None)
    if a.reads_all("service"):
        return None

    def post(data: Any) -> tuple[Any, bool]:
        if not isinstance(data, dict) or not isinstance(data.get("Services"), dict):
            return data, False
        svcs = data["Services"]
        out = {
            k: s for k, s in svcs.items() if isinstance(s, dict) and _may(a, "service", s.get("Service", ""))
        }
        return {**data, "Services": out}, len(out) != len(svcs)

    return post


async def _health_service(request: web.Request, a: Authz) -> Post | None:
    name = request.match_info["name"]
    if not _may(a, "service", name):
        return lambda data: ([], bool(data))
    if a.reads_all("node"):
        return None
    return _keep_list(
        lambda e: isinstance(e, dict)
        and isinstance(e.get("Node"), dict)
        and _may(a, "node", e["Node"].get("Node", ""))
    )


async def _health_checks(request: web.Request, a: Authz) -> Post | None:
    if a.reads_all("service") and a.reads_all("node"):
        return None
    return _keep_list(lambda c: _check_visible(a, c))


async def _catalog_register(request: web.Request, a: Authz) -> None:
    body = await _body(request)
    if body is None:
        return
    reg = request.app[h.REGISTRY]
    node = body.raw("node")
    node = node if isinstance(node, str) else ""
    if not _may(a, "node", node, acl.WRITE):
        # Consul asks for node:write only when the registration changes the node itself
        address = body.raw("address")
        known = next((n for n in await reg.nodes() if n.name == node), None)
        if known is None or (address and address != known.address) or body.raw("nodemeta"):
            _require(a, "node", node, acl.WRITE)
    svc = body.obj("service") if isinstance(body.raw("service"), dict) else None
    if svc is not None:
        name = svc.raw("service")
        _service_write(a, name if isinstance(name, str) else "", node)
    checks = [body.raw("check")] if isinstance(body.raw("check"), dict) else []
    if isinstance(body.raw("checks"), list):
        checks += [c for c in body.raw("checks") if isinstance(c, dict)]
    for c in checks:
        sid = c.get("serviceid")
        if svc is not None and sid and sid == svc.raw("id"):
            continue  # the service just checked
        await _check_owner(reg, a, node, sid if isinstance(sid, str) else "")


async def _catalog_deregister(request: web.Request, a: Authz) -> None:
    body = await _body(request)
    if body is None:
        return
    reg = request.app[h.REGISTRY]
    node = body.raw("node") if isinstance(body.raw("node"), str) else ""
    if _may(a, "node", node, acl.WRITE):
        return
    sid, cid = body.raw("serviceid"), body.raw("checkid")
    if isinstance(sid, str) and sid:
        s = await reg.service(sid, node)
        _require(a, "service", s.name if s else sid, acl.WRITE)
    elif isinstance(cid, str) and cid:
        c = await reg.check(cid, node)
        await _check_owner(reg, a, node, c.service_id if c else "")
    else:
        _require(a, "node", node, acl.WRITE)


_GUARDS: dict[Callable[..., Any], Guard] = {
    # /metrics needs no token: Prometheus scrapers hold none, and it names no key, service or node (only
    # counts and latencies by endpoint class). Consul asks agent:read of its /v1/agent/metrics, which
    # also answers its JSON form and per-agent details; ours tells nothing an ACL protects.
    h.metrics: _open,
    h.root: _open,
    h.ui: _open,
    h.status_leader: _open,
    h.status_peers: _open,
    h.catalog_datacenters: _open,
    h.agent_self: _agent_self,
    h.agent_members: _agent_members,
    h.kv_get: _kv_get,
    h.kv_put: _kv_put,
    h.kv_delete: _kv_delete,
    h.txn_apply: _txn,
    h.session_create: _session_create,
    h.session_destroy: _session_by_id,
    h.session_renew: _session_by_id,
    h.session_info: _session_read,
    h.session_list: _session_read,
    h.agent_services: _agent_services,
    h.agent_service: _agent_service,
    h.agent_service_register: _agent_service_register,
    h.agent_service_deregister: _agent_service_deregister,
    h.agent_checks: _agent_checks,
    h.agent_check_register: _agent_check_register,
    h.agent_check_deregister: _agent_check_by_id,
    h.agent_check_mark: _agent_check_by_id,
    h.agent_check_update: _agent_check_by_id,
    h.catalog_services: _catalog_services,
    h.catalog_service: _catalog_service,
    h.catalog_nodes: _catalog_nodes,
    h.catalog_node: _catalog_node,
    h.catalog_register: _catalog_register,
    h.catalog_deregister: _catalog_deregister,
    h.health_service: _health_service,
    h.health_state: _health_checks,
    h.health_checks: _health_checks,
    h.health_node: _health_checks,
}


def _apply(resp: web.Response, post: Post) -> web.Response:
    if resp.status != 200 or not isinstance(resp.body, bytes) or not resp.body:
        return resp
    try:
        data = json.loads(resp.body)
    except ValueError:
        return resp
    out, dropped = post(data)
    if not dropped:
        return resp
    resp.body = json.dumps(out).encode()
    resp.headers[FILTERED] = "true"
    return resp


@web.middleware
async def _enforce(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    state = request.app[STATE]
    secret = token_of(request)
    token = await state.resolve(secret) if secret else state.anonymous()
    if token is None:
        raise PermissionDenied("ACL not found")
    authz = state.authz(token)
    request[AUTHZ], request[TOKEN] = authz, token
    route = request.match_info
    if route.http_exception is not None:  # no such route or method: aiohttp answers as before
        return await handler(request)
    guard = _GUARDS.get(route.handler) or _OWN.get(route.handler) or _manage
    try:
        post = await guard(request, authz)
    except _TxnRefused as e:
        return web.json_response({"Results": None, "Errors": e.errors}, status=409)
    except NotFound:
        if route.handler is h.kv_get:  # a key under shoal/acl/: as if it were not there
            index = await request.app[h.REGISTRY].index()
            return web.Response(status=404, headers={"X-Consul-Index": str(index)})
        raise
    resp = await handler(request)
    if post is None or not isinstance(resp, web.Response):
        return resp
    resp = _apply(resp, post)
    if route.handler is h.kv_get and resp.headers.get(FILTERED) and resp.body == b"[]":
        key = request.match_info["key"]
        if "recurse" in request.query or key:
            return web.Response(
                status=404, headers={k: v for k, v in resp.headers.items() if k.startswith("X-Consul")}
            )
    return resp


# --- /v1/acl/* ---------------------------------------------------------------------------------------


def _state(request: web.Request) -> AclState:
    return request.app[STATE]


async def _acl_body(request: web.Request, what: str) -> decode.Obj:
    raw = await request.read()
    data = decode.parse_json(raw, f"{what} decoding failed") if raw.strip() else {}
    if not isinstance(data, dict):
        raise BadRequest(f"{what} decoding failed: expected a JSON object")
    return decode.Obj(data)


def _json(data: Any, state: AclState) -> web.Response:
    return web.json_response(
        data, headers={"X-Consul-Index": str(state.index), "X-Consul-Knownleader": "true"}
    )


async def acl_bootstrap(request: web.Request) -> web.Response:
    body = await _acl_body(request, "Request")
    secret = body.str("bootstrapsecret")
    if secret and not _UUID.fullmatch(secret):
        raise BadRequest("Request decoding failed: BootstrapSecret must be a UUID")
    t = await _state(request).bootstrap(secret)
    return web.json_response({"ID": t.secret_id, **t.to_consul()})


async def token_create(request: web.Request) -> web.Response:
    return web.json_response(
        (await _state(request).token_create(await _acl_body(request, "Token"))).to_consul()
    )


def _accessor(request: web.Request) -> str:
    a = request.match_info["accessor"]
    if not a:
        raise BadRequest("Missing token AccessorID")
    return a


async def token_read(request: web.Request) -> web.Response:
    st, accessor = _state(request), _accessor(request)
    t = st.tokens.get(accessor) or (st.anonymous() if accessor == ANONYMOUS_ID else None)
    if t is None:
        raise NotFound("Requested token does not exist: ACL not found")
    return _json(t.to_consul(secret=_may(request[AUTHZ], "acl", "", acl.WRITE)), st)


async def token_update(request: web.Request) -> web.Response:
    t = await _state(request).token_update(_accessor(request), await _acl_body(request, "Token"))
    return web.json_response(t.to_consul())


async def token_delete(request: web.Request) -> web.Response:
    await _state(request).token_delete(_accessor(request), request[TOKEN])
    return web.json_response(True)


async def token_self(request: web.Request) -> web.Response:
    if not token_of(request):
        raise PermissionDenied("ACL not found")
    return _json(request[TOKEN].to_consul(), _state(request))


async def token_list(request: web.Request) -> web.Response:
    st = _state(request)
    show = _may(request[AUTHZ], "acl", "", acl.WRITE)
    out = []
    for t in sorted(st.tokens.values(), key=lambda t: t.create_index):
        d = t.to_consul(secret=show)
        d["Legacy"] = False
        out.append(d)
    if ANONYMOUS_ID not in st.tokens:
        out.append({**st.anonymous().to_consul(secret=show), "Legacy": False})
    return _json(out, st)


def _policy_id(request: web.Request) -> str:
    pid = request.match_info["id"]
    if not pid:
        raise BadRequest("Missing policy ID")
    return pid


async def policy_create(request: web.Request) -> web.Response:
    return web.json_response(
        (await _state(request).policy_create(await _acl_body(request, "Policy"))).to_consul()
    )


async def policy_read(request: web.Request) -> web.Response:
    st = _state(request)
    p = st.policies.get(_policy_id(request))
    if p is None:
        raise NotFound("Requested policy does not exist: ACL not found")
    return _json(p.to_consul(), st)


async def policy_read_by_name(request: web.Request) -> web.Response:
    st, name = _state(request), request.match_info["name"]
    if not name:
        raise BadRequest("Missing policy Name")
    p = st.policies.get(st.names.get(name, ""))
    if p is None:
        raise NotFound("Requested policy does not exist: ACL not found")
    return _json(p.to_consul(), st)


async def policy_update(request: web.Request) -> web.Response:
    p = await _state(request).policy_update(_policy_id(request), await _acl_body(request, "Policy"))
    return web.json_response(p.to_consul())


async def policy_delete(request: web.Request) -> web.Response:
    await _state(request).policy_delete(_policy_id(request))
    return web.json_response(True)


async def policy_list(request: web.Request) -> web.Response:
    st = _state(request)
    return _json([p.to_consul(stub=True) for p in sorted(st.policies.values(), key=lambda p: p.name)], st)


async def _acl_read(request: web.Request, a: Authz) -> None:
    _require(a, "acl", "", acl.READ)


async def _acl_write(request: web.Request, a: Authz) -> None:
    _require(a, "acl", "", acl.WRITE)


_OWN: dict[Callable[..., Any], Guard] = {
    acl_bootstrap: _open,
    token_self: _open,
    token_create: _acl_write,
    token_update: _acl_write,
    token_delete: _acl_write,
    policy_create: _acl_write,
    policy_update: _acl_write,
    policy_delete: _acl_write,
    token_read: _acl_read,
    token_list: _acl_read,
    policy_read: _acl_read,
    policy_read_by_name: _acl_read,
    policy_list: _acl_read,
}


def install(app: web.Application, state: AclState) -> None:
    """ACLs onto the app `http.make_app` made, before its runner starts: the enforcing middleware (after
    the app's own error middleware, so refusals are answered in Consul's form) and /v1/acl/*."""
    app[STATE] = state
    app.middlewares.append(_enforce)
    r = app.router
    r.add_put("/v1/acl/bootstrap", acl_bootstrap)
    r.add_put("/v1/acl/token", token_create)
    r.add_get("/v1/acl/tokens", token_list)
    r.add_get("/v1/acl/token/self", token_self)
    r.add_get("/v1/acl/token/{accessor}", token_read)
    r.add_put("/v1/acl/token/{accessor}", token_update)
    r.add_delete("/v1/acl/token/{accessor}", token_delete)
    r.add_put("/v1/acl/policy", policy_create)
    r.add_get("/v1/acl/policies", policy_list)
    r.add_get("/v1/acl/policy/name/{name:.*}", policy_read_by_name)
    r.add_get("/v1/acl/policy/{id}", policy_read)
    r.add_put("/v1/acl/policy/{id}", policy_update)
    r.add_delete("/v1/acl/policy/{id}", policy_delete)
