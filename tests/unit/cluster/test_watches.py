"""Against a real `shoal registry` (SQLite, loopback): the manager's cache re-reads only the node whose
documents changed (the others keep the very objects they had, so the index does not re-index them), a
health change reaches only its node, and a node whose documents are deleted leaves. And the agent's claim:
a retry after a PUT that was applied but never answered takes back its own claim instead of dying on it,
while another agent's live claim is still refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from shoal import keys
from shoal.agent import publish
from shoal.cluster.state import Cluster
from shoal.errors import Conflict
from shoal.registry.client import Access, RegistryClient
from shoal.scheduler.model import NodeState
from shoal.sim.engines import serve
from tests.registry.conftest import RegistryProc, sqlite_registry


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as r:
        yield r


def facts(node: str, **extra: object) -> dict[str, object]:
    return {"node": node, "gathered_at": 1.0, "facts": {"zone": "a", "processorcount": 2, **extra}}


def info(node: str) -> dict[str, object]:
    return {"node": node, "id": node, "address": "127.0.0.1", "cpus": 2, "memory_mb": 1024}


@contextlib.asynccontextmanager
async def _three_nodes(url: str) -> AsyncIterator[tuple[Cluster, RegistryClient, dict[str, NodeState]]]:
    """Nodes n1-n3 published, a cache started over them, and each node's state as first indexed."""
    c = Cluster(url)
    async with aiohttp.ClientSession() as s:
        reg = Access(url).client(s)
        for n in ("n1", "n2", "n3"):
            await reg.put(keys.node_facts(n), facts(n))
            await reg.put(keys.node_info(n), info(n))
        await c.start()
        try:
            yield c, reg, {n: c.index.get(n) for n in ("n1", "n2", "n3")}
        finally:
            await c.close()
            await reg.delete(keys.NODES, recurse=True)


def test_a_change_on_one_node_reindexes_that_node_only(registry):
    async def run() -> None:
        async with _three_nodes(registry.url) as (c, reg, before):
            assert all(before.values())
            await reg.put(keys.node_facts("n2"), facts("n2", zone="b"))
            await c._load_nodes()
            assert c.index.get("n2").facts["zone"] == "b"
            assert c.index.get("n1") is before["n1"] and c.index.get("n3") is before["n3"]

            for n in ("n1", "n2", "n3"):
                await reg.catalog_register(publish.registration(n, "127.0.0.1", {}, 5, "passing", ""))
            await c._load_health()
            kept, facts3 = c.index.get("n1"), c.index.get("n3").facts
            await reg.catalog_register(publish.registration("n3", "127.0.0.1", {}, 5, "critical", ""))
            await c._load_health()
            assert c.index.get("n3").health == "critical"
            assert c.index.get("n3").facts is facts3  # the same facts: not re-indexed for them
            assert c.index.get("n1") is kept

            await reg.delete(keys.NODES + "n3/", recurse=True)
            await c._load_nodes()
            assert c.index.get("n3") is None and len(c.index) == 2

    asyncio.run(run())


def test_the_watch_reads_only_the_documents_written_since_and_still_sees_a_node_leave(registry):
    """The nodes' watch asks for what changed since its view (?since): one agent's publish is that one
    document, the other nodes keep their very objects; a deletion answers whole, and the node whose
    documents it no longer lists leaves. The watch running in the background, as in the manager."""

    async def until(what) -> None:
        async with asyncio.timeout(10):
            while not what():
                await asyncio.sleep(0.05)

    async def run() -> None:
        async with _three_nodes(registry.url) as (c, reg, before):
            _, _, at = await reg.list_changes(keys.NODES, 0)
            await reg.put(keys.node_facts("n2"), facts("n2", zone="b"))
            entries, whole, _ = await reg.list_changes(keys.NODES, at)
            assert not whole and [e["Key"] for e in entries] == [keys.node_facts("n2")]
            await until(lambda: c.index.get("n2").facts["zone"] == "b")
            assert c.index.get("n1") is before["n1"] and c.index.get("n3") is before["n3"]

            await reg.delete(keys.NODES + "n3/", recurse=True)
            await until(lambda: c.index.get("n3") is None)
            assert sorted(c.index.pos) == ["n1", "n2"]  # rebuilt whole, as when any node leaves
            assert c.index.get("n1").facts == before["n1"].facts
            assert c.index.get("n2").facts["zone"] == "b"

    asyncio.run(run())


