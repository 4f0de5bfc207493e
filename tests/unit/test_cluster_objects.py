"""Merging each node's networks and volumes into cluster objects (shoal.manager.objects): the copies a
create through the manager made are one object with the manager's id and a bare name, whatever else the
nodes hold and however their lists are ordered; an id survives copies going and coming; references
resolve as a user means them; prunes report what went, once."""

from __future__ import annotations

import json
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.cluster.engine import Engine
from shoal.errors import Ambiguous, BadRequest, EngineError, NotFound
from shoal.manager.networks import by_name, id_filter, in_use
from shoal.manager.objects import SWARM_ID, labelled, merge, partly, pruned, resolve, scattered

NODES = ("node1", "node2", "node3")
MIDS = [secrets.token_hex(32) for _ in range(3)]


def net(name: str, eid: str, mid: str = "") -> dict:
    return {"Name": name, "Id": eid, "Driver": "bridge", "Labels": {SWARM_ID: mid} if mid else {}}


# each node: some copies of up to three cluster-wide networks and some networks of its own
copy_of = st.sampled_from(range(3))
own = st.sampled_from(["bridge", "host", "none", "mine", "x"])
node_list = st.tuples(st.sets(copy_of), st.sets(own))


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, list[dict]]:
    out = {}
    for node in NODES:
        wide, local = draw(node_list)
        objs = [net(f"wide{i}", secrets.token_hex(32), MIDS[i]) for i in sorted(wide)]
        objs += [net(n, secrets.token_hex(32)) for n in sorted(local)]
        out[node] = draw(st.permutations(objs))
    return out


@settings(max_examples=100, deadline=None)
@given(clusters())
def test_every_copy_is_in_one_object_and_manager_made_copies_are_one(per_node):
    objects = merge(per_node)
    copies = [(c.node, c.id) for o in objects for c in o.copies]
    assert sorted(copies) == sorted((n, x["Id"]) for n, xs in per_node.items() for x in xs)
    for o in objects:
        assert len(set(o.nodes)) == len(o.nodes)
        if o.cluster_wide:
            assert o.id in MIDS and o.name == f"wide{MIDS.index(o.id)}" and "/" not in o.name
            held = [n for n, xs in per_node.items() if any(x["Labels"].get(SWARM_ID) == o.id for x in xs)]
            assert list(o.nodes) == held
        else:
            (c,) = o.copies
            assert o.name == f"{c.node}/{c.name}" and o.id == c.id
    assert len({o.name for o in objects}) == len(objects)  # one name each in `docker network ls`


@settings(max_examples=100, deadline=None)
@given(clusters(), st.sampled_from(NODES), st.randoms())
def test_the_manager_id_survives_a_copy_deleted_and_a_copy_made_later(per_node, node, rnd):
    before = {o.id: o for o in merge(per_node) if o.cluster_wide}
    if not before:
        return
    mid = rnd.choice(sorted(before))
    dropped = {
        n: [x for x in xs if not (n == node and x["Labels"].get(SWARM_ID) == mid)]
        for n, xs in per_node.items()
    }
    after = {o.id: o for o in merge(dropped) if o.cluster_wide}
    if before[mid].nodes != (node,):
        assert after[mid].name == before[mid].name and node not in after[mid].nodes
    grown = {**per_node, "node4": [net(before[mid].name, secrets.token_hex(32), mid)]}
    again = {o.id: o for o in merge(grown) if o.cluster_wide}
    assert again[mid].nodes == (*before[mid].nodes, "node4")


def test_references_resolve_as_a_user_means_them():
    a, b, c = (secrets.token_hex(32) for _ in range(3))
    per_node = {
        "node1": [net("app", a, MIDS[0]), net("bridge", "b1" * 32), net("solo", "s1" * 32)],
        "node2": [net("app", b, MIDS[0]), net("bridge", "b2" * 32)],
        "node3": [net("app", c, MIDS[0]), net("bridge", "b3" * 32)],
    }
    objects = merge(per_node)
    app = resolve(objects, "app", NODES)
    assert app is not None and app.id == MIDS[0] and app.nodes == NODES
    assert resolve(objects, MIDS[0], NODES) == app  # the id the create answered
    assert resolve(objects, MIDS[0][:12], NODES) == app  # `docker network ls`'s short id
    assert resolve(objects, b, NODES) == app  # an engine's own id for its copy
    on2 = resolve(objects, "node2/app", NODES)
    assert on2 is not None and on2.id == MIDS[0] and [x.id for x in on2.copies] == [b]
    assert resolve(objects, "solo", NODES).name == "node1/solo"  # type: ignore[union-attr]
    with pytest.raises(Ambiguous, match="node1/bridge, node2/bridge, node3/bridge"):
        resolve(objects, "bridge", NODES)
    assert resolve(objects, "bridge", NODES, node="node3").name == "node3/bridge"  # type: ignore[union-attr]
    assert resolve(objects, "node2/bridge", NODES).name == "node2/bridge"  # type: ignore[union-attr]
    assert resolve(objects, "nosuch", NODES) is None
    assert resolve(objects, "node2/solo", NODES) is None
    with pytest.raises(NotFound, match="no node named 'node9'"):
        resolve(objects, "node9/app", NODES)


