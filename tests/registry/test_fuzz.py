"""Fuzzing the registry as an attacker or a broken client would: thousands of generated malformed bodies,
query strings and paths per endpoint group (KV, sessions, agent services and checks, catalog, health,
transactions), against a real `shoal registry` process, and malformed packets at its DNS server.

Each input must get a status below 500 — or one of Consul's own documented 500s (unknown session,
node or datacenter), as plain text — never a traceback; an error must change nothing (the store's own
index, read from the store itself, is the same before and after); and after all of it the registry must
still answer, `dig` included. Budgets come from the `registry-fuzz` hypothesis profile (conftest.py);
SHOAL_FUZZ_EXAMPLES raises them, and SHOAL_FUZZ_REPORT=FILE writes the counts benchmarks/safety.py
prints.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import socket
import sqlite3
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.registry.conftest import RegistryProc, sqlite_registry, start_registry, stop_registry

EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "0") or 0)
# Consul answers these with 500 and a message; clients branch on them, so shoal keeps them
CONSUL_500 = (
    "invalid session",
    "No path to datacenter",
    "Missing node registration",
    "Missing check",
    "Check ",
    "Invalid Session TTL",
    "Session TTL ",  # Consul's words for a TTL that is not a Go duration
    "missing session",  # ?release= with no session (kvsUnlockTxn)
    "Failed inserting check",  # a catalog check naming a service the node does not have
)
COUNTS: dict[str, Counter[str]] = {}


# --- the registry under fuzz, and how we see its state -----------------------------------------------


@dataclass
class Target:
    store: str  # "sqlite" | "etcd"
    reg: RegistryProc
    index_of: Any  # () -> int: the store's own index, read from the store, not through the registry
    conn: http.client.HTTPConnection | None = None
    seed: dict[str, str] = field(default_factory=dict)

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.reg.http_port, timeout=15)
            try:
                self.conn.putrequest(method, path, skip_accept_encoding=True)
                self.conn.putheader("Content-Length", str(len(body or b"")))
                self.conn.endheaders(body or b"")
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, r.getheader("Content-Type", ""), data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if self.reg.proc.poll() is not None:
                    raise AssertionError(f"the registry died: {self.reg.log.read_text()[-3000:]}") from None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.send(method, path, None if body is None else json.dumps(body).encode())
        assert status < 400, (method, path, status, data)
        return json.loads(data) if data.strip() else None


def _sqlite_index(path: str):
    def index() -> int:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT value FROM meta WHERE name='index'").fetchone()[0]
        finally:
            conn.close()

    return index


def _etcd_index(endpoint: str):
    def index() -> int:
        body = json.dumps({"key": base64.b64encode(b"/shoal/").decode(), "count_only": True}).encode()
        req = urllib.request.Request(f"http://{endpoint}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.loads(r.read())["header"]["revision"])

    return index


SEED_SERVICE = {"Name": "web", "ID": "web1", "Port": 80, "Tags": ["a"], "Check": {"TTL": "24h"}}
SEED_REMOTE = {
    "Node": "remote",
    "Address": "127.0.0.9",
    "Service": {"Service": "db", "ID": "db1", "Port": 5432},
    "Check": {"CheckID": "db-alive", "Name": "db", "Status": "passing", "ServiceID": "db1"},
}


def _undo(t: Target, path: str, reply: bytes) -> None:
    """After an input that succeeded: take away whatever it made that could write later on its own
    (checks with timers or probes, sessions with TTLs) and put the seed back, so the next no-change
    check sees only its own input."""
    if path.startswith("/v1/session/create"):
        t.json("PUT", f"/v1/session/destroy/{json.loads(reply)['ID']}")
        return
    q = lambda v: urllib.parse.quote(v, safe="")  # noqa: E731
    for sid in t.json("GET", "/v1/agent/services"):
        if sid != "web1":
            t.json("PUT", f"/v1/agent/service/deregister/{q(sid)}")
    for c in t.json("GET", "/v1/health/state/any"):
        if c["Node"] == "mgr" and c["CheckID"] not in ("serfHealth", "service:web1"):
            t.send("PUT", f"/v1/agent/check/deregister/{q(c['CheckID'])}")
        elif c["Node"] == "remote" and c["CheckID"] != "db-alive":
            t.json("PUT", "/v1/catalog/deregister", {"Node": "remote", "CheckID": c["CheckID"]})
    for n in t.json("GET", "/v1/catalog/nodes"):
        if n["Node"] not in ("mgr", "remote"):
            t.json("PUT", "/v1/catalog/deregister", {"Node": n["Node"]})
    remote = t.json("GET", "/v1/catalog/node/remote") or {"Services": {}}
    for sid in remote["Services"]:
        if sid != "db1":
            t.json("PUT", "/v1/catalog/deregister", {"Node": "remote", "ServiceID": sid})
    # the seed again (a no-op when it is as it was): a changed TTL or probe would write on its own
    t.json("PUT", "/v1/agent/service/register", SEED_SERVICE)
    t.json("PUT", "/v1/catalog/register", SEED_REMOTE)
    last, deadline = t.index_of(), time.monotonic() + 5  # a probe cancelled mid-write may still land
    while time.monotonic() < deadline:
        time.sleep(0.005)
        if (now := t.index_of()) == last:
            break
        last = now


def _seed(t: Target) -> None:
    """State the fuzzers should not disturb: a KV tree with a locked key, a session, an agent service
    with a TTL check (24h, so no timer writes during the run), a catalog node with a service and check."""
    t.json("PUT", "/v1/kv/app/config?flags=3", "v1")
    t.json("PUT", "/v1/kv/app/nested/deep", "v2")
    sid = t.json("PUT", "/v1/session/create", {"Name": "seed", "LockDelay": "0s"})["ID"]
    t.json("PUT", f"/v1/kv/app/lock?acquire={sid}", "held")
    t.json("PUT", "/v1/agent/service/register", SEED_SERVICE)
    t.json("PUT", "/v1/catalog/register", SEED_REMOTE)
    t.seed = {"session": sid}


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def target(request) -> Iterator[Target]:
    if request.param == "sqlite":
        path = f"{tempfile.mkdtemp()}/registry.db"
        reg, index_of = start_registry(f"sqlite://{path}"), _sqlite_index(path)
    else:
        ep = request.getfixturevalue("etcd_endpoint")
        reg, index_of = start_registry(f"etcd://{ep}"), _etcd_index(ep)
    t = Target(request.param, reg, index_of)
    try:
        _seed(t)
        yield t
        assert reg.proc.poll() is None, "the registry died under the fuzzers"
    finally:
        if t.conn:
            t.conn.close()
        stop_registry(reg)


@pytest.fixture(scope="module", autouse=True)
def fuzz_report() -> Iterator[None]:
    """The counts, per store and endpoint group, for benchmarks/safety.py (SHOAL_FUZZ_REPORT=FILE)."""
    yield
    if os.environ.get("SHOAL_FUZZ_REPORT"):
        with open(os.environ["SHOAL_FUZZ_REPORT"], "w") as f:
            json.dump({k: dict(v) for k, v in sorted(COUNTS.items())}, f, indent=1)


def _budget(store: str, sqlite: int, etcd: int) -> int:
    return EXAMPLES or (sqlite if store == "sqlite" else etcd)


# --- generated inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON token json.dumps cannot write (1e400, -0, NaN spelled by hand)."""

    text: str


