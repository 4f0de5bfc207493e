"""What a client sees for something that is not there (issue 18): a missing KV key, a prefix with nothing
under it, a service nobody registered, a session id nobody holds. Each answers an index that writes it
does not read leave where it was, so a client that comes back with that index blocks until what it
asked for appears or its wait ends; the index is never 0 and never goes back for one query. Against
`shoal registry` on SQLite and on etcd, each request as py-consul sends it.

Consul's rules, from its source: a missing key answers the kvs table's index (kvsGetTxn in
agent/consul/state/kvs.go) and keeps blocking while the key stays missing (KVS.Get returns
ErrNotFound, which agent/blockingquery/blockingquery.go turns into "raise the minimum index", so a write
elsewhere in the KV wakes the server but never answers the client); an empty prefix answers the table's
index too (kvsListTxn), with no such rule, so a KV write near it in the radix tree answers it; an
unknown service answers the index of the last time any service lost its last instance
(maxIndexForService, "service_last_extinction" in agent/consul/state/catalog.go), which another
service's deregistration moves; an unknown session answers the sessions table's index and keeps
blocking while it stays missing (SessionGet in session.go, ErrNotFound in session_endpoint.go).
Shoal's indexes are narrower where that costs no client anything: a missing key's index moves only when
some KV key is deleted, an empty prefix's also when old tombstones are reaped, an unknown service's
never (its own index, once it has one), an unknown session's when some session ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import consul
import pytest
import requests

from tests.registry.conftest import RegistryProc, on_each_store
from tests.registry.test_blocking_keys import _while_held

WAIT = 2.0  # the wait of a query that must stay blocked: it answers when this ends, not before


def _u() -> str:
    return uuid.uuid4().hex[:8]


class Elsewhere:
    """Writes that touch none of what the test reads: catalog, health, sessions and KV, each made the
    way py-consul's client makes it."""

    def __init__(self, c: consul.Consul) -> None:
        self.c, self.u = c, _u()

    def catalog(self) -> None:
        node, svc = f"else{self.u}", f"else{self.u}"
        check = {"Node": node, "CheckID": f"{svc}-alive", "Name": "alive", "ServiceID": svc}
        for status in ("passing", "critical"):  # a service and its check, then the check changes
            assert self.c.catalog.register(
                node, "127.0.7.1", service={"ID": svc, "Service": svc}, check={**check, "Status": status}
            )
        assert self.c.catalog.register(node, "127.0.7.2", node_meta={"rack": "moved"})  # the node moves
        assert self.c.catalog.deregister(node, service_id=svc)  # that service has no instance left

    def sessions(self) -> None:
        self.c.session.destroy(self.c.session.create(name=f"else{self.u}"))

    def kv(self, deletes: bool = True) -> None:
        k = f"elsewhere/{self.u}"
        for i in range(3):
            assert self.c.kv.put(k, str(i))
        if deletes:
            assert self.c.kv.delete(k)

    def all_but(self, *skip: str) -> Callable[[], None]:
        def run() -> None:
            for name in ("catalog", "sessions", "kv"):
                if name not in skip:
                    getattr(self, name)()

        return run


def _stays_blocked(reg: RegistryProc, read: Callable[..., tuple[str, Any]], change: Callable[[], None]):
    """`read(index=, wait=)`, held across `change`, answers when its wait ends with what it answered
    before: the index it was asked with, and the same body. Returns that index."""
    index, body = read()
    assert int(index) > 0
    t0 = time.monotonic()
    again, same = _while_held(reg, lambda: read(index=index, wait=f"{WAIT}s"), change)
    took = time.monotonic() - t0
    assert same == body and int(again) >= int(index)
    assert took >= WAIT - 0.1, f"answered after {took:.2f}s: woken by a write it does not read"
    return again


def _woken(reg: RegistryProc, read: Callable[..., tuple[str, Any]], change: Callable[[], None]):
    """`read(index=, wait=)`, held across `change`, answers before its (long) wait ends with a newer
    index; (index before, index after, new body)."""
    index, _ = read()
    new, body = _while_held(reg, lambda: read(index=index, wait="60s"), change)
    assert int(new) > int(index) > 0, "not woken by a change it reads"
    return int(index), int(new), body


# --- GET /v1/kv/<missing key> ------------------------------------------------------------------------


def test_a_missing_keys_index_stays_across_writes_elsewhere_and_its_watch_stays_blocked(reg):
    c, away = reg.client(), Elsewhere(reg.client())
    k = f"missing/{_u()}"
    index, entry = c.kv.get(k)
    assert entry is None and int(index) > 0
    away.catalog()
    away.sessions()
    away.kv(deletes=False)  # puts elsewhere in the KV: Consul's index would move, shoal's does not
    assert c.kv.get(k)[0] == index, "a write the key does not read moved its index"
    # held across every kind of write elsewhere, a KV delete too: Consul's ErrNotFound keeps it blocked
    assert _stays_blocked(reg, lambda **kw: c.kv.get(k, **kw), away.all_but()) == index


def test_a_missing_key_wakes_when_it_is_written_and_its_index_never_goes_back(reg):
    c = reg.client()
    k = f"missing/{_u()}"
    before, created, entry = _woken(reg, lambda **kw: c.kv.get(k, **kw), lambda: c.kv.put(k, "here"))
    assert entry["Value"] == b"here" and created == entry["ModifyIndex"]
    _, gone, entry = _woken(reg, lambda **kw: c.kv.get(k, **kw), lambda: c.kv.delete(k))
    assert entry is None and gone > created > before
    assert int(c.kv.get(k)[0]) == gone  # missing again: the index of its deletion, not an older one


