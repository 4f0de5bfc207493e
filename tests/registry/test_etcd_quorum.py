"""Losing etcd members under the store and under a registry, on a real 3-member etcd (each member in its
own network namespace, tests/etcd.py's `three_etcd` on 10.99.23.0/24): one member down, the raft leader
itself, interrupts nothing; two down, a write is refused within a few seconds (not after RETRY_FOR) with a
message naming quorum and the members that are down, while reads still answer, marked stale; the members
back, writes work again and the watch delivers again."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import StoreUnavailable
from shoal.registry import etcd_server
from shoal.registry.store.etcd import RETRY_FOR, EtcdStore
from shoal.registry.store.quorum import Member, assess, no_quorum_message
from tests.etcd import ThreeEtcd, three_etcd
from tests.registry.conftest import start_registry, stop_registry

SUBNET = "10.99.23.0/24"


@pytest.fixture
def cluster() -> Iterator[ThreeEtcd]:
    with three_etcd(SUBNET) as c:
        yield c


MEMBERS = [
    Member(101, "m0", "10.0.0.1:2379"),
    Member(102, "m1", "10.0.0.2:2379"),
    Member(103, "m2", "10.0.0.3:2379"),
]


@given(
    up=st.sets(st.sampled_from(range(3))),
    named=st.sampled_from([0, 101, 102, 103]),
    size=st.sampled_from([1, 3]),
)
def test_quorum_is_a_majority_of_answering_members_and_only_an_answering_leader_counts(up, named, size):
    members = MEMBERS[:size]
    answers = {members[i].endpoint: (members[i].id, named) for i in up if i < size}
    q = assess([m.endpoint for m in members], members, answers)
    assert q.has_quorum == (len(answers) > size // 2)
    assert q.leader == (named if named and any(named == members[i].id for i in up if i < size) else 0)
    assert {m.name for m in q.down} == {m.name for m in members} - {m.name for m in q.up}
    if not q.has_quorum:
        msg = no_quorum_message(q)
        assert "quorum" in msg and all(m.endpoint in msg for m in q.down)


def test_without_a_member_list_the_configured_endpoints_are_the_cluster():
    q = assess(["a:1", "b:1", "c:1"], None, {"c:1": (7, 7)})
    assert not q.has_quorum and [m.endpoint for m in q.down] == ["a:1", "b:1"] and q.leader == 7
    assert "1 of its 3 members answer and a write needs 2" in no_quorum_message(q)


def _leader(cluster: ThreeEtcd) -> int:
    """The index of the member that is raft leader now (etcd's own status, over its HTTP gateway)."""
    for _ in range(100):
        for i, m in enumerate(cluster.members):
            if cluster.procs[i] is None:
                continue
            st = requests.post(f"{m.client_url}/v3/maintenance/status", data="{}", timeout=5).json()
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return i
        time.sleep(0.1)
    raise AssertionError("no etcd member says it leads")


def _restore(cluster: ThreeEtcd, dead: list[int]) -> None:
    """The dead members again; none is healthy alone, so start them all before waiting."""
    for i in dead:
        cluster.start(i, wait=False)
    for i in dead:
        p = cluster.procs[i]
        assert p is not None
        etcd_server.wait_healthy(cluster.members[i], p, timeout=60)


def test_the_store_rides_out_one_member_refuses_writes_fast_without_quorum_and_reads_stale(cluster):
    async def scenario() -> None:
        store = await EtcdStore.open(cluster.endpoints)
        try:
            await store.put("q/a", b"1")
            first = _leader(cluster)
            await asyncio.to_thread(cluster.kill, first)  # the raft leader: an election follows
            for i in range(10):
                assert await store.update("q/a", lambda e, i=i: str(i).encode()) is not None
                got = await store.get("q/a")
                assert got is not None and got.value == str(i).encode()
            assert not store.stale

            second = next(i for i in range(3) if i != first)
            await asyncio.to_thread(cluster.kill, second)  # two of three gone: no quorum
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable) as refused:
                await store.update("q/a", lambda e: b"lost")
            took = time.monotonic() - t0
            msg = refused.value.message
            assert "quorum" in msg and "1 of its 3 members answer" in msg, msg
            for i in (first, second):
                assert cluster.members[i].endpoint in msg, msg
            assert took < RETRY_FOR, f"refused after {took:.1f}s: should be fast, not RETRY_FOR"
            # a second write, once the store knows, is refused at once too (no new wait)
            with pytest.raises(StoreUnavailable, match="quorum"):
                await store.put("q/b", b"x")

            got = await store.get("q/a")  # a read still answers, from the surviving member's copy
            assert got is not None and got.value == b"9"
            assert store.stale and store.lost_for > 0
            snap = await store.read(["q/a"], ["q/"])
            assert snap.entries["q/a"] is not None and [e.key for e in snap.trees["q/"]] == ["q/a"]
            assert [e.key for e in await store.range("q/")] == ["q/a"]

            await asyncio.to_thread(_restore, cluster, [first, second])
            deadline = time.monotonic() + 60
            while True:  # the members elect a leader again; the store then writes as before
                try:
                    index = await store.put("q/c", b"back")
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "writes did not resume with quorum back"
                    await asyncio.sleep(0.2)
            assert (await store.get("q/c")).value == b"back"  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while store.stale and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert not store.stale and store.lost_for == 0
            # the watch is delivering again: a blocked reader wakes on the next change
            woke = asyncio.create_task(store.wait(["q/"], max(index, store.seen()), 30))
            await asyncio.sleep(0.1)
            changed = await store.update("q/a", lambda e: b"after")
            assert await woke >= changed
        finally:
            await store.close()

    asyncio.run(scenario())


