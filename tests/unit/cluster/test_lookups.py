"""The cache's container lookups (by id, unique id prefix, name, node/name) answer exactly what a scan of
every container answers, whatever the containers and however their lists changed (hypothesis); /info's
per-engine counts follow each change of a list; and an engine is unreachable only after missing lists in a
row."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.cluster.engine import Engine
from shoal.cluster.state import Cluster, Located
from shoal.cluster.status import RunState
from shoal.errors import Ambiguous, NotFound

NODES = ("n1", "n2", "n3")
hexid = st.text("0123456789abcdef", min_size=3, max_size=6).map(lambda s: s.ljust(8, "0"))
container = st.fixed_dictionaries(
    {
        "Id": hexid,
        "Names": st.lists(st.sampled_from(["web", "db", "a/b", "cache"]), max_size=2).map(
            lambda ns: [f"/{n}" for n in ns]
        ),
        "State": st.sampled_from(["running", "exited", "paused", "created"]),
    }
)


def scan(c: Cluster, ref: str) -> str:
    """The lookup as a scan over every container (what `locate` did before it kept dicts)."""
    node_part, _, name_part = ref.partition("/") if "/" in ref.lstrip("/") else ("", "", ref)
    ref = name_part.lstrip("/") if node_part else ref.lstrip("/")
    exact, prefix = [], []
    for e, ct in c.all_containers():
        if node_part and e.node != node_part:
            continue
        if ct["Id"] == ref or ref in [n.lstrip("/") for n in ct["Names"]]:
            exact.append(Located(e, ct))
        elif ct["Id"].startswith(ref):
            prefix.append(Located(e, ct))
    if exact:
        return f"{exact[0].node}:{exact[0].id}"
    if len(prefix) == 1:
        return f"{prefix[0].node}:{prefix[0].id}"
    return "ambiguous" if prefix else "missing"


def looked_up(c: Cluster, ref: str) -> str:
    try:
        found = c.locate(ref)
    except Ambiguous:
        return "ambiguous"
    except NotFound:
        return "missing"
    return f"{found.node}:{found.id}"


def cluster(lists: list[list[dict[str, Any]]]) -> Cluster:
    c = Cluster("http://127.0.0.1:9")  # never started: only its cache is used
    for node in NODES:
        c.engines[node] = Engine(node, "tcp://127.0.0.1:9", None)  # type: ignore[arg-type]
    for node, docs in zip(NODES, lists, strict=False):
        c._set_containers(c.engines[node], docs)
    return c


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(container, max_size=5, unique_by=lambda d: d["Id"]), min_size=3, max_size=3),
    st.lists(st.lists(container, max_size=5, unique_by=lambda d: d["Id"]), min_size=3, max_size=3),
    st.lists(st.one_of(hexid, hexid.map(lambda s: s[:2]), st.sampled_from(["web", "db", "a/b", "n2/web"]))),
)
def test_lookups_answer_as_a_scan_of_every_container(before, after, refs):
    for lists in (before, after):  # one id on two nodes at once: not a thing engines make
        if len({d["Id"] for lst in lists for d in lst}) < sum(map(len, lists)):
            return
    c = cluster(before)
    for node, docs in zip(NODES, after, strict=True):  # each engine's list replaced, as a resync does
        c._set_containers(c.engines[node], docs)
    if after[0]:  # one removed, as `forget` does after a remove through the manager
        c._set_containers(c.engines["n1"], after[0][1:])
    for ref in [
        *refs,
        *(d["Id"] for lst in before for d in lst),
        *(d["Id"][:4] for lst in after for d in lst),
    ]:
        assert looked_up(c, ref) == scan(c, ref), ref
    for name in ("web", "db", "a/b", "cache", "none"):
        hit = c.name_in_use(name)
        want = [ct for _, ct in c.all_containers() if f"/{name}" in ct["Names"]]
        assert (hit is None) == (not want), name
        assert hit is None or hit in want


def test_empty_and_missing_names_say_so():
    c = cluster([[{"Id": "abc00000", "Names": ["/web"], "State": "running"}]])
    with pytest.raises(NotFound, match="No such container: nothere"):
        c.locate("nothere")
    with pytest.raises(NotFound, match="empty name"):
        c.locate("/")
    assert c.locate("n1/web").id == "abc00000"
    assert c.locate("abc").node == "n1"


def test_info_counts_follow_each_change_of_a_list():
    c = cluster([[{"Id": "a0000000", "Names": ["/x"], "State": "running"}]])
    e = c.engines["n1"]
    assert e.counts() == (1, 1, 0)
    c._set_containers(e, [*e.containers, {"Id": "b0000000", "Names": ["/y"], "State": "paused"}])
    assert e.counts() == (2, 1, 1)
    c._set_containers(e, e.containers[1:])
    assert e.counts() == (1, 0, 1)
    assert c.name_in_use("x") is None and c.name_in_use("y") is not None


def test_a_relist_that_only_moved_status_texts_changes_nothing_the_cache_holds():
    """Every relist of a running container says "Up 5 minutes", then "Up 6 minutes"...: where the
    container's State is known (its STATUS is computed from it), the held entry stays, and the list's
    version with it, so nothing cached of it is made again. Where it is not known, the text is what
    `ps` shows, so the new entry is taken; as it is when anything else changed."""
    up = {"Id": "a0000000", "Names": ["/x"], "State": "running", "Status": "Up 5 minutes"}
    made = {"Id": "b0000000", "Names": ["/y"], "State": "created", "Status": "Created"}
    c = cluster([[up, made]])
    e = c.engines["n1"]
    e.states["a0000000"] = RunState.of({"Status": "running", "Running": True})
    held, version = list(e.containers), e.version
    c._set_containers(e, [{**up, "Status": "Up 6 minutes"}, dict(made)])
    assert e.containers[0] is held[0] and e.containers[1] is held[1] and e.version == version
    c._set_containers(e, [dict(up), {**made, "Status": "Created 1 second ago"}])  # not known: taken
    assert e.containers[1]["Status"] == "Created 1 second ago" and e.version == version + 1
    c._set_containers(e, [{**up, "State": "exited", "Status": "Exited (0) 1 second ago"}, e.containers[1]])
    assert e.containers[0]["State"] == "exited" and e.containers[0]["Status"] == "Exited (0) 1 second ago"
    assert e.version == version + 2


def test_one_missed_list_is_not_yet_an_unreachable_engine():
    """An engine that answered before and then misses one list stays usable; a second miss in a row marks
    it unreachable (critical to the scheduler). Against a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections to it are refused

    async def run() -> list[bool]:
        c = Cluster("http://127.0.0.1:9")
        async with aiohttp.ClientSession() as session:
            e = c.engines["n1"] = Engine("n1", f"tcp://127.0.0.1:{port}", session, reachable=True)
            seen = []
            for _ in range(3):
                await c._sync_engine(e)
                seen.append(e.reachable)
            return seen

    assert asyncio.run(run()) == [True, False, False]