def to_json(v: Any) -> str:
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, float) and not math.isfinite(v):
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(v, "NaN")
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    return json.dumps(v)


NASTY: list[Any] = [
    None, True, False, 0, -1, 2**31, 2**63, 2**64 - 1, 2**64, -(2**64), 10**30, 1.5, -0.0, 1e308,
    math.nan, math.inf, -math.inf, Raw("1e400"), Raw("-1e400"), Raw("1" * 5000), "", " ", "\x00",
    "\ud800", "é", "\U0001d11e", "a" * 5000, "10s", "-5s", "1ns", "0", "nan", "\u0663s", "1e3h",
    "passing", "critical", "delete", "GET /x", "../../etc", "a/b", "%2F", [], {}, [1, "a"], {"a": 1},
]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(NASTY),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=()), max_size=20),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(v: Any, here: tuple = ()) -> Iterator[tuple]:
    yield here
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, (*here, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, (*here, i))


def _apply(template: Any, edits: list[tuple[tuple, str, Any, str]]) -> Any:
    doc = json.loads(json.dumps(template))
    for path, how, value, newkey in edits:
        if not path:
            if how == "replace":
                doc = value
            continue
        parent = doc
        try:
            for p in path[:-1]:
                parent = parent[p]
            last = path[-1]
            if how == "replace":
                parent[last] = value
            elif how == "delete":
                del parent[last]
            elif how == "wrap":
                parent[last] = [parent[last]] if how == "wrap" else parent[last]
            elif how == "nest":
                parent[last] = {"x": parent[last]}
            elif how == "add" and isinstance(parent, dict):
                parent[newkey] = value
            elif how == "case" and isinstance(parent, dict) and isinstance(last, str):
                parent[last.upper() if last != last.upper() else last.lower()] = parent.pop(last)
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def bodies(*templates: Any) -> st.SearchStrategy[bytes]:
    """Malformed bodies: templates with fields replaced, removed, wrapped or added (types, ranges, NaN,
    unicode), plus raw junk, deep nesting, broken JSON and non-UTF-8 bytes."""

    @st.composite
    def mutated(draw) -> bytes:
        template = draw(st.sampled_from(templates))
        paths = list(_paths(template))
        edits = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(paths),
                    st.sampled_from(
                        ["replace", "replace", "replace", "delete", "wrap", "nest", "add", "case"]
                    ),
                    junk,
                    st.text(max_size=10),
                ),
                min_size=1,
                max_size=3,
            )
        )
        return to_json(_apply(template, edits)).encode("utf-8", "surrogatepass")

    deep = st.integers(20, 20000).map(
        lambda n: (b"[" * n + b"]" * n) if n % 2 else (b'{"a":' * n + b"1" + b"}" * n)
    )
    broken = st.sampled_from(
        [b"{", b"[", b'{"Name": "x",', b"nul", b"\xff\xfe\x00", b'{"a": 1}{"b": 2}', b"1e999", b"[NaN]"]
    )
    return st.one_of(
        mutated(),
        mutated(),
        mutated(),
        junk.map(lambda v: to_json(v).encode("utf-8", "surrogatepass")),
        deep,
        broken,
        st.binary(max_size=200),
    )


