"""Leader election over a real etcd (shoal.registry.leader): what a manager sharing the store sees.

Several `Leadership`s on one etcd stand for several manager processes: each has its own store (its own
gRPC channel and watch), as separate processes would. Deadlines are generous (this is a loaded 2-core
machine); nothing here asserts how fast a takeover is, only that it happens and who leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import StoreUnavailable
from shoal.registry.leader import (
    ELECTION,
    Candidate,
    Leadership,
    deadline,
    granted_ttl,
    in_line,
    standing,
)
from shoal.registry.store import open_store
from shoal.registry.store.base import Put
from tests.etcd import single_etcd

WITHIN = 20.0  # seconds: far above a 1 s lease on a loaded machine


# --- the pure part --------------------------------------------------------------------------------------


@st.composite
def lines(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(0, 12))
    indexes = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    return [Candidate(f"{ELECTION}{i:x}", i, {"name": f"m{i}"}) for i in draw(st.permutations(indexes))]


@given(lines())
def test_the_oldest_key_leads_and_each_other_waits_for_the_one_before_it(cands: list[Candidate]) -> None:
    by_index = sorted(cands, key=lambda c: c.create_index)
    states = {c.key: standing(cands, c.key) for c in cands}
    assert [k for k, s in states.items() if s.state == "leading"] == ([by_index[0].key] if cands else [])
    for c in cands:
        s = states[c.key]
        assert s.leader == by_index[0]
        if s.state == "waiting":
            older = [o for o in cands if o.create_index < c.create_index]
            assert s.predecessor == max(older, key=lambda o: o.create_index)
    # no thundering herd: each key is waited on by at most one candidate, and the leader by the second
    waited = [s.predecessor.key for s in states.values() if s.predecessor is not None]
    assert len(waited) == len(set(waited)) == max(0, len(cands) - 1)
    assert in_line(cands) == by_index


@given(lines(), st.integers(1, 10_000))
def test_a_candidate_whose_key_is_gone_must_campaign_again(cands: list[Candidate], i: int) -> None:
    gone = f"{ELECTION}gone{i}"
    s = standing(cands, gone)
    assert s.state == "absent" and s.predecessor is None
    assert s.leader == (min(cands, key=lambda c: c.create_index) if cands else None)


@given(st.floats(0.01, 100.0))
def test_the_deadline_uses_the_ttl_etcd_grants_and_ends_before_it(ttl: float) -> None:
    g = granted_ttl(ttl)
    assert g == max(1, round(ttl)) and g.is_integer()
    assert deadline(10.0, g, g / 5) < 10.0 + g


# --- against etcd ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_endpoint():
    with single_etcd() as ep:
        yield ep


@pytest.fixture
def ep(etcd_endpoint: str) -> str:
    async def wipe() -> None:
        s = await open_store(f"etcd://{etcd_endpoint}")
        await s.delete_prefix("")
        await s.close()

    asyncio.run(wipe())
    return etcd_endpoint


async def until(cond: Callable[[], Awaitable[bool] | bool], what: str, within: float = WITHIN) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = cond()
        if await got if isinstance(got, Awaitable) else got:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within:.0f}s: {what}")


class Group:
    """`n` manager-like processes on one etcd, each with its own store and a leader-only task that
    counts its starts and cancels."""

    def __init__(self, ep: str, n: int) -> None:
        self.ep, self.n = ep, n
        self.nodes: list[Leadership] = []
        self.starts: dict[str, int] = {}
        self.cancels: dict[str, int] = {}
        self.running: set[str] = set()
        self.overlaps: list[set[str]] = []

    async def __aenter__(self) -> Group:
        for i in range(self.n):
            name = f"manager{i + 1}"
            store = await open_store(f"etcd://{self.ep}")
            me = {"name": name, "docker": f"10.0.0.{i + 1}:2376", "consul": f"10.0.0.{i + 1}:8501"}
            ld = Leadership(store, me, ttl=1.0)
            ld.add_task(self._task(name))
            await ld.start()
            self.nodes.append(ld)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ld in self.nodes:
            await ld.close()
            assert ld.store is not None
            await ld.store.close()

    def _task(self, name: str) -> Callable[[], Awaitable[None]]:
        async def lead() -> None:
            self.starts[name] = self.starts.get(name, 0) + 1
            self.running.add(name)
            if len(self.running) > 1:
                self.overlaps.append(set(self.running))
            try:
                await asyncio.Event().wait()
            finally:
                self.running.discard(name)
                self.cancels[name] = self.cancels.get(name, 0) + 1

        return lead

    def leaders(self) -> list[Leadership]:
        return [ld for ld in self.nodes if ld.is_leader]

    async def one_leader(self, among: list[Leadership] | None = None) -> Leadership:
        among = self.nodes if among is None else among
        await until(lambda: len([ld for ld in among if ld.is_leader]) == 1, "exactly one leader")
        (leader,) = [ld for ld in among if ld.is_leader]
        return leader


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn())


@pytest.mark.parametrize("n", [2, 3])
def test_exactly_one_of_several_leads_and_they_agree_on_who_and_on_the_members(ep: str, n: int) -> None:
    async def main() -> None:
        async with Group(ep, n) as g:
            leader = await g.one_leader()
            names = sorted(ld.me["name"] for ld in g.nodes)
            for ld in g.nodes:
                assert await ld.leader() == leader.me
                members = await ld.members()
                assert sorted(m["name"] for m in members) == names
                assert members[0] == leader.me  # leader first
            for _ in range(20):  # and it stays that way while nobody leaves
                assert g.leaders() == [leader]
                await asyncio.sleep(0.05)
            assert g.running == {leader.me["name"]} and g.starts == {leader.me["name"]: 1}

    run(main)


def test_when_the_leader_closes_another_leads_and_the_closed_one_is_no_member(ep: str) -> None:
    async def main() -> None:
        async with Group(ep, 3) as g:
            old = await g.one_leader()
            await old.close()
            assert not old.is_leader
            rest = [ld for ld in g.nodes if ld is not old]
            new = await g.one_leader(rest)
            for ld in rest:
                await until(lambda ld=ld: _leader_is(ld, new), "every survivor names the new leader")
                assert old.me["name"] not in [m["name"] for m in await ld.members()]
            assert g.running == {new.me["name"]}
            assert g.cancels == {old.me["name"]: 1}

    run(main)


async def _leader_is(ld: Leadership, who: Leadership) -> bool:
    return await ld.leader() == who.me


async def _lease_of(ep: str, name: str) -> int:
    s = await open_store(f"etcd://{ep}")
    try:
        (lease,) = [e.lease for e in await s.range(ELECTION) if f'"name": "{name}"' in e.value.decode()]
        return lease
    finally:
        await s.close()


async def _revoke_from_outside(ep: str, lease: int) -> None:
    s = await open_store(f"etcd://{ep}")
    try:
        await s.revoke(lease)
    finally:
        await s.close()


def test_a_leader_whose_lease_is_revoked_steps_down_and_its_task_moves_to_the_new_leader(ep: str) -> None:
    async def main() -> None:
        async with Group(ep, 3) as g:
            old = await g.one_leader()
            name = old.me["name"]
            await _revoke_from_outside(ep, await _lease_of(ep, name))
            await until(lambda: not old.is_leader, "the deposed leader steps down")
            new = await g.one_leader()
            assert new is not old
            await until(lambda: g.running == {new.me["name"]}, "the task runs on the new leader only")
            assert g.starts == {name: 1, new.me["name"]: 1}
            assert g.cancels == {name: 1}
            # the deposed one campaigns again with a new lease: it is a member, behind the others
            await until(lambda: _has_member(new, name), "the deposed leader is back in line")
            assert (await new.members())[-1]["name"] == name
            assert not old.is_leader

    run(main)


async def _has_member(ld: Leadership, name: str) -> bool:
    return name in [m["name"] for m in await ld.members()]


CUT = ("grant", "txn", "read", "range", "get", "wait", "keepalive", "revoke")


@contextlib.contextmanager
def cut_off(store: Any) -> Iterator[None]:
    """This process's store stops hearing from etcd (a partition, or a process stuck past its lease):
    every call it makes hangs until the cut ends, then fails as a lost etcd does, and its watch delivers
    nothing. etcd itself keeps running for everyone else. The stand-in is ours, at the store's own
    edge: etcd cannot be partitioned from one of three clients on one loopback address."""
    cut = asyncio.Event()

    async def silent(*_: object, **__: object) -> Any:
        await cut.wait()
        raise StoreUnavailable("cut off from etcd (test)")

    for name in CUT:
        setattr(store, name, silent)
    store.feed.publish = store.feed.resync = lambda *_: None
    try:
        yield
    finally:
        for name in CUT:
            delattr(store, name)  # the class's methods again
        del store.feed.publish, store.feed.resync
        cut.set()


def test_a_leader_cut_off_from_etcd_steps_down_before_its_successor_starts(ep: str) -> None:
    """A leader that can no longer reach etcd hears nothing, not even that its key expired: it must give
    up on its own deadline, before etcd expires its lease and the next candidate leads, so the
    leader-only task never runs in two places at once."""

    async def main() -> None:
        async with Group(ep, 2) as g:
            old = await g.one_leader()
            with cut_off(old.store):
                new = await g.one_leader([ld for ld in g.nodes if ld is not old])
                assert not old.is_leader
                await until(lambda: g.running == {new.me["name"]}, "the task runs on the new leader")
                assert g.overlaps == [], f"the leader-only task ran on two at once: {g.overlaps}"
                assert g.cancels == {old.me["name"]: 1} and g.starts[new.me["name"]] == 1
            await until(lambda: _has_member(new, old.me["name"]), "the cut-off one rejoins as a follower")
            assert g.leaders() == [new]

    run(main)


def test_a_deposed_leaders_fenced_write_is_refused_and_the_new_leaders_is_not(ep: str) -> None:
    async def main() -> None:
        async with Group(ep, 2) as g:
            old = await g.one_leader()
            fence = old.fence()
            assert fence, "a leader on etcd fences its writes"
            assert old.store is not None
            assert await old.store.txn(fence, [Put("leader-only/x", b"old, while leading")]) is not None
            await _revoke_from_outside(ep, await _lease_of(ep, old.me["name"]))
            new = await g.one_leader([ld for ld in g.nodes if ld is not old])
            # the stale write still carries the fence it had while leading
            assert await old.store.txn(fence, [Put("leader-only/x", b"old, deposed")]) is None
            # and what the deposed one would ask for now is refused too
            assert await old.store.txn(old.fence(), [Put("leader-only/x", b"old, asking now")]) is None
            assert new.store is not None
            assert await new.store.txn(new.fence(), [Put("leader-only/x", b"new")]) is not None
            e = await new.store.get("leader-only/x")
            assert e is not None and e.value == b"new"

    run(main)


def test_a_candidate_that_never_led_cannot_write_fenced(ep: str) -> None:
    async def main() -> None:
        async with Group(ep, 2) as g:
            leader = await g.one_leader()
            (follower,) = [ld for ld in g.nodes if ld is not leader]
            assert follower.store is not None
            assert await follower.store.txn(follower.fence(), [Put("leader-only/y", b"f")]) is None
            assert await follower.store.get("leader-only/y") is None

    run(main)


def test_solo_leads_at_once_and_runs_its_tasks_without_any_store() -> None:
    async def main() -> None:
        me = {"name": "manager", "docker": "127.0.0.1:2376"}
        solo = Leadership.solo(me)
        assert solo.is_leader and solo.fence() == ()
        ran: list[str] = []
        stopped: list[str] = []

        def task(tag: str) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                ran.append(tag)
                try:
                    await asyncio.Event().wait()
                finally:
                    stopped.append(tag)

            return go

        solo.add_task(task("before start"))
        await solo.start()
        solo.add_task(task("after start"))
        await until(lambda: sorted(ran) == ["after start", "before start"], "both tasks run")
        assert await solo.leader() == me and await solo.members() == [me]
        await solo.close()
        assert sorted(stopped) == ["after start", "before start"] and ran.count("before start") == 1

    run(main)
