"""RE2 for every user pattern: linear time, Go's regexp semantics, a length cap, and errors that name the
expression; and the one-call forms mean exactly what matching each string alone means: `search_any` over
one node's strings joined by "\\n", and the index's scan of a whole cluster's strings in one text per
block of nodes (`find_joined`), before and after nodes change."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import BadRequest
from shoal.scheduler import pattern
from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place
from shoal.scheduler.values import affinity_strings, candidates

ATOMS = (
    "a", "b", "-", r"\w", r"\W", r"\s", r"\S", r"\d", ".", "[^a]", "[a-b]", r"[\s\S]", r"\b", r"\B", "^", "$",
    r"\n", "(?s:.)", "(?m:^)", "(?m:$)", "(?-m:^)", "(?-m:$)", "[[:space:]]", r"\pC", r"\A", r"\z", r"\x0a",
    "(?i:A)", r"\C",
)  # fmt: skip


@st.composite
def regexes(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5 if depth < 2 else 1))
        if kind <= 1:
            parts.append(draw(st.sampled_from(ATOMS)))
        elif kind == 2:
            parts.append(
                "(" + draw(regexes(depth + 1)) + ")" + draw(st.sampled_from(["", "*", "+", "?", "{2}"]))
            )
        elif kind == 3:
            parts.append("(?:" + draw(regexes(depth + 1)) + "|" + draw(regexes(depth + 1)) + ")")
        elif kind == 4:
            parts.append(draw(st.sampled_from(ATOMS)) + draw(st.sampled_from(["*", "+", "?"])))
        else:
            parts.append(draw(st.sampled_from(["(?m)", "(?s)", "(?i)", "(?U)"])))
    return "".join(parts)


values = st.lists(st.text(alphabet="ab- \tA\n\r0é", max_size=6), max_size=5)


@settings(max_examples=600, deadline=None)
@given(source=regexes(), vals=values)
def test_one_call_over_joined_strings_means_each_string_matched_alone(source, vals):
    try:
        p = pattern.regex(source)
    except pattern.PatternError:
        return
    alone = any(p.search(v) for v in vals)
    assert p.search_any(vals) == alone, (source, vals)
    assert p.search_any(vals, pattern.join(vals)) == alone, (source, vals)


@settings(max_examples=300, deadline=None)
@given(vals=st.lists(st.text(alphabet="a\n\x00é😀\ud800\udc00", max_size=4), max_size=5))
def test_join_is_the_strings_encoded_and_joined_or_none_when_one_holds_a_newline(vals):
    expected = None if any("\n" in v for v in vals) else b"\n".join(pattern.encode(v) for v in vals)
    assert pattern.join(vals) == expected


names = st.text(alphabet="ab- \tA\n\r0é", max_size=4)


@st.composite
def named_nodes(draw: st.DrawFn, count: int, start: int = 0) -> list[NodeState]:
    """Nodes with up to 4 containers each (none, some), named freely ("", "\\n" inside, repeats). Most
    containers' ids are unique and unlike any name, so a cluster mostly has more distinct strings than
    nodes and the index takes its scan of every node's strings; some share a few ids, so a key also
    passes from the index's other way (matching each distinct string) to the scan and back."""
    return [
        NodeState(
            name=f"n{j}",
            id=draw(names),
            gathered_at=1.0,
            containers=tuple(
                ContainerRef(draw(st.sampled_from([f"i{j}.{k}", "i0", "i1"])), draw(names))
                for k in range(draw(st.integers(0, 4)))
            ),
        )
        for j in range(start, start + count)
    ]