def test_a_key_deleted_with_its_prefix_answers_past_its_last_index(reg):
    c = reg.client()
    p = f"tree/{_u()}/"
    c.kv.put(p + "a/b", "1")
    present, _ = c.kv.get(p + "a/b")
    _, gone, entry = _woken(
        reg, lambda **kw: c.kv.get(p + "a/b", **kw), lambda: c.kv.delete(p[:-1], recurse=True)
    )
    assert entry is None and gone > int(present)


# --- GET /v1/kv/<prefix>?recurse with nothing under it -------------------------------------------------


def test_an_empty_prefix_index_stays_across_writes_elsewhere_and_its_watch_stays_blocked(reg):
    c, away = reg.client(), Elsewhere(reg.client())
    p = f"empty/{_u()}/"
    index, entries = c.kv.get(p, recurse=True)
    assert entries is None and int(index) > 0
    away.catalog()
    away.sessions()
    away.kv(deletes=False)
    assert c.kv.get(p, recurse=True)[0] == index
    assert requests.get(f"{reg.url}/v1/kv/{p}?keys", timeout=10).headers["X-Consul-Index"] == index
    assert _stays_blocked(reg, lambda **kw: c.kv.get(p, recurse=True, **kw), away.all_but()) == index


def test_an_empty_prefix_wakes_on_a_key_under_it_and_never_goes_back(reg):
    c = reg.client()
    p = f"empty/{_u()}/"

    def read(**kw: Any) -> tuple[str, Any]:
        return c.kv.get(p, recurse=True, **kw)

    before, filled, entries = _woken(reg, read, lambda: c.kv.put(p + "x", "1"))
    assert [e["Key"] for e in entries] == [p + "x"]
    _, emptied, entries = _woken(reg, read, lambda: c.kv.delete(p + "x"))
    assert entries is None and emptied > filled > before


# --- /v1/health/service/<unknown>, /v1/catalog/service/<unknown> ---------------------------------------


@pytest.mark.parametrize("view", ["health", "catalog"])
def test_an_unknown_services_index_stays_across_writes_elsewhere_and_its_watch_stays_blocked(reg, view):
    c, away = reg.client(), Elsewhere(reg.client())
    name = f"nobody{_u()}"

    def read(**kw: Any) -> tuple[str, Any]:
        return (c.health if view == "health" else c.catalog).service(name, **kw)

    index, body = read()
    assert body == [] and int(index) > 0
    away.catalog()  # another service registers, its check and node change, it goes extinct
    away.sessions()
    away.kv()
    assert read()[0] == index, "a write the service does not read moved its index"
    assert _stays_blocked(reg, read, away.all_but()) == index


@pytest.mark.parametrize("view", ["health", "catalog"])
def test_an_unknown_service_wakes_when_it_registers_and_never_goes_back(reg, view):
    c = reg.client()
    name = f"newcomer{_u()}"

    def read(**kw: Any) -> tuple[str, Any]:
        return (c.health if view == "health" else c.catalog).service(name, **kw)

    before, registered, body = _woken(reg, read, lambda: c.agent.service.register(name, service_id=name))
    assert len(body) == 1
    _, gone, body = _woken(reg, read, lambda: c.agent.service.deregister(name))
    assert body == [] and gone > registered > before
    assert int(read()[0]) == gone


# --- /v1/session/info/<unknown id> -----------------------------------------------------------------------


def test_an_unknown_sessions_index_stays_across_writes_elsewhere_and_its_watch_stays_blocked(reg):
    c, away = reg.client(), Elsewhere(reg.client())
    sid = str(uuid.uuid4())

    def read(**kw: Any) -> tuple[str, Any]:
        return c.session.info(sid, **kw)

    index, body = read()
    assert body is None and int(index) > 0
    away.catalog()
    away.kv()
    assert read()[0] == index, "a write outside the sessions moved an unknown session's index"
    # other sessions come and go: the sessions' index may move (Consul's does), the query stays blocked
    _stays_blocked(reg, read, away.all_but())


def test_a_session_info_watch_wakes_when_its_session_is_destroyed(reg):
    c = reg.client()
    sid = c.session.create(name=f"mine{_u()}")
    before, gone, body = _woken(reg, lambda **kw: c.session.info(sid, **kw), lambda: c.session.destroy(sid))
    assert body is None and gone > before


def test_a_session_info_watch_wakes_when_its_session_expires(registries):
    """A session whose TTL runs out is deleted by the store (its lease), not by a registry write: the
    watcher of its info still answers, with an index past the one it had. Both stores at once: a 10 s
    TTL ends at 20 s (Consul's 2x)."""

    def run(r: RegistryProc) -> tuple[Any, bool, float]:
        c = r.client()
        sid = c.session.create(name=f"brief{_u()}", ttl=10)
        index, body = c.session.info(sid)
        assert body["ID"] == sid
        t0 = time.monotonic()
        new, body = c.session.info(sid, index=index, wait="60s")
        return body, int(new) > int(index), time.monotonic() - t0

    outcome = on_each_store(registries, run, 90)
    for kind, (body, newer, took) in outcome.items():
        assert body is None and newer, (kind, body, newer)
        assert took < 50, f"{kind}: answered only when its wait ended ({took:.1f}s)"
