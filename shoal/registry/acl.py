"""Consul's ACL system, the part shoal serves, as pure data and decisions.

Tokens carry policies; a policy is rule text in the forms Consul's tooling writes (HCL `key_prefix "x" {
policy = "write" }`, `operator = "read"`, or the same as JSON). A token's policies merge into one
`Authz`: per resource, exact rules and prefix rules, and when two policies name the same thing the
stronger wins, deny strongest of all (Consul's policy merger). A lookup takes the exact rule for a name
if there is one, else the longest matching prefix, else the default policy (`allowed`). Every decision
is a `Decision` whose reason is data, and whose message is Consul's "Permission denied: ..." line.

The HCL is parsed by a small hand parser for exactly this subset (blocks with one label, attributes,
strings, lists, comments): no dependency, and no regex at all over user text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal import keys
from shoal.errors import BadRequest

READ, LIST, WRITE, DENY = "read", "list", "write", "deny"
POLICIES = (READ, LIST, WRITE, DENY)
# named resources (`key "x"`, `key_prefix "x"`) and the single-valued ones (`operator = "read"`)
NAMED = ("key", "node", "service", "session", "agent", "event", "query")
SCALAR = ("acl", "operator", "keyring", "mesh", "peering")
# Consul's policy merger: deny beats everything, then write, list, read
_STRENGTH = {DENY: 4, WRITE: 3, LIST: 2, READ: 1}
_GRANTS = {READ: (READ, LIST, WRITE), LIST: (LIST, WRITE), WRITE: (WRITE,)}

ANONYMOUS_ID = "00000000-0000-0000-0000-000000000002"
MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
DISCOVERY_POLICY_ID = "00000000-0000-0000-0000-0000000000d1"
MANAGEMENT_RULES = """acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
session_prefix "" { policy = "write" }
"""
# what the anonymous token (a request without a token) may do: discovery, nothing else
DISCOVERY_RULES = """service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
"""
MAX_RULES_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class Rule:
    resource: str  # one of NAMED or SCALAR
    name: str = ""  # the key, node, service... name or prefix ("" for a scalar)
    prefix: bool = False
    policy: str = READ

    def spelled(self) -> str:
        if self.resource in SCALAR:
            return f'{self.resource} = "{self.policy}"'
        kind = f"{self.resource}_prefix" if self.prefix else self.resource
        return f"{kind} {json.dumps(self.name)} {{ policy = {json.dumps(self.policy)} }}"


@dataclass(frozen=True, slots=True)
class PolicyLink:
    id: str
    name: str

    def to_consul(self) -> dict[str, str]:
        return {"ID": self.id, "Name": self.name}


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    name: str
    rules: str
    description: str = ""
    create_index: int = 0
    modify_index: int = 0

    def hash(self) -> str:
        return base64.b64encode(hashlib.sha256(f"{self.name}\0{self.rules}".encode()).digest()).decode()

    def to_consul(self, stub: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"ID": self.id, "Name": self.name, "Description": self.description}
        if not stub:
            out["Rules"] = self.rules
        out.update(
            Datacenters=None, Hash=self.hash(), CreateIndex=self.create_index, ModifyIndex=self.modify_index
        )
        return out

    def record(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name, "Rules": self.rules, "Description": self.description}

    @staticmethod
    def from_record(d: Mapping[str, Any], create_index: int = 0, modify_index: int = 0) -> Policy:
        return Policy(d["ID"], d["Name"], d["Rules"], d.get("Description", ""), create_index, modify_index)


@dataclass(frozen=True, slots=True)
class Token:
    accessor_id: str
    secret_id: str
    description: str = ""
    policies: tuple[PolicyLink, ...] = ()
    node_identities: tuple[str, ...] = ()  # node names: each grants node_policy(name)
    service_identities: tuple[str, ...] = ()
    local: bool = False
    create_time: str = ""
    create_index: int = 0
    modify_index: int = 0
    rules: str = ""  # inline rules of a derived token (never stored)

    def __repr__(self) -> str:  # a secret never reaches a log line, even through a repr
        return f"Token(accessor_id={self.accessor_id!r}, description={self.description!r})"

    def hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.description, *(p.id for p in self.policies), *self.node_identities):
            h.update(part.encode() + b"\0")
        return base64.b64encode(h.digest()).decode()

    def to_consul(self, secret: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"AccessorID": self.accessor_id}
        if secret:
            out["SecretID"] = self.secret_id
        out.update(
            Description=self.description,
            Policies=[p.to_consul() for p in self.policies],
            Local=self.local,
            CreateTime=self.create_time,
            Hash=self.hash(),
            CreateIndex=self.create_index,
            ModifyIndex=self.modify_index,
        )
        if self.node_identities:
            out["NodeIdentities"] = [{"NodeName": n, "Datacenter": ""} for n in self.node_identities]
        if self.service_identities:
            out["ServiceIdentities"] = [{"ServiceName": n} for n in self.service_identities]
        return out

    def record(self) -> dict[str, Any]:
        return {
            "AccessorID": self.accessor_id,
            "SecretID": self.secret_id,
            "Description": self.description,
            "Policies": [p.to_consul() for p in self.policies],
            "NodeIdentities": list(self.node_identities),
            "ServiceIdentities": list(self.service_identities),
            "Local": self.local,
            "CreateTime": self.create_time,
        }

    @staticmethod
    def from_record(d: Mapping[str, Any], create_index: int = 0, modify_index: int = 0) -> Token:
        return Token(
            d["AccessorID"],
            d["SecretID"],
            d.get("Description", ""),
            tuple(PolicyLink(p["ID"], p.get("Name", "")) for p in d.get("Policies", ())),
            tuple(d.get("NodeIdentities", ())),
            tuple(d.get("ServiceIdentities", ())),
            bool(d.get("Local", False)),
            d.get("CreateTime", ""),
            create_index,
            modify_index,
        )


@dataclass(frozen=True, slots=True)
class Authz:
    """A token's merged rules: what `allowed` decides on. `management` may do everything."""

    accessor: str
    default: str = DENY  # the default policy when no rule matches: allow or deny
    management: bool = False
    exact: Mapping[tuple[str, str], str] = field(default_factory=dict)
    prefixes: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # longest first
    scalars: Mapping[str, str] = field(default_factory=dict)

    def reads_all(self, resource: str) -> bool:
        """Whether every name of `resource` is readable (so a listing needs no filtering)."""
        if self.management:
            return True
        rules = self.prefixes.get(resource, ())
        top = next((p for n, p in rules if n == ""), None)
        base = top in _GRANTS[READ] if top is not None else self.default == "allow"
        if not base:
            return False
        return all(p != DENY for n, p in rules) and all(
            p != DENY for (r, _), p in self.exact.items() if r == resource
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    resource: str
    name: str
    access: str
    reason: str  # which rule decided, or that the default policy did
    accessor: str = ""

    def message(self) -> str:
        """Consul's PermissionDeniedError text."""
        who = (
            "anonymous token" if self.accessor == ANONYMOUS_ID else f"token with AccessorID '{self.accessor}'"
        )
        on = f" on {json.dumps(self.name)}" if self.resource in NAMED else ""
        tail = (
            ". The anonymous token is used implicitly when a request does not specify a token."
            if self.accessor == ANONYMOUS_ID
            else ""
        )
        return f"Permission denied: {who} lacks permission '{self.resource}:{self.access}'{on}{tail}"


# --- decisions ---------------------------------------------------------------------------------------


def _lookup(authz: Authz, resource: str, name: str) -> tuple[str | None, str]:
    exact = authz.exact.get((resource, name))
    if exact is not None:
        return exact, f"{resource} {json.dumps(name)} is {exact}"
    for p, pol in authz.prefixes.get(resource, ()):
        if name.startswith(p):
            return pol, f"{resource}_prefix {json.dumps(p)} is {pol}"
    return None, ""


def allowed(authz: Authz, resource: str, name: str, access: str, *, tree: bool = False) -> Decision:
    """May `authz` have `access` (read, list or write) to `name` of `resource`? With `tree`, to every
    name under the prefix `name` (Consul's KeyWritePrefix, for a recursive delete): the rule that covers
    the prefix must grant it and no rule under the prefix may take it away."""
    if authz.management:
        return Decision(True, resource, name, access, "management token", authz.accessor)
    if resource in SCALAR:
        pol = authz.scalars.get(resource)
        reason = f"{resource} is {pol}" if pol else ""
    else:
        pol, reason = _lookup(authz, resource, name)
    if pol is None:
        # Consul's default-allow authorizer still refuses ACL management (only management tokens may)
        ok = authz.default == "allow" and resource != "acl"
        return Decision(
            ok, resource, name, access, f"no rule matches; default policy {authz.default}", authz.accessor
        )
    ok = pol in _GRANTS.get(access, ())
    if ok and tree:
        under = [
            (f"{resource}_prefix {json.dumps(p)} is {v}", v)
            for p, v in authz.prefixes.get(resource, ())
            if p.startswith(name) and p != name
        ] + [
            (f"{resource} {json.dumps(n)} is {v}", v)
            for (r, n), v in authz.exact.items()
            if r == resource and n.startswith(name)
        ]
        for why, v in under:
            if v not in _GRANTS.get(access, ()):
                return Decision(False, resource, name, access, why, authz.accessor)
    return Decision(ok, resource, name, access, reason, authz.accessor)


def compile_authz(
    accessor: str, rules: Iterable[Rule], default: str = DENY, management: bool = False
) -> Authz:
    """Merge rules (from all of a token's policies): the strongest policy per rule wins, deny above all."""
    exact: dict[tuple[str, str], str] = {}
    pre: dict[tuple[str, str], str] = {}
    scalars: dict[str, str] = {}

    def merge(d: dict[Any, str], k: Any, v: str) -> None:
        if k not in d or _STRENGTH[v] > _STRENGTH[d[k]]:
            d[k] = v

    for r in rules:
        if r.resource in SCALAR:
            merge(scalars, r.resource, r.policy)
        elif r.prefix:
            merge(pre, (r.resource, r.name), r.policy)
        else:
            merge(exact, (r.resource, r.name), r.policy)
    prefixes: dict[str, list[tuple[str, str]]] = {}
    for (res, name), pol in pre.items():
        prefixes.setdefault(res, []).append((name, pol))
    ordered = {res: tuple(sorted(v, key=lambda x: -len(x[0]))) for res, v in prefixes.items()}
    return Authz(accessor, default, management, exact, ordered, scalars)


def node_policy(node: str) -> str:
    """The rules of the token an agent gets at join: its own node's keys and mount records, its node
    (and so the services, checks and sessions on it), and the reads discovery and convergence need."""
    n = json.dumps(node)
    return (
        f'key_prefix {json.dumps(keys.ROOT)} {{ policy = "read" }}\n'
        f'key_prefix {json.dumps(keys.node_prefix(node))} {{ policy = "write" }}\n'
        f'key_prefix {json.dumps(keys.node_mounts(node))} {{ policy = "write" }}\n'
        f'node {n} {{ policy = "write" }}\n'
        f'session {n} {{ policy = "write" }}\n'
        'node_prefix "" { policy = "read" }\n'
        'service_prefix "" { policy = "read" }\n'
    )


# What a node's agent may do beyond its node identity: create its claim's session on the registry's own node
# (as clients of one Consul agent do). Its dataset records it writes through the manager, with its node
# certificate (shoal.manager.node_records), so no node token can write, or delete, any dataset record.
DERIVED_NODE = "shoal-node."


def node_data_policy() -> str:
    return 'session_prefix "" { policy = "write" }\n'


def _node_mac(key: str, node: str) -> str:
    return hmac.new(key.encode(), b"shoal node token\0" + node.encode(), hashlib.sha256).hexdigest()[:48]


def derived_node_token(key: str, node: str) -> str:
    """A node's agent token, derived from the management secret: the registry checks it without storing
    it, so it outlives a registry that lost its state (a wiped or new store) and the agent is never locked
    out of re-publishing what the registry lost."""
    return f"{DERIVED_NODE}{_node_mac(key, node)}.{node}"


def resolve_derived(key: str, secret: str) -> Token | None:
    """The token a derived secret stands for (node identity plus node_data_policy), or None."""
    if not key or not secret.startswith(DERIVED_NODE):
        return None
    mac, _, node = secret.removeprefix(DERIVED_NODE).partition(".")
    if not node or not hmac.compare_digest(mac.encode(), _node_mac(key, node).encode()):
        return None
    accessor = str(uuid.uuid5(uuid.NAMESPACE_URL, f"shoal-node-token:{node}"))
    return Token(accessor, secret, f"shoal agent of node {node} (derived)", node_identities=(node,),
                 rules=node_data_policy())  # fmt: skip


def service_policy(service: str) -> str:
    """Consul's service identity: write the service (and its sidecar), read what discovery needs."""
    return (
        f"service {json.dumps(service)} {{ policy = \"write\" }}\n"
        f"service {json.dumps(service + '-sidecar-proxy')} {{ policy = \"write\" }}\n"
        'service_prefix "" { policy = "read" }\n'
        'node_prefix "" { policy = "read" }\n'
    )


# --- rule text ---------------------------------------------------------------------------------------


class _Lexer:
    """Tokens of the HCL subset: strings, identifiers, numbers, punctuation; #, // and /* */ comments."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def _bad(self, what: str) -> BadRequest:
        return BadRequest(f"Failed to parse ACL rules: line {self.line}: {what}")

    def next(self) -> tuple[str, Any]:
        t, n = self.text, len(self.text)
        while self.pos < n:
            c = t[self.pos]
            if c == "\n":
                self.line += 1
                self.pos += 1
            elif c in " \t\r":
                self.pos += 1
            elif c == "#" or t.startswith("//", self.pos):
                end = t.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif t.startswith("/*", self.pos):
                end = t.find("*/", self.pos + 2)
                if end < 0:
                    raise self._bad("comment not terminated")
                self.line += t.count("\n", self.pos, end)
                self.pos = end + 2
            else:
                break
        if self.pos >= n:
            return "eof", None
        c = t[self.pos]
        if c in "{}[]=,:":
            self.pos += 1
            return c, c
        if c == '"':
            return "str", self._string()
        if c.isascii() and (c.isalnum() or c in "_-."):
            start = self.pos
            while self.pos < n and t[self.pos].isascii() and (t[self.pos].isalnum() or t[self.pos] in "_-."):
                self.pos += 1
            return "ident", t[start : self.pos]
        raise self._bad(f"unexpected character {c!r}")

    def _string(self) -> str:
        t, n = self.text, len(self.text)
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= n or t[self.pos] == "\n":
                raise self._bad("string not terminated")
            c = t[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\":
                if self.pos + 1 >= n:
                    raise self._bad("string not terminated")
                e = t[self.pos + 1]
                simple = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/"}
                if e in simple:
                    out.append(simple[e])
                    self.pos += 2
                elif e == "u":
                    hexd = t[self.pos + 2 : self.pos + 6]
                    if len(hexd) != 4 or not all(h in "0123456789abcdefABCDEF" for h in hexd):
                        raise self._bad("bad \\u escape in string")
                    out.append(chr(int(hexd, 16)))
                    self.pos += 6
                else:
                    raise self._bad(f"unknown escape \\{e} in string")
            else:
                out.append(c)
                self.pos += 1


class _Parser:
    """HCL body -> list of (name, labels, value); an object value is itself such a list, a list literal
    a tuple."""

    def __init__(self, text: str) -> None:
        self.lex = _Lexer(text)
        self.tok = self.lex.next()
        self.depth = 0

    def _take(self) -> tuple[str, Any]:
        t = self.tok
        self.tok = self.lex.next()
        return t

    def body(self, end: str) -> list[tuple[str, list[str], Any]]:
        items: list[tuple[str, list[str], Any]] = []
        while self.tok[0] != end:
            kind, name = self._take()
            if kind not in ("ident", "str"):
                raise self.lex._bad(f"expected a rule name, got {name or 'end of text'!r}")
            labels: list[str] = []
            while self.tok[0] == "str":
                labels.append(self._take()[1])
            if self.tok[0] == "=":
                self._take()
                items.append((name, labels, self.value()))
            elif self.tok[0] == "{":
                items.append((name, labels, self.value()))
            else:
                raise self.lex._bad(f"expected '=' or '{{' after {name!r}")
            if self.tok[0] == ",":
                self._take()
        return items

    def value(self) -> Any:
        kind, v = self._take()
        if kind in ("str", "ident"):
            return v
        if kind in ("{", "["):
            self.depth += 1
            if self.depth > 16:
                raise self.lex._bad("nesting too deep")
            if kind == "{":
                out: Any = self.body("}")
            else:
                values = []
                while self.tok[0] != "]":
                    values.append(self.value())
                    if self.tok[0] == ",":
                        self._take()
                    elif self.tok[0] != "]":
                        raise self.lex._bad("expected ',' or ']' in a list")
                out = tuple(values)  # a list literal; an object is a list of items
            self._take()
            self.depth -= 1
            return out
        raise self.lex._bad(f"unexpected {v or 'end of text'!r}")


def _from_json(data: Any) -> list[tuple[str, list[str], Any]]:
    """The JSON form as the HCL parser's items: {"key_prefix": {"x": {"policy": "read"}}}; HCL's JSON
    also allows a list of such objects at any level."""
    if isinstance(data, list):
        return [it for d in data for it in _from_json(d)]
    if not isinstance(data, dict):
        raise BadRequest("Failed to parse ACL rules: expected an object of rules")
    items: list[tuple[str, list[str], Any]] = []
    named = {f"{r}{s}" for r in NAMED for s in ("", "_prefix")}
    for k, v in data.items():
        if k in named and isinstance(v, dict | list):
            pairs = (
                [(n, x) for n, _, x in _from_json(v)]
                if isinstance(v, list)
                else [(n, _from_json(x) if isinstance(x, dict | list) else x) for n, x in v.items()]
            )
            items += [(k, [label], inner) for label, inner in pairs]
        else:
            items.append((k, [], _from_json(v) if isinstance(v, dict | list) else v))
    return items


def parse_rules(text: str) -> tuple[Rule, ...]:
    """Rule text (HCL or JSON) as rules; 400 naming the problem for anything else."""
    if len(text.encode()) > MAX_RULES_BYTES:
        raise BadRequest(f"Failed to parse ACL rules: longer than {MAX_RULES_BYTES} bytes")
    if text.lstrip().startswith("{"):
        try:
            items = _from_json(json.loads(text))
        except (ValueError, RecursionError) as e:
            raise BadRequest(f"Failed to parse ACL rules: invalid JSON: {str(e)[:200]}") from None
    else:
        p = _Parser(text)
        items = p.body("eof")
    rules: list[Rule] = []
    for name, labels, value in items:
        res, prefix = (name[: -len("_prefix")], True) if name.endswith("_prefix") else (name, False)
        if name in SCALAR:
            if labels or not isinstance(value, str):
                raise BadRequest(f'Failed to parse ACL rules: {name} takes a policy: {name} = "read"')
            if value not in (READ, WRITE, DENY):
                raise BadRequest(
                    f"Failed to parse ACL rules: Invalid {name} policy: {json.dumps(value)[:80]}"
                )
            rules.append(Rule(name, "", False, value))
        elif res in NAMED:
            if len(labels) != 1 or not isinstance(value, list):
                raise BadRequest(
                    f"Failed to parse ACL rules: {name} needs one name and a block: "
                    f'{name} "NAME" {{ policy = "read" }}'
                )
            attrs = {k: v for k, _, v in value}
            pol = attrs.get("policy")
            valid = POLICIES if res == "key" else (READ, WRITE, DENY)
            if pol not in valid:
                raise BadRequest(
                    f"Failed to parse ACL rules: Invalid {name} policy: {json.dumps(pol)[:80]} "
                    f"(one of {', '.join(valid)})"
                )
            rules.append(Rule(res, labels[0], prefix, pol))
        else:
            raise BadRequest(
                f"Failed to parse ACL rules: unknown rule {name[:64]!r} (shoal knows "
                f"{', '.join(n + s for n in NAMED for s in ('', '_prefix'))}, {', '.join(SCALAR)})"
            )
    return tuple(rules)
