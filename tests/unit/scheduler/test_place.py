import random
import time

import numpy as np

from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex, candidates, number
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place
from shoal.scheduler.strategy import binpack, spread

NOW = 1_000_000.0
GiB = 1 << 30


def node(name, **kw) -> NodeState:
    facts = {
        "architecture": "amd64",
        "virtual": "kvm",
        "is_virtual": True,
        "selinux_enforced": False,
        "system_overload_10min": 10,
        **kw.pop("facts", {}),
    }
    return NodeState(
        name=name,
        id=f"id-{name}",
        gathered_at=kw.pop("gathered_at", NOW - 1),
        facts=facts,
        cpus=kw.pop("cpus", 2),
        memory=kw.pop("memory", 4 * GiB),
        **kw,
    )


def spec(*constraints, affinities=(), **kw) -> ContainerSpec:
    return ContainerSpec(
        constraints=tuple(parse("constraint", c) for c in constraints),
        affinities=tuple(parse("affinity", a) for a in affinities),
        **kw,
    )


def test_constraint_on_a_live_fact_picks_the_node_that_has_it():
    ix = ClusterIndex([node("node1", facts={"system_overload_10min": 83}), node("node2")])
    p = place(spec("system_overload_10min<25"), ix, NOW)
    assert p.node == "node2"
    assert [str(r) for r in p.rejected] == ["node1 system_overload_10min=83 (needs <25)"]


def test_nothing_fits_names_every_node_and_its_first_reason():
    ix = ClusterIndex(
        [
            node("node1", facts={"system_overload_10min": 83}),
            node("node2", health="critical", gathered_at=NOW - 42),
        ]
    )
    p = place(spec("system_overload_10min<25"), ix, NOW)
    assert p.node is None
    err = p.error()
    assert err.startswith(
        "Unable to find a node that satisfies the following conditions\n"
        "[constraint:system_overload_10min<25]\n"
    )
    assert err.endswith(
        "no node fits: node1 system_overload_10min=83 (needs <25); node2 critical (facts 42s old)"
    )


def test_the_seeds_booleans_match_in_either_case():
    ix = ClusterIndex([node("node1")])
    assert place(spec("is_virtual==True", "selinux_enforced=false"), ix, NOW).node == "node1"
    assert place(spec("is_virtual==true"), ix, NOW).node == "node1"


def test_node_constraint_matches_name_or_id_and_labels_count():
    ix = ClusterIndex([node("node1", labels={"disk": "ssd"}), node("node2", labels={"disk": "hdd"})])
    assert place(spec("node==node2"), ix, NOW).node == "node2"
    assert place(spec("node==id-node1"), ix, NOW).node == "node1"
    assert place(spec("disk==ssd"), ix, NOW).node == "node1"
    assert place(spec("disk!=ssd"), ix, NOW).node == "node2"


def test_operatingsystem_offers_both_dockers_and_facters_value():
    n = node(
        "node1",
        labels={"operatingsystem": "Debian GNU/Linux 12 (bookworm)"},
        facts={"operatingsystem": "Debian"},
    )
    ix = ClusterIndex([n])
    assert place(spec("operatingsystem==Debian"), ix, NOW).node == "node1"
    assert place(spec("operatingsystem==Debian GNU*"), ix, NOW).node == "node1"


def test_stale_facts_count_as_absent():
    ix = ClusterIndex([node("node1", gathered_at=NOW - 300), node("node2")])
    p = place(spec(), ix, NOW, fact_ttl=30)
    assert p.node == "node2" and str(p.rejected[0]) == "node1 stale (facts 300s old, TTL 30s)"


def test_soft_affinity_dropped_when_nothing_fits():
    ix = ClusterIndex([node("node1"), node("node2")])
    p = place(spec(affinities=("container==~nosuch",)), ix, NOW)
    assert p.node == "node1" and p.soft_dropped == ("affinity:container==~nosuch",)
    hard = place(spec(affinities=("container==nosuch",)), ix, NOW)
    assert hard.node is None and "has no container nosuch" in hard.error()


def test_affinity_to_a_container_and_to_an_image():
    db = ContainerRef(id="c1", name="db", image="redis:latest")
    ix = ClusterIndex([node("node1"), node("node2", containers=(db,), images=frozenset({"redis:latest"}))])
    assert place(spec(affinities=("container==db",)), ix, NOW).node == "node2"
    assert place(spec(affinities=("image==redis*",)), ix, NOW).node == "node2"
    assert place(spec(affinities=("container!=db",)), ix, NOW).node == "node1"