def test_a_volume_is_its_name_and_a_cluster_name_beats_a_nodes_own():
    per_node = {
        "node1": [{"Name": "data", "Labels": {SWARM_ID: MIDS[1]}}],
        "node2": [{"Name": "data", "Labels": {SWARM_ID: MIDS[1]}}],
        "node3": [{"Name": "data", "Labels": None}, {"Name": "cache"}],
    }
    objects = merge(per_node, "Name")
    assert sorted(o.name for o in objects) == ["data", "node3/cache", "node3/data"]
    data = resolve(objects, "data", NODES, prefixes=False)
    assert data is not None and data.cluster_wide and data.nodes == ("node1", "node2")
    assert resolve(objects, "node3/data", NODES, prefixes=False).name == "node3/data"  # type: ignore[union-attr]
    assert resolve(objects, "cach", NODES, prefixes=False) is None  # no prefixes of volume names


def test_a_prune_reports_a_cluster_object_once_and_partial_ones_by_node():
    per_node = {
        n: [net("gone", f"{i}" * 64, MIDS[0]), net("kept", f"{i}a" * 32, MIDS[1])]
        for i, n in enumerate(NODES)
    }
    per_node["node2"].append(net("mine", "c" * 64))
    before = merge(per_node)
    deleted = {"node1": ["gone", "kept"], "node2": ["gone", "mine", "late"], "node3": ["gone"]}
    assert pruned(before, deleted) == ["gone", "node1/kept", "node2/mine", "node2/late"]
    assert pruned(before, {}) == []


def test_labels_get_the_manager_id_and_bad_labels_are_refused():
    assert labelled({"Name": "n"}, MIDS[0])["Labels"] == {SWARM_ID: MIDS[0]}
    assert labelled({"Labels": {"a": "b"}}, MIDS[0])["Labels"] == {"a": "b", SWARM_ID: MIDS[0]}
    for bad in ([1], {"a": 5}, "x"):
        with pytest.raises(BadRequest, match="Labels must be a JSON object of strings"):
            labelled({"Labels": bad}, MIDS[0])
    with pytest.raises(BadRequest, match="manager's id"):
        labelled({"Labels": {SWARM_ID: MIDS[1]}}, MIDS[0])


def test_the_id_filter_is_the_managers_and_in_use_names_the_containers():
    params, ids = id_filter({"filters": json.dumps({"id": {"abc": True}, "name": {"x": True}})})
    assert ids == ["abc"] and json.loads(params["filters"]) == {"name": {"x": True}}
    for bad in ("not json", "[1]", "5"):
        with pytest.raises(BadRequest, match="invalid filter"):
            id_filter({"filters": bad})
    assert id_filter({}) == ({}, [])
    (o,) = [o for o in merge({"node2": [net("app", "e" * 64, MIDS[0])]}) if o.cluster_wide]
    cts = {
        "node2": [
            {
                "Id": "f" * 64,
                "Names": ["/web"],
                "NetworkSettings": {"Networks": {"app": {"NetworkID": "e" * 64}}},
            }
        ]
    }
    assert in_use(o, cts) == ["node2: web"]
    assert in_use(o, {"node1": cts["node2"]}) == []


def test_a_create_naming_a_network_by_its_cluster_id_gets_its_name():
    per_node = {
        n: [net("app", f"{i}" * 64, MIDS[0]), net("bridge", f"b{i}" * 32)] for i, n in enumerate(NODES)
    }
    objects = merge(per_node)
    got = by_name(objects, [MIDS[0], MIDS[0][:12], "app", "bridge", "nosuch", "node1/app", "1" * 64])
    assert got == {MIDS[0]: "app", MIDS[0][:12]: "app", "1" * 64: "app"}


def test_a_name_several_nodes_hold_as_their_own_is_scattered():
    per_node = {
        "node1": [{"Name": "data"}, {"Name": "both", "Labels": {SWARM_ID: MIDS[0]}}, {"Name": "solo"}],
        "node2": [{"Name": "data"}, {"Name": "both", "Labels": {SWARM_ID: MIDS[0]}}],
        "node3": [{"Name": "data"}, {"Name": "both"}],
    }
    assert scattered(merge(per_node, "Name")) == {"data": ("node1", "node2", "node3")}


def test_a_prune_some_nodes_could_not_do_names_the_node_and_what_was_done():
    node2 = Engine("node2", "tcp://127.0.0.1:1", None)  # type: ignore[arg-type]  # never called
    refused = [(node2, EngineError(409, "a prune operation is already running", "node2"))]
    err = partly(refused, "volume prune", ["data", "node1/cache"])
    assert isinstance(err, EngineError) and err.status == 409
    assert err.message == (
        "a prune operation is already running (on node2); volume prune did run on the other nodes and "
        "deleted data, node1/cache"
    )
    assert partly(refused, "volume prune", []).message == "a prune operation is already running (on node2)"


def test_a_create_naming_a_network_by_its_manager_id_names_it_as_every_node_does():
    from shoal.manager.spec import user_networks, with_network_names

    body = {
        "HostConfig": {"NetworkMode": "ab12"},
        "NetworkingConfig": {"EndpointsConfig": {"ab12": {"Aliases": ["web"]}, "other": {}}},
    }
    out = with_network_names(body, {"ab12": "backend"})
    assert out["HostConfig"]["NetworkMode"] == "backend"
    assert out["NetworkingConfig"]["EndpointsConfig"] == {"backend": {"Aliases": ["web"]}, "other": {}}
    assert user_networks(out) == ["backend", "other"]
    assert body["HostConfig"]["NetworkMode"] == "ab12"  # the caller's body is left as it was
    assert with_network_names(body, {}) is body