def test_new_facts_alone_keep_the_rest_of_the_node_as_a_whole_rebuild_would_make_it(registry):
    """Every publish changes a node's facts and nothing else: the cache keeps the node's containers,
    images and networks as indexed instead of building them again from the engine's list, and the state
    it indexes is the one a whole rebuild from the engine makes, containers and new facts alike."""

    async def run() -> None:
        sim = await serve(2, latency=0.0)
        c = Cluster(registry.url)
        try:
            async with aiohttp.ClientSession() as s:
                reg = Access(registry.url).client(s)
                for n, url in sim.nodes.items():
                    await reg.put(keys.node_facts(n), facts(n))
                    await reg.put(keys.node_info(n), {**info(n), "engine": url})
                    base = url.replace("tcp://", "http://")
                    for i in range(3):
                        body = {"Image": "busybox", "Cmd": ["sleep", "1"], "Labels": {"i": str(i)}}
                        async with s.post(
                            f"{base}/containers/create", params={"name": f"{n}-c{i}"}, json=body
                        ) as r:
                            assert r.status == 201, await r.text()
                await c.start()
                n = next(iter(sim.nodes))
                before = c.index.get(n)
                assert len(before.containers) == 3
                await reg.put(keys.node_facts(n), facts(n, zone="b", load=0.5))
                await c._load_nodes()
                after = c.index.get(n)
                assert after.facts["zone"] == "b" and after.facts["load"] == 0.5
                assert after.containers is before.containers  # kept, not built again
                assert after == c._node_state(n)  # what a whole rebuild from the engine makes
                held = list(c.engines[n].containers)
                await c.resync(n)  # listed again, nothing changed: the very entries held are kept
                assert [d["Id"] for d in c.engines[n].containers] == [d["Id"] for d in held]
                assert all(a is b for a, b in zip(c.engines[n].containers, held, strict=True))
                await reg.put(keys.node_info(n), {**info(n), "engine": sim.nodes[n], "labels": {"x": "y"}})
                await c._load_nodes()
                assert c.index.get(n).labels["x"] == "y"  # the info document: a whole rebuild
        finally:
            await c.close()
            await sim.close()
            async with aiohttp.ClientSession() as s:
                await Access(registry.url).client(s).delete(keys.NODES, recurse=True)

    asyncio.run(run())


def test_a_claim_whose_answer_was_lost_is_taken_back_not_refused(registry):
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            reg = Access(registry.url).client(s)
            me = publish.identity("c1", "127.0.0.1")
            # the first try: session made, the acquire applied, its answer lost (no state file written)
            sid = await reg.session_create("shoal-agent c1", "15s")
            assert await reg.put(keys.node_claim("c1"), me, acquire=sid)
            got = await publish.claim(reg, "c1", "127.0.0.1", None, ttl=publish.session_ttl(5))
            assert got.session_id == sid
            assert (await reg.get(keys.node_claim("c1"))).session == sid

            # our own claim whose session has since ended: taken anew, not refused
            await reg.session_destroy(sid)
            again = await publish.claim(reg, "c1", "127.0.0.1", None)
            assert again.session_id != sid
            assert (await reg.get(keys.node_claim("c1"))).session == again.session_id
            sid = again.session_id

            # another agent (another pid) holding its node: still refused, naming it
            other = {**publish.identity("c2", "10.0.0.9"), "pid": os.getpid() + 1, "host": "elsewhere"}
            sid2 = await reg.session_create("shoal-agent c2", "15s")
            assert await reg.put(keys.node_claim("c2"), other, acquire=sid2)
            with pytest.raises(Conflict, match="already claimed by the agent on elsewhere"):
                await publish.claim(reg, "c2", "127.0.0.1", None)
            await reg.session_destroy(sid)
            await reg.session_destroy(sid2)

    asyncio.run(run())


def test_the_claims_session_outlives_three_intervals():
    assert publish.session_ttl(1) == "10s"  # never under Consul's minimum
    assert publish.session_ttl(5) == "15s"
    assert publish.session_ttl(30) == "90s"