HAND_ENCODED = ["..%2F..%2Fagent%2Fself", "..%2F", "%2F", "%00", "%ED%A0%80", "%FF", "a%2Fb", "%23", "%3F"]
segment = st.one_of(
    st.text(max_size=24),
    st.sampled_from([*HAND_ENCODED, "..", ".", "web1", "service:web1", "mgr", "remote", ""]),
)


def quote(seg: str) -> str:
    if seg in HAND_ENCODED:  # sent exactly as written
        return seg
    return urllib.parse.quote(seg.encode("utf-8", "surrogatepass"), safe="")


QUERY_NAMES = [
    "index", "wait", "recurse", "keys", "separator", "raw", "cas", "flags", "acquire", "release", "dc",
    "passing", "tag", "note", "node-meta", "stale", "consistent", "filter", "near", "ns", "token",
]  # fmt: skip
query = st.lists(
    st.tuples(
        st.sampled_from(QUERY_NAMES),
        st.one_of(
            st.sampled_from(["", "0", "-1", "18446744073709551616", "99999999999999999999999", "1.5", "abc",
                             "\u0663", "1e3", "5_0", " 5", "dc1", "dc2", "yes", "1ms", "nan", *HAND_ENCODED]),
            st.integers().map(str),
            st.text(max_size=12),
        ),
    ),
    max_size=4,
)  # fmt: skip


