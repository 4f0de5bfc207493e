"""Placements held across managers (shoal.cluster.holds): what each manager counts of the others'."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.cluster import holds
from shoal.cluster.holds import HOLD_FOR, Hold

NOW = 1_000_000.0

hold_st = st.builds(
    Hold,
    swarm_id=st.text("0123456789abcdef", min_size=4, max_size=8),
    manager=st.sampled_from(["m1", "m2", "m3"]),
    at=st.floats(NOW - 2 * HOLD_FOR, NOW + 2 * HOLD_FOR, allow_nan=False),
    cpus=st.floats(0, 64, allow_nan=False),
    memory=st.integers(0, 1 << 40),
    ports=st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["tcp", "udp"])), max_size=3).map(tuple),
    name=st.text(max_size=10),
    image=st.text(max_size=10),
    labels=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
docs = st.lists(hold_st, max_size=8).map(lambda hs: {h.swarm_id: h for h in hs})


@given(docs)
def test_a_document_reads_back_as_written(held: dict[str, Hold]) -> None:
    assert holds.parse(holds.dump(held)) == held


@given(docs, st.sets(st.text("0123456789abcdef", min_size=4, max_size=8)))
def test_a_manager_counts_only_the_others_standing_holds(held: dict[str, Hold], listed: set[str]) -> None:
    got = holds.counted(held, NOW, "m1", listed)
    for h in got:
        assert h.manager != "m1" and h.swarm_id not in listed and NOW - HOLD_FOR < h.at <= NOW + HOLD_FOR
    # and nothing that stands is left out: a port another manager holds is never free to this one
    assert {h.swarm_id for h in got} == {
        k for k, h in held.items() if h.manager != "m1" and k not in listed and NOW - h.at < HOLD_FOR
        and h.at <= NOW + HOLD_FOR
    }  # fmt: skip


@given(docs, hold_st, st.sets(st.text("0123456789abcdef", min_size=4, max_size=8)))
def test_taking_a_hold_keeps_it_and_drops_what_no_longer_stands(
    held: dict[str, Hold], new: Hold, listed: set[str]
) -> None:
    doc = holds.admit(held, new, NOW, listed)
    assert doc[new.swarm_id] == new
    for k, h in doc.items():
        if k != new.swarm_id:
            assert k not in listed and NOW - h.at < HOLD_FOR
    assert new.swarm_id not in holds.without(doc, new.swarm_id)


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.lists(st.integers()),
        st.dictionaries(st.text(), st.integers()),
    )
)
def test_a_malformed_document_holds_nothing(doc: object) -> None:
    assert holds.parse(doc) == {}
    assert holds.parse({"items": {"a": doc, "b": {"at": "x"}, "c": {"at": NOW, "ports": [[1]]}}}) == {}
