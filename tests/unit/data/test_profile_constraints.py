"""A profile's `constraints:` (shoal.data.profiles): checked when the profiles are loaded, and used by the
scheduler's filters to choose a dataset's replica nodes (shoal.manager.moves.choose_replicas)."""

from __future__ import annotations

from functools import partial

import pytest

from shoal.data.model import Profile
from shoal.data.profiles import profiles_from_doc
from shoal.errors import BadRequest
from shoal.manager.moves import choose_replicas
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import NodeState
from shoal.scheduler.place import place

NOW = 1_000_000.0
GiB = 1 << 30


def node(name: str, **labels: str) -> NodeState:
    return NodeState(
        name=name,
        id=f"id-{name}",
        gathered_at=NOW - 1,
        cpus=2,
        memory=4 * GiB,
        labels=labels,
        volume_drivers=frozenset({"local", "shoal"}),
    )


def test_constraints_load_as_the_expressions_constraint_takes():
    profiles, _ = profiles_from_doc(
        {"profiles": {"fast": {"replicas": 1, "constraints": ["storage==ssd", "constraint:region!=eu-1"]}}}
    )
    assert profiles["fast"].constraints == ("storage==ssd", "region!=eu-1")
    assert profiles_from_doc({"profiles": {"plain": {}}})[0]["plain"].constraints == ()


@pytest.mark.parametrize(
    ("constraints", "says"),
    [
        ("storage==ssd", "profile fast: constraints must be a list of expressions"),
        (["storage"], "profile fast: 'constraint:storage' has no operator"),
        (["storage=="], "profile fast: 'constraint:storage==' has no value after =="),
        (["affinity:image==redis"], "profile fast: 'affinity:image==redis' is an affinity"),
    ],
)
def test_a_bad_constraint_stops_the_load_naming_the_profile(constraints, says):
    with pytest.raises(BadRequest) as e:
        profiles_from_doc({"profiles": {"fast": {"replicas": 1, "constraints": constraints}}})
    assert says in e.value.message


def test_replicas_go_only_to_nodes_the_profile_constraints_allow():
    ix = ClusterIndex(
        [
            node("node1", storage="ssd"),
            node("node2", storage="hdd"),
            node("node3", storage="ssd"),
            node("node4"),
        ]
    )
    fast = Profile("fast", replicas=2, constraints=("storage==ssd",))
    chosen, unplaced = choose_replicas("node1", (), 1, fast, partial(place, ix=ix, now=NOW))
    assert (chosen, unplaced) == (["node3"], None)  # never the owner, never a node without an ssd
    # a second replica: no other node has one; the scheduler's reasons come back for the record
    chosen, unplaced = choose_replicas("node1", ("node3",), 1, fast, partial(place, ix=ix, now=NOW))
    assert chosen == ["node3"] and unplaced is not None and unplaced.node is None
    assert "node2 storage=hdd (needs ==ssd)" in [str(r) for r in unplaced.rejected]


def test_without_constraints_any_other_node_that_serves_shoal_volumes_will_do():
    ix = ClusterIndex([node("node1"), node("node2"), node("node3")])
    chosen, unplaced = choose_replicas(
        "node2", (), 2, Profile("gold", replicas=2), partial(place, ix=ix, now=NOW)
    )
    assert sorted(chosen) == ["node1", "node3"] and unplaced is None