def _qs(params: list[tuple[str, str]]) -> str:
    """A query string; a blocking `index` always waits briefly (never the 5 minute default)."""
    if any(k == "index" for k, _ in params):
        params = [(k, v) for k, v in params if k != "wait"] + [("wait", "2ms")]
    if not params:
        return ""
    return "?" + "&".join(f"{quote(k)}={quote(v)}" if v else quote(k) for k, v in params)


# --- the assertions every input gets -----------------------------------------------------------------


def check(t: Target, group: str, method: str, path: str, body: bytes | None = None) -> bytes | None:
    """Sends one input and holds the registry to the rules; its reply if it was accepted (2xx)."""
    counts = COUNTS.setdefault(f"{t.store}/{group}", Counter())
    counts["inputs"] += 1
    before = t.index_of()
    status, ctype, data = t.send(method, path, body)
    text = data.decode(errors="replace")
    assert "Traceback" not in text and 'File "' not in text, (method, path, body, text[:500])
    if status >= 500:
        documented = text.startswith(CONSUL_500)
        counts["consul_500" if documented else "unexpected_5xx"] += 1
        assert documented, f"{method} {path} body={body!r:.300} -> {status} {text[:300]}"
    if status == 409 and path.startswith("/v1/txn"):
        reply = json.loads(data)
        assert reply["Results"] is None and all({"OpIndex", "What"} <= set(e) for e in reply["Errors"])
    elif status >= 400:
        assert "json" not in ctype, (method, path, status, ctype, text[:200])  # Consul's errors: plain text
    if status >= 400:
        assert t.index_of() == before, f"{method} {path} body={body!r:.300} -> {status} changed the store"
        counts["errors"] += 1
        return None
    counts["accepted"] += 1
    return data


STATEFUL = ("/v1/agent/", "/v1/catalog/", "/v1/session/create")


def run(t: Target, group: str, inputs: list[tuple[str, str, bytes | None]]) -> None:
    for method, path, body in inputs:
        reply = check(t, group, method, path, body)
        if reply is not None and method != "GET" and path.startswith(STATEFUL):
            _undo(t, path, reply)


# --- the fuzzers, one per endpoint group -----------------------------------------------------------------


def test_fuzz_kv(target):
    @settings(settings.get_profile("registry-fuzz"), max_examples=_budget(target.store, 200, 30))
    @given(
        key=st.lists(segment, min_size=0, max_size=3),
        q1=query,
        q2=query,
        body=st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"x" * 600_000])),
        method=st.sampled_from(["PUT", "PUT", "GET", "DELETE"]),
    )
    def fuzz(key, q1, q2, body, method):
        path = "/v1/kv/" + "/".join(quote(s) for s in key)
        run(
            target,
            "kv",
            [
                (method, path + _qs(q1), body if method == "PUT" else None),
                ("PUT", "/v1/kv/app/lock" + _qs(q2), body),
                ("GET", "/v1/kv/app" + _qs(q2), None),
            ],
        )

    fuzz()


SESSION_BODY = {"Name": "s", "Node": "mgr", "LockDelay": "15s", "Behavior": "release", "TTL": "30s",
                "Checks": ["serfHealth"], "NodeChecks": ["serfHealth"]}  # fmt: skip


def test_fuzz_sessions(target):
    @settings(settings.get_profile("registry-fuzz"), max_examples=_budget(target.store, 200, 30))
    @given(body=bodies(SESSION_BODY, {"LockDelay": 1}, {}), sid=segment, q=query)
    def fuzz(body, sid, q):
        run(
            target,
            "session",
            [
                ("PUT", "/v1/session/create" + _qs(q), body),
                ("PUT", f"/v1/session/renew/{quote(sid)}" + _qs(q), None),
                ("GET", f"/v1/session/info/{quote(sid)}" + _qs(q), None),
                ("PUT", f"/v1/session/destroy/{quote(sid)}" + _qs(q), None),
                ("GET", "/v1/session/list" + _qs(q), None),
            ],
        )

    fuzz()


