"""The dashboard's document (shoal.manager.overview, pure): what a node's card and a dataset's row say
about draining, down nodes, replicas and a move under way."""

from __future__ import annotations

from shoal.data.model import Dataset
from shoal.data.moves import Move
from shoal.manager.overview import overview
from shoal.scheduler.model import NodeState

NOW = 1_000_000.0
ID = "0b3c8f5e-7d2a-4f7e-9a51-3c2d1e0f9a87"


def _doc(**kw):
    nodes = [NodeState(name=f"node{i}", gathered_at=NOW - 1, health="passing") for i in (1, 2, 3)]
    ds = [Dataset(ID, "db", "gold", "node2", created=NOW - 60)]
    return overview(nodes, {}, {}, ds, {}, [], [], NOW, 10.0, **kw)


def test_without_moves_or_replicas_every_node_is_active_and_a_dataset_has_none():
    doc = _doc()
    assert [(n["health"], n["availability"], n["down_for"]) for n in doc["nodes"]] == [
        ("passing", "active", None)
    ] * 3
    assert doc["datasets"][0]["replicas"] == [] and doc["datasets"][0]["move"] is None


def test_a_draining_node_a_down_node_a_replica_and_a_move_are_shown():
    rows = {ID: [{"node": "node3", "lag": 2.5, "snapshot": "t-1", "error": ""}]}
    move = Move(ID, "db", "node2", "node1", phase="copy", started=NOW - 4, bytes=3 << 20, rate=1e6, pulls=1)
    doc = _doc(replicas=rows, moves={ID: move}, draining=frozenset({"node1"}), down={"node3": NOW - 7})
    by_name = {n["name"]: n for n in doc["nodes"]}
    assert by_name["node1"]["availability"] == "drain" and by_name["node1"]["health"] == "passing"
    assert by_name["node3"]["health"] == "down" and by_name["node3"]["down_for"] == 7.0
    d = doc["datasets"][0]
    assert d["replicas"] == rows[ID]
    assert d["move"] == {
        "source": "node2", "target": "node1", "phase": "copy", "bytes": 3 << 20, "rate": 1_000_000,
        "pulls": 1, "for": 4.0, "by": "shoal volume move",
    }  # fmt: skip