def _put(base: str, key: str, value: bytes) -> requests.Response:
    return requests.put(f"{base}/v1/kv/{key}", data=value, timeout=30)


def test_a_registry_keeps_writing_on_two_members_refuses_clearly_on_one_and_resumes(cluster):
    reg = start_registry(cluster.store_url)
    try:
        assert _put(reg.url, "q/a", b"0").json() is True
        first = _leader(cluster)
        cluster.kill(first)
        for i in range(10):
            r = _put(reg.url, "q/a", str(i).encode())
            assert r.status_code == 200 and r.json() is True, r.text
            assert requests.get(f"{reg.url}/v1/kv/q/a?raw", timeout=30).content == str(i).encode()

        second = next(i for i in range(3) if i != first)
        cluster.kill(second)
        t0 = time.monotonic()
        r = _put(reg.url, "q/a", b"lost")
        took = time.monotonic() - t0
        assert r.status_code == 500
        assert "quorum" in r.text and cluster.members[second].endpoint in r.text, r.text
        assert took < RETRY_FOR, f"refused after {took:.1f}s: should be fast, not RETRY_FOR"
        r = requests.get(f"{reg.url}/v1/kv/q/a?raw", timeout=30)  # reads still answer
        assert r.status_code == 200 and r.content == b"9"
        r = requests.get(f"{reg.url}/v1/kv/q/?recurse", timeout=30)
        assert r.status_code == 200 and [e["Key"] for e in r.json()] == ["q/a"]

        _restore(cluster, [first, second])
        deadline = time.monotonic() + 60
        while _put(reg.url, "q/b", b"back").status_code != 200:
            assert time.monotonic() < deadline, "writes did not resume with quorum back"
            time.sleep(0.2)
        index = requests.get(f"{reg.url}/v1/kv/q/a", timeout=30).headers["X-Consul-Index"]
        # a blocking query wakes on a write made after the return: the watch is back too
        got: list[requests.Response] = []
        t = threading.Thread(
            target=lambda: got.append(requests.get(f"{reg.url}/v1/kv/q/a?index={index}&wait=60s", timeout=90))
        )
        t.start()
        time.sleep(0.3)
        assert _put(reg.url, "q/a", b"after").json() is True
        t.join(20)  # a third of its wait: woken by the write, not answering at its timeout
        assert got, "the blocking query was not woken by the write"
        assert base64.b64decode(got[0].json()[0]["Value"]) == b"after"
        assert int(got[0].headers["X-Consul-Index"]) > int(index)
    finally:
        stop_registry(reg)


def test_reads_without_quorum_say_no_known_leader(cluster):
    reg = start_registry(cluster.store_url)
    try:
        assert _put(reg.url, "q/a", b"0").json() is True
        r = requests.get(f"{reg.url}/v1/kv/q/a", timeout=30)
        assert r.headers["X-Consul-Knownleader"] == "true"
        cluster.kill(0)
        cluster.kill(1)
        assert _put(reg.url, "q/a", b"lost").status_code == 500
        r = requests.get(f"{reg.url}/v1/kv/q/a", timeout=30)
        assert r.status_code == 200
        assert r.headers["X-Consul-Knownleader"] == "false"
    finally:
        stop_registry(reg)