SERVICE_BODY = {
    "Name": "api", "ID": "api1", "Tags": ["a", "b"], "Address": "127.0.0.1", "Port": 8080,
    "Meta": {"k": "v"}, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
    "Check": {"TTL": "30s", "Status": "passing", "Notes": "n", "DeregisterCriticalServiceAfter": "1m"},
    "Checks": [{"HTTP": "http://127.0.0.1:1/", "Interval": "10s", "Method": "GET", "Timeout": "1s"},
               {"TCP": "127.0.0.1:1", "Interval": "10s"}],
}  # fmt: skip
CHECK_BODY = {"Name": "c", "ID": "c1", "ServiceID": "web1", "TTL": "30s", "Status": "warning", "Notes": "x",
              "HTTP": None, "Args": None}  # fmt: skip


def test_fuzz_agent_services_and_checks(target):
    @settings(settings.get_profile("registry-fuzz"), max_examples=_budget(target.store, 200, 30))
    @given(
        service=bodies(SERVICE_BODY),
        check_body=bodies(CHECK_BODY, {"Status": "passing", "Output": "ok"}),
        cid=segment,
        state=st.sampled_from(["pass", "warn", "fail", "update"]),
        q=query,
    )
    def fuzz(service, check_body, cid, state, q):
        run(
            target,
            "agent",
            [
                ("PUT", "/v1/agent/service/register" + _qs(q), service),
                ("PUT", "/v1/agent/check/register" + _qs(q), check_body),
                ("PUT", f"/v1/agent/check/{state}/{quote(cid)}" + _qs(q), check_body),
                ("PUT", f"/v1/agent/check/update/service:web1{_qs(q)}", check_body),
                ("PUT", f"/v1/agent/service/deregister/{quote(cid)}" + _qs(q), None),
                ("PUT", f"/v1/agent/check/deregister/{quote(cid)}" + _qs(q), None),
                ("GET", f"/v1/agent/service/{quote(cid)}" + _qs(q), None),
            ],
        )

    fuzz()


CATALOG_BODY = {
    "Node": "n1", "Address": "127.0.0.5", "Datacenter": "dc1", "ID": "x", "NodeMeta": {"rack": "r1"},
    "TaggedAddresses": {"lan": "127.0.0.5"},
    "Service": {"Service": "s", "ID": "s1", "Tags": ["t"], "Port": 1, "Address": "", "Meta": {}},
    "Check": {"CheckID": "c", "Name": "c", "Status": "passing", "ServiceID": "s1",
              "Definition": {"TTL": "30s"}},
    "Checks": [{"CheckID": "d", "Status": "warning", "Output": "o"}],
}  # fmt: skip


def test_fuzz_catalog(target):
    @settings(settings.get_profile("registry-fuzz"), max_examples=_budget(target.store, 200, 30))
    @given(
        register=bodies(CATALOG_BODY),
        deregister=bodies({"Node": "remote", "ServiceID": "db1", "CheckID": "db-alive", "Datacenter": "dc1"}),
        name=segment,
        q=query,
    )
    def fuzz(register, deregister, name, q):
        run(
            target,
            "catalog",
            [
                ("PUT", "/v1/catalog/register" + _qs(q), register),
                ("PUT", "/v1/catalog/deregister" + _qs(q), deregister),
                ("GET", f"/v1/catalog/service/{quote(name)}" + _qs(q), None),
                ("GET", f"/v1/catalog/node/{quote(name)}" + _qs(q), None),
                ("GET", "/v1/catalog/services" + _qs(q), None),
            ],
        )

    fuzz()


