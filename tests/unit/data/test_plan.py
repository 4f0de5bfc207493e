"""The convergence plan, pure: desired (the registry) × discovered (the pool) → steps. The node is the truth
about data: nothing here may delete a dataset that no explicit deletion request names."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.data.model import Dataset, Deletion, Refused
from shoal.data.plan import TRANSITIONS, Cluster, OnDisk, PoolState, plan

N = "node1"


def _id(n: int) -> str:
    return str(uuid.UUID(int=n))


A, S, C, X = _id(1), _id(2), _id(3), _id(4)


def ds(
    i: str, name: str = "", node: str = N, parent: str = "", kind: str = "dataset", size: int = 0
) -> Dataset:
    if kind == "dataset" and not name:
        name = f"v{i[-4:]}"
    return Dataset(i, name, "gold", node, size, parent, kind, 1.0, name)


def on_disk(*records: Dataset, unrecorded: tuple[str, ...] = ()) -> PoolState:
    got = {d.id: OnDisk(d.id, d.kind == "snapshot", d.size, replace(d, node="")) for d in records}
    got.update({i: OnDisk(i) for i in unrecorded})
    return PoolState(got)


def cluster(*records: Dataset, deletions: tuple[Deletion, ...] = (), claims: bool = True) -> Cluster:
    names = {d.name: d.id for d in records if d.kind == "dataset"} if claims else {}
    return Cluster({d.id: d for d in records}, names, {r.id: r for r in deletions})


def ops(p) -> list[str]:
    return [str(s) for s in p.steps]


# --- the table, row by row -------------------------------------------------------------------------------


def test_every_pair_of_wanted_and_found_has_a_row():
    wanted, found = ("here", "elsewhere", "absent", "delete"), ("absent", "pending", "present", "unrecorded")
    assert {(w, f) for w in wanted for f in (*found, "deleting")} - {("absent", "absent")} <= set(TRANSITIONS)
    assert not [k for k, v in TRANSITIONS.items() if v == "delete" and k[0] != "delete"]


def test_a_record_for_this_node_is_made_parents_before_children():
    recs = [
        ds(C, "clone", parent=S),
        ds(S, parent=A, kind="snapshot"),
        ds(A, "one", size=7),
        ds(X, node="n2"),
    ]
    assert ops(plan(N, cluster(*recs), PoolState({}), {})) == [
        f"create {A}",
        f"snapshot {S} from {A}",
        f"clone {C} from {S}",
    ]


def test_a_converged_node_has_nothing_to_do():
    recs = [ds(A, "one", size=7), ds(S, parent=A, kind="snapshot"), ds(C, "clone", parent=S)]
    p = plan(N, cluster(*recs), on_disk(*recs), {})
    assert p.steps == () and p.reports == ()


def test_a_size_change_is_a_limit_step():
    assert ops(plan(N, cluster(ds(A, size=9)), on_disk(ds(A, size=7)), {})) == [f"limit {A}"]


def test_a_registry_that_lost_everything_is_rebuilt_from_the_pool_and_nothing_deleted():
    recs = [ds(A, "one"), ds(S, parent=A, kind="snapshot"), ds(C, "clone", parent=S)]
    p = plan(N, Cluster({}), on_disk(*recs), {}, now=42.0)
    assert [s.op for s in p.steps] == ["publish"] * 3
    published = {s.id: s.record for s in p.steps}
    assert published[A] == replace(recs[0], recovered=42.0)
    assert all(d.node == N and d.recovered == 42.0 for d in published.values())


def test_lost_name_claims_are_claimed_again():
    p = plan(N, cluster(ds(A, "one"), claims=False), on_disk(ds(A, "one")), {})
    assert [(s.op, s.reason) for s in p.steps] == [("publish", "name")]


def test_a_name_claimed_twice_is_a_conflict_never_a_deletion():
    mine = ds(A, "data")
    theirs = ds(X, "data", node="node2")
    c = Cluster({X: theirs}, {"data": X})
    p = plan(N, c, on_disk(mine), {}, now=3.0)
    [step] = p.steps
    assert step.op == "publish" and step.record.conflict == f"name data is held by dataset {X}"
    assert p.reports == (f"conflict: dataset {A} on {N}: name data is held by dataset {X}",)
    again = Cluster({X: theirs, A: step.record}, {"data": X})
    assert plan(N, again, on_disk(mine), {}).steps == ()  # reported, not re-published every round


def test_a_registry_record_that_differs_from_the_pool_is_corrected_from_the_pool():
    forged = replace(ds(A, "one"), profile="bronze", parent=X)
    p = plan(N, cluster(forged), on_disk(ds(A, "one")), {})
    assert [(s.op, s.reason, s.record.profile, s.record.parent) for s in p.steps] == [
        ("publish", "corrected", "gold", "")
    ]


def test_a_dataset_from_before_records_is_adopted():
    p = plan(N, cluster(ds(A, "one")), on_disk(unrecorded=(A,)), {})
    assert [s.op for s in p.steps] == ["adopt"] and p.steps[0].record.name == "one"
    orphan = plan(N, Cluster({}), on_disk(unrecorded=(A,)), {}, default_profile="silver")
    assert [s.op for s in orphan.steps] == ["adopt", "publish"]
    assert orphan.steps[0].record.profile == "silver"


def test_a_record_on_the_pool_whose_registry_record_is_gone_is_made_and_republished():
    pending = PoolState({}, (f".new-{A}",), pending={A: replace(ds(A, "cut"), node="")})
    assert [s.op for s in plan(N, Cluster({}), pending, {}).steps] == ["discard", "create", "publish"]


def test_a_dataset_the_registry_places_elsewhere_is_reported_and_left():
    p = plan(N, cluster(ds(A, "one", node="node2")), on_disk(ds(A, "one")), {})
    assert p.steps == () and "registry places it on node2" in p.reports[0]


# --- deletion ------------------------------------------------------------------------------------------


def _rm(i: str, node: str = N, refused: str = "") -> Deletion:
    return Deletion(i, node, by="shoal volume rm", refused=refused)


def test_only_an_explicit_request_deletes_and_only_when_nothing_uses_it():
    recs = [ds(A, "one")]
    c = cluster(*recs, deletions=(_rm(A),))
    assert ops(plan(N, c, on_disk(*recs), {})) == [f"delete {A}", f"forget {A}"]
    used = plan(N, c, on_disk(*recs), {A: ("web",)})
    assert [(s.op, s.reason) for s in used.steps] == [
        ("refuse", "dataset one is in use by container(s) web on node1; remove them first (docker rm -f ...)")
    ]
    unknown = plan(N, c, on_disk(*recs), None)  # the engine did not answer: wait, do not guess
    assert unknown.steps == () and "waits" in unknown.reports[0]


def test_a_request_for_another_node_or_already_refused_is_not_acted_on():
    recs = [ds(A, "one")]
    assert plan(N, cluster(*recs, deletions=(_rm(A, node="node2"),)), on_disk(*recs), {}).steps == ()
    assert plan(N, cluster(*recs, deletions=(_rm(A, refused="no"),)), on_disk(*recs), {}).steps == ()


def test_a_dataset_with_snapshots_is_kept_unless_they_go_too_children_first():
    recs = [ds(A, "one"), ds(S, parent=A, kind="snapshot")]
    only_parent = plan(N, cluster(*recs, deletions=(_rm(A),)), on_disk(*recs), {})
    assert [s.op for s in only_parent.steps] == ["refuse"] and "has snapshot" in only_parent.steps[0].reason
    both = plan(N, cluster(*recs, deletions=(_rm(A), _rm(S))), on_disk(*recs), {})
    assert ops(both) == [f"delete {S}", f"forget {S}", f"delete {A}", f"forget {A}"]


def test_a_request_for_what_is_not_on_the_pool_just_forgets_its_records():
    assert ops(plan(N, cluster(ds(A), deletions=(_rm(A),)), PoolState({}), {})) == [f"forget {A}"]


def test_a_deletion_cut_short_is_finished_even_if_the_request_was_lost():
    state = PoolState({}, (f".new-del-{A}",), deleting={A: ds(A, "one")})
    assert ops(plan(N, Cluster({}), state, None)) == [f"delete {A}", f"forget {A}"]


# --- failures, holds, reports ----------------------------------------------------------------------------


def test_a_held_dataset_waits_its_backoff_and_its_children_with_it_the_rest_goes_on():
    recs = [ds(S, parent=A, kind="snapshot"), ds(A, "one"), ds(X, "other")]
    p = plan(N, cluster(*recs), PoolState({}), {}, held={A})
    assert ops(p) == [f"create {X}"]


def test_a_child_whose_parent_is_nowhere_is_still_tried_so_its_failure_is_seen_and_retried():
    p = plan(N, cluster(ds(C, "clone", parent=S)), PoolState({}), {})
    assert ops(p) == [f"clone {C} from {S}"]


def test_refused_records_are_reported_by_the_node_they_name_or_by_every_node():
    c = Cluster({}, refused=(Refused("shoal/datasets/x", "bad", N), Refused("shoal/datasets/y", "bad", "n2")))
    assert plan(N, c, PoolState({}), {}).reports == ("refused record shoal/datasets/x: bad",)
    anon = Cluster({}, refused=(Refused("shoal/datasets/z", "bad"),))
    assert plan("n2", anon, PoolState({}), {}).reports == ("refused record shoal/datasets/z: bad",)


# --- the property the whole design rests on ---------------------------------------------------------------

ids = st.sampled_from([_id(n) for n in range(1, 7)])


NODES = st.sampled_from([N, "node2"])


@st.composite
def records(draw, node=NODES):
    i = draw(ids)
    kind = draw(st.sampled_from(["dataset", "snapshot"]))
    parent = draw(st.one_of(st.just(""), ids.filter(lambda p: p != i)))
    name = "" if kind == "snapshot" else draw(st.sampled_from(["a", "b", "c"]))
    return Dataset(i, name, "gold", draw(node), draw(st.sampled_from([0, 7])), parent, kind, 1.0, name)


@settings(max_examples=400, deadline=None)
@given(
    registry=st.lists(records(), max_size=6),
    disk=st.lists(records(node=st.just("")), max_size=6),
    names=st.dictionaries(st.sampled_from(["a", "b", "c"]), ids, max_size=3),
    users=st.one_of(st.none(), st.dictionaries(ids, st.just(("web",)), max_size=3)),
    held=st.sets(ids, max_size=2),
)
def test_without_a_deletion_request_nothing_is_ever_deleted(registry, disk, names, users, held):
    pool = PoolState({d.id: OnDisk(d.id, d.kind == "snapshot", d.size, d) for d in disk})
    p = plan(N, Cluster({d.id: d for d in registry}, names), pool, users, held)
    assert not [s for s in p.steps if s.op in ("delete", "forget", "discard")]
    for d in disk:  # every dataset on the pool ends up in the registry or in a report
        mentioned = any(s.id == d.id for s in p.steps) or any(d.id in r for r in p.reports)
        registered = d.id in {r.id for r in registry}
        assert mentioned or registered or d.id in held


@settings(max_examples=300, deadline=None)
@given(
    registry=st.lists(records(), max_size=6),
    disk=st.lists(records(node=st.just("")), max_size=6),
    asked=st.lists(st.tuples(ids, st.sampled_from([N, "node2"])), max_size=4),
    users=st.one_of(st.none(), st.dictionaries(ids, st.just(("web",)), max_size=3)),
)
def test_a_deletion_happens_only_for_a_request_naming_this_node_with_no_users(registry, disk, asked, users):
    pool = PoolState({d.id: OnDisk(d.id, d.kind == "snapshot", d.size, d) for d in disk})
    deletions = {i: Deletion(i, node) for i, node in asked}
    p = plan(N, Cluster({d.id: d for d in registry}, {}, deletions), pool, users)
    for s in p.steps:
        if s.op == "delete":
            assert s.id in deletions and deletions[s.id].node == N
            assert users is not None and s.id not in users


@pytest.mark.parametrize("found", ["present", "unrecorded"])
def test_an_empty_registry_publishes_every_dataset_on_the_pool(found):
    state = on_disk(ds(A, "one")) if found == "present" else on_disk(unrecorded=(A,))
    assert "publish" in [s.op for s in plan(N, Cluster({}), state, {}).steps]