def test_a_published_port_keeps_a_second_container_off_the_node():
    web = ContainerRef(id="c1", name="web", ports=((80, "tcp"),))
    ix = ClusterIndex([node("node1", containers=(web,)), node("node2")])
    assert place(spec(ports=((80, "tcp"),)), ix, NOW).node == "node2"
    ix2 = ClusterIndex([node("node1", containers=(web,))])
    p = place(spec(ports=((80, "tcp"),)), ix2, NOW)
    assert p.node is None and "port 80/tcp (Host mode)" in p.error()


def test_dependencies_must_share_a_node():
    a, b = ContainerRef(id="a1", name="a"), ContainerRef(id="b1", name="b")
    ix = ClusterIndex([node("node1", containers=(a,)), node("node2", containers=(b,))])
    assert place(spec(depends_on=("a",)), ix, NOW).node == "node1"
    p = place(spec(depends_on=("a", "b")), ix, NOW)
    assert p.node is None and "dependencies are on different nodes" in p.error()


def test_volume_driver_must_be_served():
    ix = ClusterIndex([node("node1"), node("node2", volume_drivers=frozenset({"local", "flocker"}))])
    assert place(spec(volume_driver="flocker"), ix, NOW).node == "node2"


def test_an_existing_volume_pulls_its_container_and_a_new_one_does_not():
    ix = ClusterIndex([node("node1"), node("node2", volumes=frozenset({"data"})), node("node3")])
    assert place(spec(volumes=("data",)), ix, NOW).node == "node2"
    assert place(spec(volumes=("fresh",)), ix, NOW).node in ("node1", "node2", "node3")
    ix.upsert(node("node2", volumes=frozenset({"data"}), health="critical"))
    p = place(spec(volumes=("data",)), ix, NOW)
    assert p.node is None and "does not hold volume data (it lives on node2)" in p.error()


def test_user_networks_must_exist_on_the_node():
    ix = ClusterIndex([node("node1"), node("node2", networks=frozenset({"app_default"}))])
    assert place(spec(networks=("app_default",)), ix, NOW).node == "node2"
    p = place(spec(networks=("nowhere",)), ix, NOW)
    assert p.node is None and "has no network nowhere (docker network create nowhere makes it)" in p.error()


def test_memory_reservations_are_counted():
    ix = ClusterIndex([node("node1", reserved_memory=4 * GiB - 100), node("node2")])
    assert place(spec(memory=512 << 20), ix, NOW).node == "node2"
    p = place(spec(memory=64 * GiB), ix, NOW)
    assert "memory 65536M > free" in p.error()


def _run_nine(strategy, **kw):
    ix = ClusterIndex([node(f"node{i}") for i in (1, 2, 3)])
    landed = []
    for k in range(9):
        p = place(spec(**kw), ix, NOW, strategy=strategy)
        landed.append(p.node)
        n = ix.nodes[ix.pos[p.node]]
        from dataclasses import replace

        ix.upsert(
            replace(
                n,
                containers=(*n.containers, ContainerRef(id=f"x{k}", name=f"x{k}")),
                reserved_memory=n.reserved_memory + kw.get("memory", 0),
            )
        )
    return landed


def test_spread_lands_nine_three_three_three():
    landed = _run_nine(spread)
    assert sorted(landed.count(n) for n in ("node1", "node2", "node3")) == [3, 3, 3]


def test_binpack_fills_one_node_first_by_reservations():
    landed = _run_nine(binpack, memory=1 * GiB)
    assert landed[:4] == ["node1"] * 4 and landed[4:8] == ["node2"] * 4


def _naive(e, n):
    if e.op in ("<", "<=", ">", ">="):
        v = number(n, e.key)
        return v is not None and e.compare(v)
    return e.holds(candidates(n, e.key))


def test_index_masks_agree_with_the_per_node_meaning_on_random_clusters():
    rng = random.Random(7)
    values = ["a", "b", "ab", "10", "25", "83", "true", True, False, 3.5, 100]
    nodes = [
        NodeState(
            name=f"n{i}",
            facts={k: rng.choice(values) for k in rng.sample(["k1", "k2", "k3"], 2)},
            labels={"k3": rng.choice(["a", "x"])} if rng.random() < 0.5 else {},
        )
        for i in range(60)
    ]
    ix = ClusterIndex(nodes)
    exprs = [
        parse("constraint", t)
        for t in (
            "k1==a",
            "k1!=a",
            "k2==/^[0-9]+$/",
            "k3==a*",
            "k1<25",
            "k2>=10",
            "k3!=x",
            "k1==true",
            "k2==True",
            "k9==a",
            "k9!=a",
        )
    ]
    for e in exprs:
        assert list(ix.expr_mask(e)) == [_naive(e, n) for n in nodes], str(e)
    # and after nodes change, the cache follows
    for i in range(0, 60, 3):
        ix.upsert(NodeState(name=f"n{i}", facts={"k1": "a", "k2": 50}))
        nodes[i] = ix.nodes[i]
    for e in exprs:
        assert list(ix.expr_mask(e)) == [_naive(e, n) for n in nodes], str(e)


