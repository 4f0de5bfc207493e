"""The dashboard's document (shoal.manager.overview, pure): what a node's card and a dataset's row say
about draining, down nodes, replicas and a move under way; one page of cards (problems first, a name
filter) under a summary of every node; which checks it lists; the page parameters a request may send."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api.docker.errors import docker_reply
from shoal.data.model import Dataset
from shoal.data.moves import Move
from shoal.errors import BadRequest
from shoal.manager.overview import FAILING_CHECKS, MAX_PER_PAGE, PER_PAGE, Page, overview, page_query
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


# --- one page of cards, a summary of every node ---------------------------------------------------------


def _node(name: str, health: str = "passing", age: float = 1.0) -> NodeState:
    return NodeState(name=name, address=f"10.0.0.{len(name)}", gathered_at=NOW - age, health=health)


def _containers(node: str, n: int, running: int) -> list[dict]:
    return [
        {"Id": f"{node}-{k:02d}".ljust(64, "0"), "Names": [f"/{node}-c{k}"], "Image": "busybox",
         "State": "running" if k < running else "exited",
         "Status": "Up 1 second" if k < running else "Exited (0)"}
        for k in range(n)
    ]  # fmt: skip


def _cluster(n: int = 120) -> list[NodeState]:
    return [_node(f"web{i:03d}") for i in range(n)]


def test_the_first_page_holds_per_page_cards_and_says_how_many_pages_there_are():
    nodes = _cluster(120)
    doc = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, page=Page(per_page=50))
    assert (doc["page"], doc["per_page"], doc["pages"], doc["total_nodes"]) == (1, 50, 3, 120)
    assert [n["name"] for n in doc["nodes"]] == [f"web{i:03d}" for i in range(50)]
    last = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, page=Page(page=3, per_page=50))
    assert [n["name"] for n in last["nodes"]] == [f"web{i:03d}" for i in range(100, 120)]


def test_a_page_past_the_last_answers_the_last_page():
    doc = overview(_cluster(120), {}, {}, [], {}, [], [], NOW, 10.0, page=Page(page=9, per_page=50))
    assert doc["page"] == 3 and len(doc["nodes"]) == 20


def test_no_nodes_is_one_empty_page():
    doc = overview([], {}, {}, [], {}, [], [], NOW, 10.0)
    assert (doc["page"], doc["pages"], doc["total_nodes"], doc["nodes"]) == (1, 1, 0, [])


def test_q_keeps_the_nodes_whose_name_holds_it_in_any_case_and_the_summary_still_counts_every_node():
    nodes = [*_cluster(30), _node("db1"), _node("DB2"), _node("cache-db")]
    doc = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, page=Page(q="db"))
    assert [n["name"] for n in doc["nodes"]] == ["DB2", "cache-db", "db1"]
    assert (doc["total_nodes"], doc["pages"], doc["q"]) == (3, 1, "db")
    assert doc["summary"]["nodes"] == 33
    none = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, page=Page(q="nothing-like-it"))
    assert (none["nodes"], none["total_nodes"], none["pages"]) == ([], 0, 1)


def test_nodes_needing_attention_come_first_down_critical_stale_then_draining():
    nodes = [
        _node("a-fine"), _node("b-critical", "critical"), _node("c-stale", age=60), _node("d-down"),
        _node("e-drain"), _node("f-warning", "warning"), _node("g-fine"),
    ]  # fmt: skip
    doc = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, draining=frozenset({"e-drain"}),
                   down={"d-down": NOW - 5}, page=Page(per_page=4))  # fmt: skip
    assert [(n["name"], n["health"]) for n in doc["nodes"]] == [
        ("d-down", "down"), ("b-critical", "critical"), ("c-stale", "stale"), ("f-warning", "warning"),
    ]  # fmt: skip
    rest = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, draining=frozenset({"e-drain"}),
                    down={"d-down": NOW - 5}, page=Page(page=2, per_page=4))  # fmt: skip
    assert [(n["name"], n["availability"]) for n in rest["nodes"]] == [
        ("e-drain", "drain"), ("a-fine", "active"), ("g-fine", "active"),
    ]  # fmt: skip


def test_the_summary_counts_every_node_by_health_draining_and_their_containers():
    nodes = [_node("n1"), _node("n2", "critical"), _node("n3", age=60), _node("n4"), _node("n5")]
    containers = {"n1": _containers("n1", 4, 3), "n2": _containers("n2", 2, 0), "n5": _containers("n5", 1, 1)}
    kw = dict(draining=frozenset({"n4", "n5"}), down={"n4": NOW - 3}, page=Page(per_page=1))
    doc = overview(nodes, containers, {}, [], {}, [], [], NOW, 10.0, **kw)
    want = {
        "nodes": 5,
        "health": {"passing": 2, "warning": 0, "critical": 1, "unknown": 0, "stale": 1, "down": 1},
        "draining": 2, "containers": 7, "running": 4,
    }  # fmt: skip
    assert doc["summary"] == want
    # the engines' own counts (what a manager hands over) say the same without a row being read
    counts = {"n1": (4, 3, 0), "n2": (2, 0, 0), "n5": (1, 1, 0)}
    assert overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, counts=counts, **kw)["summary"] == want


def test_only_the_pages_nodes_get_their_container_rows_with_the_status_from_the_state():
    nodes = _cluster(4)
    containers = {n.name: _containers(n.name, 3, 3) for n in nodes}
    cid = containers["web000"][0]["Id"]
    states = {"web000": {cid: {"Running": True, "StartedAt": "1970-01-12T13:46:20Z"}}}  # NOW - 20 s
    doc = overview(nodes, containers, states, [], {}, [], [], NOW, 10.0, page=Page(per_page=2))
    assert [len(n["containers"]) for n in doc["nodes"]] == [3, 3]
    first = doc["nodes"][0]["containers"][0]
    assert first == {"id": cid[:12], "name": "web000-c0", "image": "busybox", "state": "running",
                     "status": "Up 20 seconds"}  # fmt: skip
    assert doc["nodes"][0]["containers"][1]["status"] == "Up 1 second"  # no state known: the list's text
    assert doc["summary"]["containers"] == 12


def _check(node: str, status: str, name: str = "shoal agent publishing facts") -> dict:
    return {"Node": node, "CheckID": f"shoal-agent:{node}", "Name": name, "Status": status,
            "ServiceName": "", "Output": "", "Notes": "not shown"}  # fmt: skip


def test_checks_are_the_pages_nodes_and_every_failing_one_failing_first_and_all_are_counted():
    nodes = _cluster(6)
    checks = [_check(n.name, "passing") for n in nodes] + [_check("web005", "critical", "web")]
    checks.append(_check("web004", "warning"))
    doc = overview(nodes, {}, {}, [], {}, checks, [], NOW, 10.0, page=Page(per_page=2))
    assert [(c["Node"], c["Status"]) for c in doc["checks"]] == [
        ("web005", "critical"), ("web004", "warning"), ("web000", "passing"), ("web001", "passing"),
    ]  # fmt: skip
    assert set(doc["checks"][0]) == {"Node", "CheckID", "Name", "Status", "ServiceName", "Output"}
    assert doc["check_counts"] == {"passing": 6, "warning": 1, "critical": 1}
    assert doc["checks_left_off"] == 0


def test_failing_checks_of_nodes_off_the_page_stop_at_the_cap_and_the_rest_are_counted():
    nodes = _cluster(FAILING_CHECKS + 30)
    checks = [_check(n.name, "critical") for n in nodes]
    doc = overview(nodes, {}, {}, [], {}, checks, [], NOW, 10.0, page=Page(per_page=10))
    # the page's ten critical nodes' checks are always there, and FAILING_CHECKS of the others
    assert len(doc["checks"]) == 10 + FAILING_CHECKS
    assert {n["name"] for n in doc["nodes"]} <= {c["Node"] for c in doc["checks"]}
    assert doc["checks_left_off"] == 20 and doc["check_counts"]["critical"] == FAILING_CHECKS + 30


def test_the_page_parameters_as_the_dashboard_sends_them():
    assert page_query({}) == Page(1, PER_PAGE, "")
    assert page_query({"page": "3", "per_page": "200", "q": " web "}) == Page(3, MAX_PER_PAGE, "web")
    assert page_query({"page": "", "per_page": ""}) == Page()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"page": "0"}, "invalid page '0': a page number from 1"),
        ({"page": "-2"}, "invalid page '-2': a page number from 1"),
        ({"page": "two"}, "invalid page 'two': a page number from 1"),
        ({"per_page": "abc"}, "invalid per_page 'abc': a number of nodes from 1 to 200"),
        ({"per_page": "1000"}, "invalid per_page '1000': a number of nodes from 1 to 200"),
        ({"per_page": "0"}, "invalid per_page '0': a number of nodes from 1 to 200"),
        ({"q": "x" * 300}, "invalid q (300 characters): part of a node name, at most 256 characters"),
    ],
)
def test_a_bad_page_parameter_is_a_400_in_dockers_error_form_naming_it(query, message):
    with pytest.raises(BadRequest) as err:
        page_query(query)
    reply = docker_reply(err.value)  # what the Docker API and the join listener answer
    assert reply.status == 400 and json.loads(reply.body) == {"message": message}


HEALTHS = ["passing", "warning", "critical", "unknown"]


@settings(max_examples=200, deadline=None)
@given(
    names=st.sets(st.text("abcdxyz0123456789-", min_size=1, max_size=6), max_size=60),
    healths=st.lists(
        st.sampled_from(["passing", "warning", "critical", "unknown"]), min_size=60, max_size=60
    ),
    stale=st.sets(st.integers(0, 59), max_size=10),
    per_page=st.integers(1, 25),
    q=st.sampled_from(["", "a", "x1", "-", "zz"]),
)
def test_the_pages_partition_the_matching_nodes(names, healths, stale, per_page, q):
    """Every node whose name holds q is on exactly one page, and no page holds more than per_page."""
    nodes = [_node(name, healths[i], 60 if i in stale else 1) for i, name in enumerate(sorted(names))]
    matching = {n.name for n in nodes if q in n.name}
    first = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, page=Page(1, per_page, q))
    seen: list[str] = []
    for p in range(1, first["pages"] + 1):
        doc = overview(nodes, {}, {}, [], {}, [], [], NOW, 10.0, page=Page(p, per_page, q))
        assert doc["page"] == p and doc["pages"] == first["pages"] and doc["total_nodes"] == len(matching)
        assert 0 < len(doc["nodes"]) <= per_page or not matching
        seen += [n["name"] for n in doc["nodes"]]
    assert sorted(seen) == sorted(matching) and len(seen) == len(set(seen))
