"""Against a real `shoal registry` (SQLite, loopback) and a simulated engine in this process: what an
engine's event stream tells the manager's cache is not lost when the list it asks for goes unanswered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from shoal import keys
from shoal.cluster.engine import LIST
from shoal.cluster.state import KINDS, RESYNC_FOLLOWED, Cluster, container_name, event_kinds
from shoal.registry.client import Access
from shoal.sim.engines import serve
from tests.registry.conftest import RegistryProc, sqlite_registry


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as r:
        yield r


async def until(what: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.05)


def test_an_event_whose_list_went_unanswered_is_listed_again_not_left_to_the_periodic_resync(registry):
    """A container made on the node behind the manager's back, while the daemon is stuck longer than a
    list may take: its event marks the engine, the list that follows times out. When the daemon answers
    again the cache asks again and shows the container, instead of dropping the change until the periodic
    resync lists the engine whole (RESYNC_FOLLOWED here, 50 s at 1,000 engines)."""

    async def run() -> None:
        sim = await serve(1)
        c = Cluster(registry.url)
        try:
            async with aiohttp.ClientSession() as s:
                reg = Access(registry.url).client(s)
                ((n, url),) = sim.nodes.items()
                await reg.put(keys.node_facts(n), {"node": n, "gathered_at": 1.0, "facts": {"zone": "a"}})
                await reg.put(keys.node_info(n), {"node": n, "id": n, "address": "127.0.0.1", "engine": url})
                await c.start()
                e, node = c.engines[n], sim.engines[n]
                await until(lambda: e.following, 10)
                listed = e.listed_at
                node.hang()
                node.create("made-on-the-node", {"Image": "busybox", "Cmd": ["true"]})
                await until(lambda: e.failures >= 1, LIST + 5)  # the list the event asked for timed out
                node.answer()
                await until(
                    lambda: any(container_name(d) == "made-on-the-node" for d in e.containers),
                    RESYNC_FOLLOWED + 10,
                )
                assert e.listed_at == listed, "seen only when the periodic resync listed the engine whole"
                assert e.reachable
                assert "made-on-the-node" in {r.name for r in c.index.get(n).containers}
        finally:
            await c.close()
            await sim.close()
            async with aiohttp.ClientSession() as s:
                await Access(registry.url).client(s).delete(keys.NODES, recurse=True)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("event", "kinds"),
    [
        ({"Type": "container", "Action": "start"}, {"containers"}),
        ({"Type": "network", "Action": "connect"}, {"containers"}),  # each `docker run` sends one
        ({"Type": "network", "Action": "disconnect"}, {"containers"}),
        ({"Type": "network", "Action": "create"}, {"networks", "containers"}),
        ({"Type": "network", "Action": "destroy"}, {"networks", "containers"}),
        ({"Type": "image", "Action": "tag"}, {"images"}),
        ({"Type": "volume", "Action": "create"}, {"volumes"}),
        ({"Type": "plugin", "Action": "enable"}, set(KINDS)),  # a type we do not know: everything
        ({}, set(KINDS)),
    ],
)
def test_an_event_lists_again_what_it_may_have_changed(event, kinds):
    assert event_kinds(event) == kinds