def test_place_is_fast_enough_on_ten_thousand_nodes():
    """Not the benchmark (benchmarks/scheduler.py is): a guard that the index is used at all."""
    rng = random.Random(1)
    ix = ClusterIndex(
        [
            NodeState(
                name=f"n{i}",
                gathered_at=NOW,
                cpus=8,
                memory=32 * GiB,
                facts={"architecture": "amd64", "system_overload_10min": rng.randrange(100)},
            )
            for i in range(10_000)
        ]
    )
    s = spec("architecture==amd64", "system_overload_10min<25")
    place(s, ix, NOW)
    t = time.perf_counter()
    for _ in range(50):
        assert place(s, ix, NOW).node is not None
    assert (time.perf_counter() - t) / 50 < 0.05
    assert np.asarray(ix.expr_mask(s.constraints[1])).sum() > 0


def test_the_seeds_two_digit_overload_regex_matches_a_quiet_node():
    ix = ClusterIndex(
        [
            node("quiet", facts={"system_overload_10min": 3}),
            node("busy", facts={"system_overload_10min": 83}),
            node("twenty", facts={"system_overload_10min": 20}),
        ]
    )
    p = place(spec("system_overload_10min==/[0-2][0-5]/"), ix, NOW)
    assert p.node in ("quiet", "twenty") and p.rejected_total == 1
    assert "busy system_overload_10min=83" in str(p.rejected[0])


def test_reasons_are_listed_in_node_name_order_whatever_order_the_nodes_arrived_in():
    names = [f"node{i:03d}" for i in range(150)]
    shuffled = random.Random(7).sample(names, len(names))
    p = place(spec("node==nosuch"), ClusterIndex([node(n) for n in shuffled]), NOW)
    assert [r.node for r in p.rejected] == names[:20] and p.rejected_total == 150
    small = place(spec("node==nosuch"), ClusterIndex([node(n) for n in ("node3", "node1", "node2")]), NOW)
    assert [r.node for r in small.rejected] == ["node1", "node2", "node3"]


def test_memory_no_node_has_is_swarms_no_resources_line_then_the_reasons():
    ix = ClusterIndex([node("node1"), node("node2", labels={"disk": "ssd"})])
    err = place(spec(memory=1000 * GiB), ix, NOW).error()
    assert err.splitlines()[0] == "no resources available to schedule container"
    assert "node1 memory 1024000M > free 4096M" in err and "node2 memory" in err
    # a constraint that leaves no node is the filters' line, whatever the memory asked for
    err = place(spec("disk==hdd", memory=1000 * GiB), ix, NOW).error()
    assert err.splitlines()[0] == "Unable to find a node that satisfies the following conditions"


def test_containerslots_caps_the_containers_of_a_node_stopped_ones_too():
    two = tuple(ContainerRef(f"c{i}", f"n{i}", running=i == 0) for i in range(2))
    ix = ClusterIndex(
        [
            node("node1", labels={"containerslots": "2"}, containers=two),
            node("node2", labels={"com.docker.swarm.containerslots": "3"}, containers=two),
            node("node3", labels={"containerslots": "many"}, containers=two),  # not a number: no cap
        ]
    )
    p = place(spec("node!=node3"), ix, NOW)
    assert p.node == "node2"
    assert "node1 has no free container slot (2 containers, containerslots=2)" in [str(r) for r in p.rejected]
    assert place(spec("node==node3"), ix, NOW).node == "node3"


def test_a_host_mode_containers_exposed_port_keeps_a_second_one_off_that_node():
    host = ContainerRef("h1", "web", labels={"shoal.host-ports": '["80/tcp"]'})
    ix = ClusterIndex([node("node1", containers=(host,)), node("node2")])
    assert place(spec(ports=((80, "tcp"),)), ix, NOW).node == "node2"
    err = place(spec("node==node1", ports=((80, "tcp"),)), ix, NOW).error()
    assert "node1 port 80/tcp (Host mode) is in use" in err
    assert place(spec("node==node1", ports=((80, "udp"),)), ix, NOW).node == "node1"