def _assert_scan_means_each_string(ix: ClusterIndex, source: str) -> None:
    """Each node's mask is the pattern searched in each of its strings alone (none: `==` fails)."""
    p = pattern.regex(source)
    for kind, key, strings in (
        ("affinity", "container", affinity_strings),
        ("constraint", "node", candidates),
    ):
        for op in ("==", "!="):
            m = ix.expr_mask(parse(kind, f"{key}{op}/{source}/"))
            for j, node in enumerate(ix.nodes):
                hit = any(p.search(v) for v in strings(node, key))
                assert bool(m[j]) == (hit if op == "==" else not hit), (kind, op, node)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    count=st.integers(1, 80),  # up to three blocks of the index's joined texts
    source=regexes(),
    later=regexes(),
)
def test_one_call_over_a_cluster_names_the_nodes_each_string_matched_alone(data, count, source, later):
    try:
        pattern.regex(source), pattern.regex(later)
    except pattern.PatternError:
        return
    ix = ClusterIndex(data.draw(named_nodes(count)))
    _assert_scan_means_each_string(ix, source)
    # nodes change (new names, a container more, none left) and join: the kept masks follow them, and an
    # expression new to the index reads the changed blocks' texts afresh
    for j in data.draw(st.lists(st.integers(0, count - 1), max_size=6)):
        changed = data.draw(named_nodes(1, start=j))[0]
        ix.upsert(data.draw(st.sampled_from([changed, replace(changed, containers=())])))
    for node in data.draw(named_nodes(data.draw(st.integers(0, 3)), start=count)):
        ix.upsert(node)
    _assert_scan_means_each_string(ix, source)
    _assert_scan_means_each_string(ix, later)


def test_a_key_the_index_starts_scanning_as_it_fills_still_reads_every_node():
    """31 nodes offer one string between them (matched value by value, so their strings are not joined),
    then the 32nd, which completes a block of the joined texts, brings enough names that the key is
    scanned: the block's text has every node's strings."""
    same = [
        NodeState(name=f"n{j}", gathered_at=1.0, containers=(ContainerRef("same", "same"),))
        for j in range(31)
    ]
    many = tuple(ContainerRef(f"id{k}", f"name{k}") for k in range(20))
    ix = ClusterIndex([*same, NodeState(name="n31", gathered_at=1.0, containers=many)])
    assert ix.expr_mask(parse("affinity", "container==/^same$/")).tolist() == [True] * 31 + [False]
    assert ix.expr_mask(parse("affinity", "container==/^name1/")).tolist() == [False] * 31 + [True]


def test_the_pathological_pattern_is_answered_on_long_names():
    """A backtracking engine takes 2^40 steps here; RE2 answers at once (pytest's timeout catches a hang)."""
    e = parse("affinity", r"container==/^(\w|\w)+x$/")
    long = "a" * 40
    assert not e.holds([long, long + "y"]) and e.holds([long, long + "x"])
    ix = ClusterIndex(
        [
            NodeState(
                name=f"n{i}",
                gathered_at=1.0,
                containers=tuple(ContainerRef(f"{i}-{k}", long + str(k)) for k in range(30)),
            )
            for i in range(50)
        ]
    )
    p = place(ContainerSpec(affinities=(e,)), ix, 1.0)
    assert p.node is None and f"has no container /^(\\w|\\w)+x$/ (affinity {e})" in p.error()


def test_go_regexp_semantics_not_pythons():
    assert parse("constraint", r"ab==/^\d+$/").holds(["123"])
    assert not parse("constraint", r"ab==/^\d$/").holds(["٣"])  # \d is ASCII in RE2 and Go
    assert not parse("constraint", "ab==/^a$/").holds(["a\n"])  # $ is the end of text, no final-\n leeway


@pytest.mark.parametrize(
    "text,needle",
    [
        ("node==/[/", "invalid regular expression /[/ in 'constraint:node==/[/': missing ]: ["),
        (r"node==/(a)\1/", r"invalid regular expression /(a)\1/ in 'constraint:node==/(a)\\1/'"),
        ("node==/(?=a)/", "invalid regular expression /(?=a)/ in 'constraint:node==/(?=a)/'"),
        ("node==/a{2000}/", "invalid repetition size"),
        ("node==/" + "a" * 513 + "/", "is 513 bytes long; the limit is 512 bytes"),
    ],
)
def test_a_pattern_re2_refuses_is_a_bad_request_naming_the_expression(text, needle):
    with pytest.raises(BadRequest) as info:
        parse("constraint", text)
    assert needle in info.value.message


def test_a_pattern_of_exactly_the_limit_is_accepted():
    assert parse("constraint", "node==/" + "a" * pattern.MAX_PATTERN + "/").holds(["a" * 600])