def test_fuzz_health_and_unknown_paths(target):
    @settings(settings.get_profile("registry-fuzz"), max_examples=_budget(target.store, 200, 30))
    @given(
        name=segment,
        state=st.one_of(st.sampled_from(["any", "passing", "warning", "critical"]), segment),
        q=query,
        junk_path=st.lists(segment, min_size=1, max_size=4),
        method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]),
    )
    def fuzz(name, state, q, junk_path, method):
        run(
            target,
            "health",
            [
                ("GET", f"/v1/health/service/{quote(name)}" + _qs(q), None),
                ("GET", f"/v1/health/state/{quote(state)}" + _qs(q), None),
                ("GET", f"/v1/health/checks/{quote(name)}" + _qs(q), None),
                ("GET", f"/v1/health/node/{quote(name)}" + _qs(q), None),
                (method, "/v1/" + "/".join(quote(s) for s in junk_path) + _qs(q), b"{}"),
            ],
        )

    fuzz()


def _txn_template(sid: str) -> list[dict]:
    v = base64.b64encode(b"v").decode()
    return [
        {"KV": {"Verb": "set", "Key": "fz/a", "Value": v, "Flags": 1}},
        {"KV": {"Verb": "cas", "Key": "app/config", "Value": v, "Index": 1}},
        {"KV": {"Verb": "lock", "Key": "fz/l", "Value": v, "Session": sid}},
        {"KV": {"Verb": "check-index", "Key": "app/config", "Index": 3}},
        {"KV": {"Verb": "check-session", "Key": "app/lock", "Session": sid}},
        {"KV": {"Verb": "get-tree", "Key": "app/"}},
        {"KV": {"Verb": "delete-cas", "Key": "app/nested/deep", "Index": 2}},
        {"KV": {"Verb": "delete-tree", "Key": "fz/"}},
        {"KV": {"Verb": "check-not-exists", "Key": "app/lock"}},
    ]


def test_fuzz_transactions(target):
    template = _txn_template(target.seed["session"])

    txns = bodies(template, template[:2], [template[4], template[8]])

    @settings(settings.get_profile("registry-fuzz"), max_examples=_budget(target.store, 200, 30))
    @given(b1=txns, b2=txns, b3=txns, q=query)
    def fuzz(b1, b2, b3, q):
        run(target, "txn", [("PUT", "/v1/txn" + _qs(q), b) for b in (b1, b2, b3)])

    fuzz()


# Every field of every body, each replaced by every kind of wrong value: the systematic half of the
# fuzzing (hypothesis, above, finds combinations; this makes sure no single field is ever missed).
PROBES: list[Any] = [None, True, 0, -1, 2**64, 1.5, math.nan, "", "x", "\ud800", [], {}, [1], {"a": 1}]
SWEEPS = [
    ("agent", "/v1/agent/service/register", SERVICE_BODY),
    ("agent", "/v1/agent/check/register", CHECK_BODY),
    ("agent", "/v1/agent/check/update/service:web1", {"Status": "passing", "Output": "ok"}),
    ("session", "/v1/session/create", SESSION_BODY),
    ("catalog", "/v1/catalog/register", CATALOG_BODY),
    ("catalog", "/v1/catalog/register?node-meta=rack:r2", CATALOG_BODY),  # py-consul sends node_meta so
    ("catalog", "/v1/catalog/deregister", {"Node": "remote", "ServiceID": "db1", "Datacenter": "dc1"}),
    ("txn", "/v1/txn", "TXN"),
]


@pytest.mark.parametrize("target", ["sqlite"], indirect=True)  # decoding is the same on both stores
@pytest.mark.parametrize(("group", "path", "template"), SWEEPS, ids=[p for _, p, _ in SWEEPS])
def test_every_field_of_every_body_with_every_wrong_type(target, group, path, template):
    if template == "TXN":
        template = _txn_template(target.seed["session"])
    for where in list(_paths(template))[1:]:
        for probe in PROBES:
            body = to_json(_apply(template, [(where, "replace", probe, "")])).encode("utf-8", "surrogatepass")
            run(target, group, [("PUT", path, body)])


