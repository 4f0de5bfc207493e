"""The kept filter runs (shoal.scheduler.memo) and kept rankings (shoal.scheduler.rank) give exactly what
a whole run gives: the same node, the same survivors after each filter, the same counts per filter and per
reason, the same rejections and scores — over generated clusters and requests, while nodes change, join
and place containers, and while the clock moves on (nodes going stale) or back."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.scheduler.consume import consume
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place
from shoal.scheduler.strategy import binpack, spread
from tests.unit.scheduler.test_filters_agree import NOW, clusters, node_states, requests

GiB = 1 << 30

# a moment of cluster life: a node changed (anything at all), a node joined, the last placement taken,
# the clock moved (seconds; negative: back)
moments = st.lists(
    st.one_of(
        st.tuples(st.just("change"), st.integers(0, 7), node_states("(name)")),
        st.tuples(st.just("join"), st.integers(0, 99), node_states("(name)")),
        st.tuples(st.just("take"), st.just(0), st.none()),
        st.tuples(st.just("clock"), st.sampled_from([0.4, 1.0, 5.0, 29.0, 31.0, -2.0]), st.none()),
    ),
    max_size=8,
)


def _same(spec: ContainerSpec, ix: ClusterIndex, now: float, ttl: float):
    """Kept filter runs and kept rankings (shoal.scheduler.rank.KeptRank, from a request's second decision
    on: hence each strategy asked twice) against whole ones, for both strategies that keep a ranking."""
    for strategy in (binpack, binpack, spread, spread):
        kept = place(spec, ix, now, fact_ttl=ttl, strategy=strategy)
        whole = place(spec, ix, now, fact_ttl=ttl, memo=False, strategy=strategy)
        assert kept == whole, (kept, whole)
    return kept


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=clusters(), specs=st.lists(requests, min_size=1, max_size=3), moments=moments,
       ttl=st.sampled_from([30.0, 5.0]))  # fmt: skip
def test_a_kept_run_patched_for_the_changes_is_a_whole_run(nodes, specs, moments, ttl):
    ix, now = ClusterIndex(nodes), NOW
    last = None
    for spec in specs:
        last = _same(spec, ix, now, ttl)
    for what, arg, node in moments:
        if what == "change" and arg < len(ix):
            ix.upsert(replace(node, name=ix.nodes[arg].name))
        elif what == "join":
            ix.upsert(replace(node, name=f"j{arg}"))
        elif what == "take" and last is not None and last.node is not None:
            ref = ContainerRef(f"t{len(ix.changes)}", f"t{len(ix.changes)}", "busybox")
            ix.upsert(consume(ix.get(last.node), specs[0], ref))
        elif what == "clock":
            now += arg
        for spec in specs:
            last = _same(spec, ix, now, ttl)


def test_many_placements_on_a_big_cluster_each_see_the_last_one():
    """The benchmark's loop, checked: 1,000 alike nodes, each decision after the last one was taken."""
    nodes = [NodeState(name=f"n{i:04d}", gathered_at=NOW, cpus=4, memory=4 * GiB) for i in range(1000)]
    ix = ClusterIndex(nodes)
    spec = ContainerSpec(memory=1 * GiB)
    for k in range(300):
        p = _same(spec, ix, NOW, 30.0)
        assert p.node is not None
        ix.upsert(consume(ix.get(p.node), spec, ContainerRef(f"c{k}", f"c{k}", "busybox")))


def test_a_node_changed_to_facts_about_to_go_stale_goes_stale_in_a_kept_run_too():
    nodes = [NodeState(name=f"n{i}", gathered_at=NOW, cpus=4, memory=4 * GiB) for i in range(20)]
    ix = ClusterIndex(nodes)
    spec = ContainerSpec(memory=1 * GiB)
    _same(spec, ix, NOW, 30.0)  # kept: every node fresh until NOW + 30
    ix.upsert(replace(ix.nodes[3], gathered_at=NOW - 29.5))  # stale from NOW + 0.5
    assert _same(spec, ix, NOW, 30.0).rejected_total == 0
    later = _same(spec, ix, NOW + 1.0, 30.0)
    assert later.rejected_total == 1 and later.by_reason == (("health:stale", 1),)


def test_rankings_a_reseed_replaced_are_not_kept():
    """A small busy cluster reseeds its kept ranking after most decisions (more nodes changed than a patch
    takes): only the rankings still in use stay listed, and so alive."""
    from shoal.scheduler.rank import _RANKED

    nodes = [NodeState(name=f"n{i:03d}", gathered_at=NOW, cpus=64, memory=64 * GiB) for i in range(40)]
    ix = ClusterIndex(nodes)
    spec = ContainerSpec(memory=1 << 20)
    for k in range(30):
        assert _same(spec, ix, NOW, 30.0).node is not None
        for j in range(12):  # more than a patch takes (8, or an eighth of the nodes)
            ix.upsert(consume(ix.nodes[j], spec, ContainerRef(f"c{k}.{j}", f"c{k}.{j}", "busybox")))
    listed = ix.memo[_RANKED]
    assert len(listed) == 2  # binpack's and spread's rankings of the one request, each the newest
    assert all(owner.get(s) is kr for owner, s, kr in listed)
