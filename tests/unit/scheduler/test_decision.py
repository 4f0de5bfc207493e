"""A decision as data: per-filter and per-reason counts on any cluster size, each rejection's expression,
and named score components per ranked node."""

from __future__ import annotations

import pytest

from shoal.errors import BadRequest
from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import Component, ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place
from shoal.scheduler.strategy import binpack, by_name, make_random, spread

NOW = 1_000_000.0
GiB = 1 << 30


def node(name: str, **kw) -> NodeState:
    return NodeState(
        name=name,
        gathered_at=kw.pop("gathered_at", NOW - 1),
        facts={"system_overload_10min": kw.pop("overload", 10)},
        cpus=kw.pop("cpus", 2),
        memory=kw.pop("memory", 4 * GiB),
        **kw,
    )


def spec(*constraints: str, **kw) -> ContainerSpec:
    return ContainerSpec(constraints=tuple(parse("constraint", c) for c in constraints), **kw)


def test_counts_per_filter_and_per_reason_on_a_cluster_over_a_hundred_nodes():
    nodes = [node(f"n{i:03d}", overload=83 if i % 3 else 5) for i in range(150)]
    nodes[0] = node("n000", health="critical")
    nodes[3] = node("n003", health="critical", overload=83)
    nodes[6] = node("n006", gathered_at=NOW - 300)
    p = place(spec("system_overload_10min<25"), ClusterIndex(nodes), NOW)
    assert p.node is not None and p.rejected == ()  # no per-node reasons on a big cluster that fits ...
    busy = 100  # n001, n002, n004, ...: every node whose index is not a multiple of 3; and every count
    assert dict(p.filtered) == {"health": 3, "constraint": busy}
    assert dict(p.by_reason) == {
        "constraint:system_overload_10min<25": busy,
        "health:critical": 2,
        "health:stale": 1,
    }
    assert p.rejected_total == busy + 3
    d = p.to_dict()
    assert d["by_reason"]["health:critical"] == 2 and d["filtered"]["constraint"] == busy


def test_each_rejection_names_its_filter_expression_and_detail():
    ix = ClusterIndex([node("node1", overload=83), node("node2", health="critical", gathered_at=NOW - 42)])
    p = place(spec("system_overload_10min<25"), ix, NOW)
    first, second = p.rejected
    assert (first.filter, first.expression, first.detail) == (
        "constraint",
        "constraint:system_overload_10min<25",
        "system_overload_10min=83 (needs <25)",
    )
    assert (second.filter, second.expression, second.reason.key) == ("health", "", "health:critical")
    assert p.to_dict()["rejected"][0] == {
        "node": "node1",
        "filter": "constraint",
        "reason": "system_overload_10min=83 (needs <25)",
        "expression": "constraint:system_overload_10min<25",
    }


def test_to_dict_keeps_every_key_it_had_and_adds_the_components():
    p = place(spec(), ClusterIndex([node("node1"), node("node2")]), NOW)
    d = p.to_dict()
    old = {"node", "candidates", "steps", "rejected", "rejected_total", "scores", "strategy", "expressions"}
    assert old | {"soft_dropped", "filtered", "by_reason"} <= d.keys()
    assert {"node", "score", "components", "ties"} <= d["scores"][0].keys()
    assert d["scores"][0]["components"] == [{"name": "spread", "value": 1.0, "weight": 1.0}]


def test_spread_scores_the_least_reserved_highest_and_keeps_the_components():
    ix = ClusterIndex(
        [
            node("full", reserved_memory=3 * GiB),
            node("half", reserved_memory=2 * GiB),
            node("empty"),
        ]
    )
    p = place(spec(memory=1 * GiB), ix, NOW, strategy=spread)
    assert [s.node for s in p.scores] == ["empty", "half", "full"]
    assert [s.total for s in p.scores] == [0.75, 0.25, 0.0]  # 1 - share with this container
    assert p.scores[1].components == (Component("spread", 0.25, 1.0),)
    assert p.scores[0].ties == (Component("containers", 1.0, 0.0),)


def test_binpack_scores_the_most_reserved_that_fits_highest():
    ix = ClusterIndex(
        [node("empty"), node("half", reserved_memory=2 * GiB), node("full", reserved_memory=4 * GiB)]
    )
    p = place(spec(memory=1 * GiB), ix, NOW, strategy=binpack)
    assert [s.node for s in p.scores] == ["half", "empty"] and p.scores[0].total == 0.75
    assert p.scores[0].components == (Component("binpack", 0.75, 1.0),)


def test_equal_totals_go_to_fewer_containers_then_to_node_position():
    c = ContainerRef("c1", "one")
    ix = ClusterIndex([node("a", containers=(c,)), node("b"), node("c")])
    p = place(spec(), ix, NOW)
    assert [s.node for s in p.scores] == ["b", "c", "a"]
    assert p.scores[2].ties == (Component("containers", 0.5, 0.0),)


def test_random_picks_among_the_candidates_repeatably_with_a_seed():
    ix = ClusterIndex([node(f"n{i}") for i in range(10)] + [node("busy", overload=90)])
    s = spec("system_overload_10min<25")
    picks = [place(s, ix, NOW, strategy=make_random(7)).node for _ in range(3)]
    assert len(set(picks)) == 1 and picks[0] != "busy"
    many = {place(s, ix, NOW, strategy=by_name("random")).node for _ in range(40)}
    assert len(many) > 1 and "busy" not in many
    p = place(s, ix, NOW, strategy=make_random(1))
    assert p.strategy == "random" and all(0 <= sc.total < 1 for sc in p.scores)


def test_an_unknown_strategy_is_a_bad_request_listing_the_choices():
    with pytest.raises(BadRequest, match="unknown strategy 'fastest': choose one of spread, binpack, random"):
        by_name("fastest")


def test_soft_dropped_counts_come_from_the_pass_that_placed():
    ix = ClusterIndex([node("node1"), node("node2", overload=90)])
    p = place(ContainerSpec(affinities=(parse("affinity", "container==~db"),)), ix, NOW)
    assert p.soft_dropped == ("affinity:container==~db",) and p.node == "node1"
    assert p.by_reason == () and p.filtered == () and p.rejected_total == 0
