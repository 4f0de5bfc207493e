"""The pure parts of the manager's container operations: how prunes on every node merge into one engine's
reply, what a link name splits into, a container's own name, and sizes as the docker CLI prints them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import EngineError, NotFound, Unavailable
from shoal.manager.container_ops import CONTAINERS, IMAGES, human_size, link_parts, merged_prune, own_name

_ids = st.lists(st.integers(0, (1 << 256) - 1).map(lambda n: f"{n:064x}"), max_size=4, unique=True)
_replies = st.lists(st.tuples(_ids, st.integers(min_value=0, max_value=1 << 40)), min_size=1, max_size=5)


@given(replies=_replies)
def test_prunes_that_all_answered_concatenate_and_sum(replies):
    answers = [
        (f"node{i}", {"ContainersDeleted": ids or None, "SpaceReclaimed": space})
        for i, (ids, space) in enumerate(replies)
    ]
    got = merged_prune(CONTAINERS, answers)
    every = list(dict.fromkeys(i for ids, _ in replies for i in ids))  # each once, in the nodes' order
    assert got["ContainersDeleted"] == (every or None)  # null when empty, as dockerd answers
    assert got["SpaceReclaimed"] == sum(space for _, space in replies)


def test_an_image_deleted_on_several_nodes_is_listed_once():
    one = {"ImagesDeleted": [{"Untagged": "x:1"}, {"Deleted": "sha256:a"}], "SpaceReclaimed": 10}
    other = {"ImagesDeleted": [{"Deleted": "sha256:a"}, {"Deleted": "sha256:b"}], "SpaceReclaimed": 5}
    got = merged_prune(IMAGES, [("node1", one), ("node2", other)])
    assert got == {
        "ImagesDeleted": [{"Untagged": "x:1"}, {"Deleted": "sha256:a"}, {"Deleted": "sha256:b"}],
        "SpaceReclaimed": 15,
    }


def test_a_filter_every_node_refuses_is_the_engines_own_error():
    bad = [(n, EngineError(400, "Invalid filter 'bogus'", n)) for n in ("node1", "node2", "node3")]
    with pytest.raises(EngineError) as e:
        merged_prune(CONTAINERS, bad)
    assert e.value.status == 400 and e.value.message == "Invalid filter 'bogus'"


def test_different_refusals_name_the_node_of_the_first():
    answers = [("node1", EngineError(409, "a prune operation is already running", "node1")),
               ("node2", Unavailable("the engine on node2 did not answer"))]  # fmt: skip
    with pytest.raises(EngineError) as e:
        merged_prune(CONTAINERS, answers)
    assert e.value.status == 409 and e.value.message == "a prune operation is already running (on node1)"


def test_a_prune_some_nodes_could_not_do_says_what_was_done_and_where_to_run_it_again():
    answers = [
        ("node1", {"ContainersDeleted": ["a" * 64], "SpaceReclaimed": 2000}),
        ("node3", Unavailable("the engine on node3 did not answer POST /containers/prune: timeout")),
    ]
    with pytest.raises(Unavailable) as e:
        merged_prune(CONTAINERS, answers)
    assert e.value.message == (
        "container prune done on node1 (1 deleted, 2kB reclaimed) but not on node3: the engine on node3 did "
        "not answer POST /containers/prune: timeout; run it again once node3 answers"
    )


def test_a_link_is_its_parents_name_and_its_alias():
    assert link_parts("web/db") == ("web", "db")
    assert link_parts("/web/db") == ("web", "db")
    assert link_parts("node2/web/db") == ("node2/web", "db")
    for ref in ("web", "/web/", "//db"):
        with pytest.raises(NotFound):
            link_parts(ref)


def test_a_containers_own_name_is_the_one_that_is_not_a_link():
    assert own_name({"Id": "x", "Names": ["/web/db", "/db"]}) == "db"
    assert own_name({"Id": "x", "Names": ["/db"]}) == "db"
    assert own_name({"Id": "x", "Names": []}) == "x"


def test_sizes_print_as_the_docker_cli_prints_them():
    assert [human_size(n) for n in (0, 999, 1000, 200_000, 1_234_567, 5 * 10**12)] == [
        "0B", "999B", "1kB", "200kB", "1.235MB", "5TB",
    ]  # fmt: skip
