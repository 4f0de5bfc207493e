"""RE2 for every user pattern: linear time, Go's regexp semantics, a length cap, and errors that name the
expression; and the one-call-per-node form (`search_any` over strings joined by "\\n") means exactly
what matching each string alone means."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import BadRequest
from shoal.scheduler import pattern
from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place

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
