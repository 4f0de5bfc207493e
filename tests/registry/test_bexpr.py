"""`?filter=` (shoal/registry/bexpr.py) as a pure function: any text is a filter or a 400, never anything
else; and what an expression keeps is what go-bexpr's rules say it keeps, for generated expressions over
generated entries."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import BadRequest
from shoal.registry import bexpr

SHAPE = bexpr.HEALTH_ENTRY
WORDS = st.sampled_from(["prod", "dev", "metrics", "r1", "r2", "", "a b", 'q"uote', "ü"])


@given(st.text(max_size=300))
@settings(max_examples=800, deadline=None)
def test_any_text_is_a_filter_or_a_400(text):
    try:
        f = bexpr.compile_filter(text, SHAPE)
    except BadRequest as e:
        assert e.message.startswith(bexpr.PREFIX)
        return
    if f is not None:
        f.keep({"Node": {}, "Service": {}, "Checks": []})  # and it runs on any entry


@pytest.mark.parametrize("depth", [65, 3000])
def test_nesting_past_the_limit_is_a_400_not_a_crash(depth):
    for expr in ("(" * depth + 'Service.ID == "x"' + ")" * depth, "not " * depth + 'Service.ID == "x"'):
        with pytest.raises(BadRequest, match="nested deeper"):
            bexpr.compile_filter(expr, SHAPE)


entries = st.fixed_dictionaries(
    {
        "Node": st.fixed_dictionaries(
            {"Node": WORDS, "Meta": st.dictionaries(st.sampled_from(["rack", "env"]), WORDS, max_size=2)}
        ),
        "Service": st.fixed_dictionaries(
            {
                "ID": WORDS,
                "Tags": st.lists(WORDS, max_size=3),
                "Meta": st.dictionaries(st.sampled_from(["env", "team"]), WORDS, max_size=2),
                "Port": st.integers(0, 3),
                "EnableTagOverride": st.booleans(),
            }
        ),
        "Checks": st.lists(
            st.fixed_dictionaries({"Status": st.sampled_from(["passing", "warning", "critical"])}), max_size=3
        ),
    }
)


def _quote(v: str) -> str:
    return json.dumps(v, ensure_ascii=False)  # a Go double-quoted string for these values


# each leaf: (expression text, reference predicate over an entry)
def _leaves():
    def meta(where: str, key: str, op: str, v: str):
        def ref(e):
            m = e[where]["Meta"]
            if key not in m:
                return op == "!="
            return (m[key] == v) == (op == "==")

        sel = f"{where}.Meta.{key}" if where == "Node" else f'{where}.Meta["{key}"]'
        return f"{sel} {op} {_quote(v)}", ref

    return st.one_of(
        st.builds(
            lambda v, neg: (
                f"Service.Tags {'not ' if neg else ''}contains {_quote(v)}",
                lambda e: (v in e["Service"]["Tags"]) != neg,
            ),
            WORDS,
            st.booleans(),
        ),
        st.builds(
            lambda v: (f"{_quote(v)} in Service.Tags", lambda e: v in e["Service"]["Tags"]),
            WORDS,
        ),
        st.builds(
            meta,
            st.sampled_from(["Node", "Service"]),
            st.sampled_from(["rack", "env", "team"]),
            st.sampled_from(["==", "!="]),
            WORDS,
        ),
        st.builds(
            lambda s: (f"Checks.Status == {_quote(s)}", lambda e: any(c["Status"] == s for c in e["Checks"])),
            st.sampled_from(["passing", "warning", "critical"]),
        ),
        st.builds(
            lambda s: (f"Checks.Status != {_quote(s)}", lambda e: any(c["Status"] != s for c in e["Checks"])),
            st.sampled_from(["passing", "critical"]),
        ),
        st.builds(lambda p: (f"Service.Port == {p}", lambda e: e["Service"]["Port"] == p), st.integers(0, 3)),
        st.builds(
            lambda b: (
                f"Service.EnableTagOverride == {str(b).lower()}",
                lambda e: e["Service"]["EnableTagOverride"] is b,
            ),
            st.booleans(),
        ),
        st.just(("Service.Tags is empty", lambda e: not e["Service"]["Tags"])),
        st.just(("Service.Meta is not empty", lambda e: bool(e["Service"]["Meta"]))),
        st.builds(
            lambda v: (f"Service.ID matches {_quote('^' + v)}", lambda e: e["Service"]["ID"].startswith(v)),
            st.sampled_from(["pr", "d", "r"]),
        ),
    )


def _combine(children):
    return st.one_of(
        st.builds(lambda a: (f"not ({a[0]})", lambda e, f=a[1]: not f(e)), children),
        st.builds(
            lambda a, b: (f"({a[0]}) and ({b[0]})", lambda e, f=a[1], g=b[1]: f(e) and g(e)),
            children,
            children,
        ),
        st.builds(
            lambda a, b: (f"{a[0]} or {b[0]}", lambda e, f=a[1], g=b[1]: f(e) or g(e)), children, children
        ),
    )


@given(st.recursive(_leaves(), _combine, max_leaves=6), st.lists(entries, min_size=1, max_size=5))
@settings(max_examples=300, deadline=None)
def test_what_a_filter_keeps_is_what_go_bexpr_rules_say(expr, sample):
    text, ref = expr
    f = bexpr.compile_filter(text, SHAPE)
    assert f is not None
    for e in sample:
        assert f.keep(e) is bool(ref(e)), (text, e)
