"""Every registry operation that writes several keys is all there or not there at all: the registry is
killed between the writes of one operation (SHOAL_REGISTRY_CRASH_AT, shoal/registry/faults.py), then
started again and read back. Concurrent writers through the HTTP API never lose an update, and a lock
never outlives the session that took it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from tests.registry.conftest import RegistryProc, start_registry, stop_registry


@dataclass
class Store:
    kind: str
    url: str


@pytest.fixture(params=["sqlite", "etcd"])
def store(request) -> Iterator[Store]:
    if request.param == "sqlite":
        yield Store("sqlite", f"sqlite://{tempfile.mkdtemp()}/registry.db")
    else:
        yield Store("etcd", "etcd://" + request.getfixturevalue("etcd_endpoint"))


def _dies_during(reg: RegistryProc, request: Callable[[], object]) -> None:
    with pytest.raises(requests.ConnectionError):
        request()
    assert reg.proc.wait(10) == 137, "the registry should have died at the crash point"


def _put(url: str, path: str, body: object = None) -> requests.Response:
    data = body if isinstance(body, bytes | None) else json.dumps(body)
    return requests.put(f"{url}{path}", data=data, timeout=10)


def _get(url: str, path: str) -> object:
    r = requests.get(f"{url}{path}", timeout=10)
    return r.json() if r.status_code == 200 else None


def _service(url: str, name: str) -> tuple[bool, set[str]]:
    checks = _get(url, "/v1/agent/checks") or {}
    return name in (_get(url, "/v1/agent/services") or {}), {
        c for c, v in checks.items() if v["ServiceID"] == name
    }


def _catalog(url: str, node: str) -> tuple[bool, list[str], list[str]]:
    nodes = [n["Node"] for n in _get(url, "/v1/catalog/nodes") or []]
    services = (_get(url, f"/v1/catalog/node/{node}") or {}).get("Services", {})
    checks = _get(url, f"/v1/health/node/{node}") or []
    return node in nodes, sorted(services), sorted(c["CheckID"] for c in checks)


def _holder(url: str, key: str) -> str | None:
    got = _get(url, f"/v1/kv/{key}")
    return got[0].get("Session") if got else None


def _sessions(url: str) -> dict[str, str]:
    return {s["ID"]: s["Name"] for s in _get(url, "/v1/session/list") or []}


NODE_BODY = {
    "Address": "127.0.0.9",
    "Service": {"Service": "web", "ID": "web1", "Port": 80},
    "Checks": [
        {"CheckID": "alive", "Name": "alive", "Status": "passing", "Definition": {"TTL": "600s"}},
        {"CheckID": "web", "Name": "web", "Status": "passing", "ServiceID": "web1"},
    ],
}
SERVICE_BODY = {"Checks": [{"TTL": "30s"}, {"TTL": "60s", "Status": "passing"}]}


def test_kill_at_every_multi_key_write_leaves_each_operation_all_there_or_not_at_all(store):
    """Each window: a registry armed to die there (faults.py) gets the operation and dies; the next
    registry (armed for the next window) first shows the operation whole or absent. In a transaction,
    SQLite leaves none of it (the transaction was not committed) and etcd all of it (it had the whole
    Txn, whose answer was never read); between the store calls of one operation, the operation is as
    if it had never begun, or as if it had ended."""
    u = uuid.uuid4().hex[:6]
    txn = "store-txn-mid" if store.kind == "sqlite" else "store-txn-sent"
    applied = store.kind == "etcd"  # what a kill inside one transaction leaves
    locks = f"locks/{u}"

    # what the windows act on, made by a registry that does not die
    setup = start_registry(store.url)
    try:
        doomed = _put(setup.url, "/v1/session/create", {"Name": "doomed", "TTL": "30s", "LockDelay": "0s"})
        doomed = doomed.json()["ID"]
        assert _put(setup.url, f"/v1/kv/{locks}/d?acquire={doomed}", b"x").json() is True
        assert (
            _put(setup.url, "/v1/agent/service/register", {"Name": f"old{u}", **SERVICE_BODY}).status_code
            == 200
        )
        assert _put(setup.url, "/v1/catalog/register", {"Node": f"old{u}", **NODE_BODY}).status_code == 200
        holder = _put(setup.url, "/v1/session/create", {"Name": "holder", "LockDelay": "0s"}).json()["ID"]
        for name in ("a", "b"):
            assert _put(setup.url, f"/v1/kv/{locks}/{name}?acquire={holder}", b"x").json() is True
    finally:
        stop_registry(setup)
    whole_node = (True, ["web1"], ["alive", "web"])
    ops = [
        {"KV": {"Verb": "set", "Key": f"txn{u}/{i}", "Value": base64.b64encode(b"v").decode()}}
        for i in range(3)
    ]

    windows: list[tuple[str, Callable[[str], object], Callable[[str], None]]] = [
        (
            "session-create-granted",  # the lease is granted, the session record not yet written
            lambda url: _put(url, "/v1/session/create", {"Name": "half", "TTL": "30s"}),
            lambda url: _assert("half" not in _sessions(url).values(), "a session without its record"),
        ),
        (
            "session-destroy-committed",  # the session and its locks are gone, the lease not yet revoked
            lambda url: _put(url, f"/v1/session/destroy/{doomed}"),
            lambda url: _assert(
                doomed not in _sessions(url) and _holder(url, f"{locks}/d") is None, "half a destroy"
            ),
        ),
        (
            f"{txn}@services/mgr/new{u}",  # a service and its two checks
            lambda url: _put(url, "/v1/agent/service/register", {"Name": f"new{u}", **SERVICE_BODY}),
            lambda url: _assert(
                _service(url, f"new{u}")
                == ((True, {f"service:new{u}:1", f"service:new{u}:2"}) if applied else (False, set())),
                f"service registration: {_service(url, f'new{u}')}",
            ),
        ),
        (
            f"{txn}@services/mgr/old{u}",  # a deregistration: the service and its checks
            lambda url: _put(url, f"/v1/agent/service/deregister/old{u}"),
            lambda url: _assert(
                _service(url, f"old{u}")
                == ((False, set()) if applied else (True, {f"service:old{u}:1", f"service:old{u}:2"})),
                f"deregistration: {_service(url, f'old{u}')}",
            ),
        ),
        (
            f"{txn}@nodes/new{u}",  # catalog register: node, service, checks
            lambda url: _put(url, "/v1/catalog/register", {"Node": f"new{u}", **NODE_BODY}),
            lambda url: _assert(
                _catalog(url, f"new{u}") == (whole_node if applied else (False, [], [])),
                f"catalog register: {_catalog(url, f'new{u}')}",
            ),
        ),
        (
            f"{txn}@nodes/old{u}",  # catalog deregister of a whole node
            lambda url: _put(url, "/v1/catalog/deregister", {"Node": f"old{u}"}),
            lambda url: _assert(
                _catalog(url, f"old{u}") == ((False, [], []) if applied else whole_node),
                f"catalog deregister: {_catalog(url, f'old{u}')}",
            ),
        ),
        (
            f"{txn}@kv/{locks}/c",  # an acquire: the key and the session's index of what it holds
            lambda url: _put(url, f"/v1/kv/{locks}/c?acquire={holder}", b"x"),
            lambda url: _assert(_holder(url, f"{locks}/c") == (holder if applied else None), "acquire"),
        ),
        (
            f"{txn}@sessions/{holder}",  # a destroy: the session and every lock it holds
            lambda url: _put(url, f"/v1/session/destroy/{holder}"),
            lambda url: _check_destroy(url, holder, locks, applied),
        ),
        (
            f"{txn}@kv/txn{u}/",  # a Consul transaction of three sets
            lambda url: _put(url, "/v1/txn", ops),
            lambda url: _assert(
                (_get(url, f"/v1/kv/txn{u}?keys") or [])
                == ([f"txn{u}/{i}" for i in range(3)] if applied else []),
                "transaction",
            ),
        ),
    ]
    verify_previous: Callable[[str], None] | None = None
    for point, trigger, verify in windows:
        reg = start_registry(store.url, env={"SHOAL_REGISTRY_CRASH_AT": point})
        if verify_previous:
            verify_previous(reg.url)
        _dies_during(reg, lambda url=reg.url, go=trigger: go(url))
        verify_previous = verify
    final = start_registry(store.url)
    try:
        assert verify_previous is not None
        verify_previous(final.url)
    finally:
        stop_registry(final)


def _assert(ok: bool, what: str) -> None:
    assert ok, f"left half-made by a kill: {what}"


def _check_destroy(url: str, holder: str, locks: str, applied: bool) -> None:
    if (
        not applied
    ):  # nothing of the destroy happened: the session holds its locks; destroying it now frees all
        _assert(holder in _sessions(url) and _holder(url, f"{locks}/a") == holder, "destroy (not applied)")
        assert _put(url, f"/v1/session/destroy/{holder}").status_code == 200
    _assert(holder not in _sessions(url), "destroy: the session survived")
    held = {n: _holder(url, f"{locks}/{n}") for n in ("a", "b", "c")}
    _assert(set(held.values()) == {None}, f"destroy: locks left on a dead session: {held}")


def test_a_second_registry_on_the_same_sqlite_file_is_refused_naming_the_file_and_the_pid():
    path = f"{tempfile.mkdtemp()}/registry.db"
    first = start_registry(f"sqlite://{path}")
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "shoal",
                "registry",
                "--store",
                f"sqlite://{path}",
                "--http",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode != 0
        assert path in second.stderr and f"pid {first.proc.pid}" in second.stderr, second.stderr
        assert requests.put(f"{first.url}/v1/kv/still", data=b"mine", timeout=5).json() is True
    finally:
        stop_registry(first)


def test_16_clients_incrementing_by_cas_end_at_exactly_their_acknowledged_count(registry):
    key = f"{registry.url}/v1/kv/counter/{uuid.uuid4().hex[:6]}"
    assert requests.put(key, data=b"0", timeout=5).json() is True
    acks = [0] * 16

    def client(i: int) -> None:
        s = requests.Session()
        for _ in range(40):
            entry = s.get(key, timeout=10).json()[0]
            n = int(base64.b64decode(entry["Value"]))
            r = s.put(f"{key}?cas={entry['ModifyIndex']}", data=str(n + 1).encode(), timeout=10)
            assert r.status_code == 200, r.text
            acks[i] += r.json() is True

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client, range(16)))
    final = int(base64.b64decode(requests.get(key, timeout=5).json()[0]["Value"]))
    assert final == sum(acks) > 16  # every acknowledged increment is there, and no other


def test_100_racing_acquires_and_destroys_leave_no_lock_on_a_dead_session(registry):
    base = registry.url
    prefix = f"race/{uuid.uuid4().hex[:6]}"
    body = json.dumps({"LockDelay": "0s"})
    sessions = [
        requests.put(f"{base}/v1/session/create", data=body, timeout=5).json()["ID"] for _ in range(100)
    ]
    barrier = threading.Barrier(20)

    def acquire(i: int) -> None:
        s = requests.Session()
        if i < 20:
            barrier.wait()
        for key in (f"{prefix}/{i % 10}", f"{prefix}/own{i}"):
            r = s.put(f"{base}/v1/kv/{key}?acquire={sessions[i]}", data=b"x", timeout=10)
            assert r.status_code in (200, 500), r.text  # 500: Consul's "invalid session" once destroyed
            assert r.status_code == 200 or "invalid session" in r.text

    def destroy(i: int) -> None:
        if i < 20:
            barrier.wait()
        assert requests.put(f"{base}/v1/session/destroy/{sessions[i]}", timeout=10).status_code == 200

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(f, i) for i in range(100) for f in (acquire, destroy)]
        for f in futures:
            f.result()
    live = {s["ID"] for s in requests.get(f"{base}/v1/session/list", timeout=5).json()}
    assert live.isdisjoint(sessions)
    entries = requests.get(f"{base}/v1/kv/{prefix}?recurse", timeout=5)
    held = [e["Key"] for e in (entries.json() if entries.status_code == 200 else []) if e.get("Session")]
    assert held == [], f"locked by destroyed sessions: {held}"


def test_an_etcd_write_whose_answer_was_lost_is_reported_done_not_refused(etcd_endpoint):
    """Every guarded write's first answer is dropped after etcd applied it (faults.py); the retry's
    compares then fail, and the store must read back and say the write happened — an acquire that
    answered false while holding the lock would leave a client locked out by itself."""
    reg = start_registry(f"etcd://{etcd_endpoint}", env={"SHOAL_REGISTRY_LOSE_ANSWERS": "1"})
    try:
        k = f"lost/{uuid.uuid4().hex[:6]}"
        sid = _put(reg.url, "/v1/session/create", {"LockDelay": "0s"}).json()["ID"]
        assert _put(reg.url, f"/v1/kv/{k}/lock?acquire={sid}", b"x").json() is True
        assert _holder(reg.url, f"{k}/lock") == sid
        assert _put(reg.url, f"/v1/kv/{k}/n?cas=0", b"1").json() is True
        index = _get(reg.url, f"/v1/kv/{k}/n")[0]["ModifyIndex"]
        assert _put(reg.url, f"/v1/kv/{k}/n?cas={index}", b"2").json() is True
        assert base64.b64decode(_get(reg.url, f"/v1/kv/{k}/n")[0]["Value"]) == b"2"
        claim = [
            {
                "KV": {
                    "Verb": "cas",
                    "Key": f"{k}/claim",
                    "Value": base64.b64encode(b"me").decode(),
                    "Index": 0,
                }
            }
        ]
        assert _put(reg.url, "/v1/txn", claim).status_code == 200
        assert _put(reg.url, f"/v1/kv/{k}/lock?release={sid}", b"x").json() is True
        assert _holder(reg.url, f"{k}/lock") is None
    finally:
        stop_registry(reg)
