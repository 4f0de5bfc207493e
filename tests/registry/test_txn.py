"""Consul's transaction API (`PUT /v1/txn`, KV operations), driven by py-consul's `txn.put` and by shoal's
own client, on SQLite and on etcd."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid

import aiohttp
import consul
import pytest
import requests

from shoal.registry.client import RegistryClient


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _key() -> str:
    return f"txn/{uuid.uuid4().hex[:8]}"


def test_a_transaction_applies_every_operation_at_one_index(registry):
    c = registry.client()
    k = _key()
    c.kv.put(f"{k}/old", "x")
    got = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": f"{k}/a", "Value": _b64("1")}},
            {"KV": {"Verb": "cas", "Key": f"{k}/b", "Value": _b64("2"), "Index": 0}},
            {"KV": {"Verb": "delete", "Key": f"{k}/old"}},
            {"KV": {"Verb": "get", "Key": f"{k}/a"}},
            {"KV": {"Verb": "get-tree", "Key": f"{k}/"}},
        ]
    )
    assert got["Errors"] is None
    set_a, cas_b, get_a, *tree = (r["KV"] for r in got["Results"])  # deletes have no result
    assert set_a["Key"] == f"{k}/a" and set_a["Value"] is None  # only gets carry values
    assert set_a["ModifyIndex"] == cas_b["ModifyIndex"] == get_a["ModifyIndex"] > 0
    assert base64.b64decode(get_a["Value"]) == b"1"
    assert [(e["Key"], base64.b64decode(e["Value"])) for e in tree] == [(f"{k}/a", b"1"), (f"{k}/b", b"2")]
    _, entries = c.kv.get(k, recurse=True)
    assert [e["Key"] for e in entries] == [f"{k}/a", f"{k}/b"]
    assert {e["ModifyIndex"] for e in entries} == {set_a["ModifyIndex"]}


def test_a_failing_operation_rolls_back_everything_with_consuls_409(registry):
    c = registry.client()
    k = _key()
    c.kv.put(f"{k}/exists", "x")
    index, entry = c.kv.get(f"{k}/exists")
    ops = [
        {"KV": {"Verb": "set", "Key": f"{k}/new", "Value": _b64("1")}},
        {"KV": {"Verb": "check-not-exists", "Key": f"{k}/exists"}},
        {"KV": {"Verb": "check-index", "Key": f"{k}/exists", "Index": entry["ModifyIndex"] + 7}},
        {"KV": {"Verb": "cas", "Key": f"{k}/exists", "Value": _b64("2"), "Index": 0}},
    ]
    with pytest.raises(consul.ConsulException, match="409"):
        c.txn.put(ops)
    r = requests.put(f"{registry.url}/v1/txn", data=json.dumps(ops), timeout=5)
    assert r.status_code == 409 and r.json()["Results"] is None
    assert [(e["OpIndex"], e["What"]) for e in r.json()["Errors"]] == [
        (1, f'key "{k}/exists" exists'),
        (
            2,
            f'failed index check for key "{k}/exists", current modify index {entry["ModifyIndex"]} '
            f"!= {entry['ModifyIndex'] + 7}",
        ),
        (3, f'failed to set key "{k}/exists", index is stale'),
    ]
    assert c.kv.get(f"{k}/new")[1] is None
    assert c.kv.get(f"{k}/exists")[1]["ModifyIndex"] == entry["ModifyIndex"]


def test_lock_check_session_and_unlock_in_transactions_and_a_destroy_releases(registry):
    c = registry.client()
    k = _key()
    sid = c.session.create(lock_delay=0)
    other = c.session.create(lock_delay=0)
    got = c.txn.put(
        [
            {"KV": {"Verb": "lock", "Key": f"{k}/l", "Value": _b64("mine"), "Session": sid}},
            {"KV": {"Verb": "check-session", "Key": f"{k}/l", "Session": sid}},
        ]
    )
    assert [r["KV"]["Session"] for r in got["Results"]] == [sid, sid]
    assert c.kv.get(f"{k}/l")[1]["LockIndex"] == 1
    busy = requests.put(
        f"{registry.url}/v1/txn",
        data=json.dumps([{"KV": {"Verb": "lock", "Key": f"{k}/l", "Value": _b64("x"), "Session": other}}]),
        timeout=5,
    )
    assert busy.status_code == 409
    assert busy.json()["Errors"][0]["What"] == f'failed to lock key "{k}/l", lock is already held'
    ghost = str(uuid.uuid4())
    bad = requests.put(
        f"{registry.url}/v1/txn",
        data=json.dumps([{"KV": {"Verb": "lock", "Key": f"{k}/g", "Value": _b64("x"), "Session": ghost}}]),
        timeout=5,
    )
    assert bad.status_code == 409 and bad.json()["Errors"][0]["What"] == f'invalid session "{ghost}"'
    c.session.destroy(sid)  # the lock taken in a transaction is released like any other
    assert "Session" not in c.kv.get(f"{k}/l")[1]
    assert c.kv.put(f"{k}/l", "theirs", acquire=other) is True
    unlock = c.txn.put([{"KV": {"Verb": "unlock", "Key": f"{k}/l", "Value": _b64("free"), "Session": other}}])
    assert "Session" not in unlock["Results"][0]["KV"]
    assert "Session" not in c.kv.get(f"{k}/l")[1]
    c.session.destroy(other)


def test_delete_tree_then_set_under_it_in_one_transaction(registry):
    c = registry.client()
    k = _key()
    for name in ("a", "b", "c"):
        c.kv.put(f"{k}/{name}", name)
    c.txn.put(
        [
            {"KV": {"Verb": "delete-tree", "Key": f"{k}/"}},
            {"KV": {"Verb": "set", "Key": f"{k}/b", "Value": _b64("again")}},
        ]
    )
    _, entries = c.kv.get(k, recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [(f"{k}/b", b"again")]


def test_transactions_answer_bad_and_oversized_bodies_as_consul_does(registry):
    base = f"{registry.url}/v1/txn"
    k = _key()
    too_many = [{"KV": {"Verb": "set", "Key": f"{k}/{i}", "Value": _b64("x")}} for i in range(129)]
    r = requests.put(base, data=json.dumps(too_many), timeout=5)
    assert r.status_code == 413 and r.text == "Transaction contains too many operations (129 > 128)"
    big = [{"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(b"x" * (512 * 1024 + 1)).decode()}}]
    r = requests.put(base, data=json.dumps(big), timeout=10)
    assert r.status_code == 413 and "too large" in r.text
    for body in (b"{}", b"[", b'[{"KV": {"Verb": "set", "Key": "k", "Value": "not base64!"}}]', b"[NaN]"):
        r = requests.put(base, data=body, timeout=5)
        assert r.status_code == 400 and r.text.startswith(("Failed to parse body", "Request decode failed"))
    r = requests.put(base, data=json.dumps([{"KV": {"Verb": "explode", "Key": k}}]), timeout=5)
    assert r.status_code == 409 and r.json()["Errors"] == [
        {"OpIndex": 0, "What": 'unknown KV verb "explode"'}
    ]
    assert registry.client().kv.get(k, recurse=True)[1] is None


def test_concurrent_transactions_claiming_one_name_let_exactly_one_win(registry):
    name = _key()
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        ops = [
            {"KV": {"Verb": "cas", "Key": f"{name}/claim", "Value": _b64(str(i)), "Index": 0}},
            {"KV": {"Verb": "set", "Key": f"{name}/record/{i}", "Value": _b64("rec")}},
        ]
        barrier.wait()
        r = requests.put(f"{registry.url}/v1/txn", data=json.dumps(ops), timeout=10)
        if r.status_code == 200:
            wins.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    _, entries = registry.client().kv.get(name, recurse=True)
    assert [e["Key"] for e in entries] == [f"{name}/claim", f"{name}/record/{wins[0]}"]


def test_the_shoal_client_claims_a_name_and_writes_its_record_in_one_step(registry):
    name = _key()

    async def main() -> tuple:
        async with aiohttp.ClientSession() as s:
            c = RegistryClient(registry.url, s)
            first = await c.txn(
                [
                    {"Verb": "cas", "Key": f"{name}/name", "Value": "ds-1", "Index": 0},
                    {"Verb": "set", "Key": f"{name}/ds-1", "Value": {"id": "ds-1", "profile": "gold"}},
                ]
            )
            second = await c.txn(
                [
                    {"Verb": "cas", "Key": f"{name}/name", "Value": "ds-2", "Index": 0},
                    {"Verb": "set", "Key": f"{name}/ds-2", "Value": {"id": "ds-2"}},
                ]
            )
            return first, second, await c.get_json(f"{name}/ds-1"), await c.get(f"{name}/ds-2")

    (ok1, res1), (ok2, res2), record, absent = asyncio.run(main())
    assert ok1 is True and [p.key for p in res1] == [f"{name}/name", f"{name}/ds-1"]
    assert res1[0].modify_index == res1[1].modify_index > 0
    assert record == {"id": "ds-1", "profile": "gold"}
    assert ok2 is False and res2 == [
        {"OpIndex": 0, "What": f'failed to set key "{name}/name", index is stale'}
    ]
    assert absent is None