def test_bodies_over_the_limits_are_413_and_change_nothing(target):
    huge = b'{"Name": "' + b"x" * (1 << 20) + b'"}'
    for path in ("/v1/agent/service/register", "/v1/session/create", "/v1/catalog/register", "/v1/txn"):
        check(target, "limits", "PUT", path, huge)
    check(target, "limits", "PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1))
    status, _, _ = target.send("PUT", "/v1/txn", b"[" + b'{"KV":{"Verb":"get","Key":"k"}},' * 20000 + b"{}]")
    assert status == 413


def test_after_the_fuzzers_the_registry_still_reads_and_writes(target):
    # a write first: the fuzzers may have deleted every key, and an empty ?recurse is Consul's 404
    assert target.json("PUT", "/v1/kv/after/fuzz", "ok") is True
    for path in ("/v1/kv/?recurse", "/v1/session/list", "/v1/agent/services", "/v1/health/service/db"):
        status, _, _ = target.send("GET", path)
        assert status == 200, path
    assert base64.b64decode(target.json("GET", "/v1/kv/after/fuzz")[0]["Value"]) == b'"ok"'
    print({k: dict(v) for k, v in sorted(COUNTS.items()) if k.startswith(target.store)})


# --- DNS -------------------------------------------------------------------------------------------------


def _query(name: str, qtype: int = 1) -> bytes:
    header = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p for p in (x.encode() for x in name.split(".") if x)) + b"\0"
    return header + qname + struct.pack(">HH", qtype, 1)


def _flip(data: bytes, positions: list[int], values: list[int]) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values, strict=False):
        if b:
            b[p % len(b)] = v
    return bytes(b)


dns_packets = st.one_of(
    st.binary(max_size=600),
    st.builds(
        _flip,
        st.sampled_from(
            [_query("web.service.shoal"), _query("mgr.node.shoal", 33), _query("x" * 60 + ".shoal")]
        ),
        st.lists(st.integers(0, 600), max_size=6),
        st.lists(st.integers(0, 255), max_size=6),
    ),
    st.builds(lambda n, t: _query(n, t), st.text(max_size=80), st.integers(0, 65535)),
    st.just(struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"),  # pointer to itself
    st.just(struct.pack(">HHHHHH", 1, 0x0100, 65535, 65535, 65535, 65535)),
)


def _dig(reg: RegistryProc, *args: str) -> list[str]:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(reg.dns_port), *args, "+short", "+tries=1", "+time=3"],
        capture_output=True,
        text=True,
        timeout=15,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def dns_registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as reg:
        yield reg


def test_fuzz_dns_over_udp_and_tcp_then_dig_still_answers(dns_registry):
    reg = dns_registry
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(0.2)
    counts = COUNTS.setdefault("sqlite/dns", Counter())

    @settings(settings.get_profile("registry-fuzz"), max_examples=EXAMPLES or 1500)
    @given(packet=dns_packets, tcp=st.booleans(), length_lie=st.integers(-3, 3))
    def fuzz(packet, tcp, length_lie):
        counts["inputs"] += 1
        if not tcp:
            udp.sendto(packet, ("127.0.0.1", reg.dns_port))
            return
        with socket.create_connection(("127.0.0.1", reg.dns_port), timeout=2) as s:
            s.sendall(struct.pack(">H", max(0, len(packet) + length_lie) & 0xFFFF) + packet)
            s.shutdown(socket.SHUT_WR)  # a short or lying length meets the end of the stream
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError, ConnectionError):
                while s.recv(65535):
                    pass

    fuzz()
    udp.close()
    assert reg.proc.poll() is None, "the DNS server's process died"
    time.sleep(0.2)
    assert _dig(reg, "mgr.node.shoal", "A") == ["127.0.0.1"]
    assert _dig(reg, "+tcp", "mgr.node.shoal", "A") == ["127.0.0.1"]
