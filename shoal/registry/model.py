"""The registry's records, as Consul shapes them, and how they are kept in the Store.

Store layout (one key per record, so every change has its own index and blocking reads can wait on
exactly the prefixes they show):

    kv/<key>                  a KV entry: flags, lock index, session, value (binary header + value)
    sessions/<id>             a session (JSON), on a store lease when it has a TTL
    nodes/<node>              a node (JSON)
    services/<node>/<id>      a service instance (JSON)
    checks/<node>/<check-id>  a health check and its current status (JSON)
    held/<session>/<key>      an index of the KV keys a session locks (its behavior and lock delay,
                              JSON), so ending a session finds, releases and checks exactly those keys
                              in one transaction instead of scanning the whole KV
    by-service/<name>/<node>/<id>
                              one per service instance, under its lower-cased, escaped name: a read
                              of one service finds its instances without scanning the catalog
    index/<what>              Consul's index table: the modify index of index/service/web is the last
                              change to anything /v1/health/service/web shows; index/kv-deleted and
                              index/sessions-ended, what a missing key or session answers (indexes.py)
    tombstones/<key>          when a KV key (or, for a recursive delete, a prefix) was deleted, so a
                              prefix's index never goes back when its newest key is deleted

Every write to nodes/, services/ and checks/ carries its index/ and by-service/ writes in the same
transaction (indexes.py decides them), so an index never runs behind what it stands for.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field, fields, replace
from typing import Any

from shoal.registry.decode import duration

KV, SESSIONS, NODES, SERVICES, CHECKS = "kv/", "sessions/", "nodes/", "services/", "checks/"
# store keys outside Consul's space, written only when several registries share the store: a TTL check's
# renewal made through a follower (the leader times every TTL), and a released lock's delay (every
# registry refuses an acquire during it, not just the one that released it). Values are JSON.
TTL_TOUCH, LOCK_DELAYS = "ttl-touch/", "lockdelay/"
# shoal's one extension of the KV API (views.Views.kv_changes): GET /v1/kv/<prefix>?recurse&since=N answers
# only the entries written after index N, and says so with this header; without it the answer is whole
SINCE_HEADER = "X-Shoal-Since"
HELD = "held/"
PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
MAX_VALUE = 512 * 1024  # Consul's kv_max_value_size


# --- KV entries -------------------------------------------------------------------------------------

_HDR = struct.Struct(">QQH")


@dataclass(frozen=True, slots=True)
class KVEntry:
    key: str
    value: bytes
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0

    def encode(self) -> bytes:
        s = self.session.encode()
        return _HDR.pack(self.flags, self.lock_index, len(s)) + s + self.value

    @staticmethod
    def decode(key: str, raw: bytes, create_index: int, modify_index: int) -> KVEntry:
        flags, lock_index, n = _HDR.unpack_from(raw)
        off = _HDR.size
        return KVEntry(
            key, raw[off + n :], flags, lock_index, raw[off : off + n].decode(), create_index, modify_index
        )

    def to_consul(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if self.session:
            d["Session"] = self.session
        return d


# --- durations --------------------------------------------------------------------------------------

parse_duration = duration  # Go-style durations or nanoseconds, checked (shoal.registry.decode)


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds == int(seconds):
        s = int(seconds)
        h, rem = divmod(s, 3600)
        m, sec = divmod(rem, 60)
        return (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{sec}s"
    return f"{seconds:g}s"


# --- sessions, nodes, services, checks (JSON records) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    name: str
    node: str
    lock_delay: float
    behavior: str
    ttl: float
    node_checks: tuple[str, ...]
    lease: int = 0
    ttl_text: str = ""  # the TTL as the client wrote it: Consul answers it back unchanged
    create_index: int = 0
    modify_index: int = 0

    def to_consul(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": int(self.lock_delay * 1e9),
            "Behavior": self.behavior,
            "TTL": self.ttl_text or (format_duration(self.ttl) if self.ttl else ""),
            "NodeChecks": list(self.node_checks),
            "ServiceChecks": None,
            "Namespace": "default",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    address: str
    datacenter: str
    id: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def to_consul(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": self.tagged_addresses or {"lan": self.address, "wan": self.address},
            "Meta": self.meta,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass(frozen=True, slots=True)
class Service:
    node: str
    id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    # Consul's ServiceAddress map, {"lan_ipv4": {"Address": ..., "Port": ...}, ...}: what the client gave,
    # plus, for agent registrations with an IP address, the lan/wan defaults Consul's agent adds
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def to_agent(self, datacenter: str) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Meta": self.meta,
            "Port": self.port,
            "Address": self.address,
        }
        if self.tagged_addresses:  # Consul's api.AgentService: omitempty
            d["TaggedAddresses"] = self.tagged_addresses
        d.update(Weights=self.weights, EnableTagOverride=self.enable_tag_override, Datacenter=datacenter)
        return d

    def to_health(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
        }
        if self.tagged_addresses:
            d["TaggedAddresses"] = self.tagged_addresses
        d.update(
            Meta=self.meta,
            Port=self.port,
            Weights=self.weights,
            EnableTagOverride=self.enable_tag_override,
            CreateIndex=self.create_index,
            ModifyIndex=self.modify_index,
        )
        return d


@dataclass(frozen=True, slots=True)
class CheckDef:
    """How a check runs; empty for TTL-less checks set from outside (e.g. serfHealth)."""

    ttl: float = 0.0
    http: str = ""
    method: str = "GET"
    tcp: str = ""
    args: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 10.0
    deregister_after: float = 0.0

    @property
    def type(self) -> str:
        if self.ttl:
            return "ttl"
        if self.http:
            return "http"
        if self.tcp:
            return "tcp"
        if self.args:
            return "script"
        return ""


@dataclass(frozen=True, slots=True)
class Check:
    node: str
    id: str
    name: str
    status: str
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    notes: str = ""
    output: str = ""
    definition: CheckDef = field(default_factory=CheckDef)
    create_index: int = 0
    modify_index: int = 0

    def key(self) -> str:
        """Where the check lives in the store."""
        return f"{CHECKS}{self.node}/{self.id}"

    def to_consul(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": self.definition.type,
            "Interval": format_duration(self.definition.interval) if self.definition.interval else "",
            "Timeout": format_duration(self.definition.timeout)
            if self.definition.type in ("http", "tcp", "script")
            else "",
            "ExposedPort": 0,
            "Definition": {},
            "Namespace": "default",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(record: Any) -> dict[str, Any]:
    """`dataclasses.asdict` without its deep copies (the records hold only strings, numbers, tuples, flat
    maps and one nested record), and without the store's indexes: the same JSON, several times faster —
    this runs for every record of every registration."""
    cls = type(record)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(
            f.name for f in fields(record) if f.name not in ("create_index", "modify_index")
        )
    out = {}
    for n in names:
        v = getattr(record, n)
        out[n] = _plain(v) if hasattr(v, "__dataclass_fields__") else v
    return out


def dump(record: Any) -> bytes:
    return json.dumps(_plain(record), separators=(",", ":")).encode()


def _tuples(d: dict[str, Any], *names: str) -> dict[str, Any]:
    for n in names:
        if n in d and isinstance(d[n], list):
            d[n] = tuple(d[n])
    return d


def load_session(raw: bytes, ci: int, mi: int) -> Session:
    d = _tuples(json.loads(raw), "node_checks")
    return Session(**d, create_index=ci, modify_index=mi)


def load_node(raw: bytes, ci: int, mi: int) -> Node:
    return Node(**json.loads(raw), create_index=ci, modify_index=mi)


def load_service(raw: bytes, ci: int, mi: int) -> Service:
    return Service(**_tuples(json.loads(raw), "tags"), create_index=ci, modify_index=mi)


def load_check(raw: bytes, ci: int, mi: int) -> Check:
    d = _tuples(json.loads(raw), "service_tags")
    d["definition"] = CheckDef(**_tuples(d["definition"], "args"))
    return Check(**d, create_index=ci, modify_index=mi)


def with_status(check: Check, status: str, output: str) -> Check:
    return replace(check, status=status, output=output)


def held_key(session: str, key: str) -> str:
    return f"{HELD}{session}/{key}"


def held_value(s: Session) -> bytes:
    return json.dumps({"behavior": s.behavior, "lock_delay": s.lock_delay}).encode()


def load_held(raw: bytes) -> tuple[str, float]:
    """(behavior, lock delay) from a held/ entry; a damaged one releases, without delay."""
    try:
        d = json.loads(raw)
        behavior, delay = d["behavior"], float(d["lock_delay"])
    except (ValueError, KeyError, TypeError):
        return "release", 0.0
    return ("delete" if behavior == "delete" else "release"), max(0.0, min(delay, 60.0))
