import pytest

from shoal.errors import BadRequest
from shoal.scheduler.expr import parse, parse_env


def test_the_seeds_expressions_parse_with_single_equals_read_as_double():
    _, cs, _ = parse_env(
        [
            "constraint:system_overload_10min==/[0-2][0-5]/",
            "constraint:architecture==x86_64",
            "constraint:virtual=virtualbox",
            "constraint:selinux_enforced=false",
        ]
    )
    assert [(e.key, e.op, e.value) for e in cs] == [
        ("system_overload_10min", "==", "/[0-2][0-5]/"),
        ("architecture", "==", "x86_64"),
        ("virtual", "==", "virtualbox"),
        ("selinux_enforced", "==", "false"),
    ]


def test_env_keeps_ordinary_variables_and_takes_out_expressions():
    rest, cs, aff = parse_env(["A=1", "constraint:node==node1", "affinity:container==db", "B=constraint:x"])
    assert rest == ["A=1", "B=constraint:x"]
    assert [str(e) for e in cs] == ["node==node1"] and [str(e) for e in aff] == ["container==db"]


def test_regex_is_unanchored_and_case_sensitive_glob_is_anchored():
    r = parse("constraint", "ab==/[0-2][0-5]/")
    assert r.holds(["12"]) and r.holds(["125"]) and not r.holds(["83"])
    g = parse("constraint", "ab==ub*t*")
    assert g.holds(["ubuntu"]) and not g.holds(["kubuntu"]) and not g.holds(["Ubuntu"])


def test_not_equal_passes_a_node_without_the_key():
    e = parse("constraint", "disk!=ssd")
    assert e.holds([]) and e.holds(["hdd"]) and not e.holds(["ssd"])


@pytest.mark.parametrize(
    "text,op,number",
    [("load<25", "<", 25), ("mem>=1024", ">=", 1024), ("x_1<=0.5", "<=", 0.5), ("cpu>2", ">", 2)],
)
def test_numeric_operators(text, op, number):
    e = parse("constraint", text)
    assert e.op == op and e.number == number


def test_soft_markers():
    assert parse("affinity", "container==~db").soft
    assert parse("constraint", "disk!=~ssd").soft
    assert not parse("constraint", "disk==ssd").soft


@pytest.mark.parametrize(
    "text,needle",
    [
        ("foo", "has no operator"),
        ("==x", "has no key"),
        ("ab==", "has no value"),
        ("ab=>b", "unknown operator '=>'"),
        ("ab==/[/", "invalid regular expression /[/"),
        ("ab<abc", "is not one"),
        ("a==b", "key 'a' is invalid"),
        ("9ab==b", "key '9ab' is invalid"),
    ],
)
def test_malformed_expressions_name_the_problem(text, needle):
    with pytest.raises(BadRequest, match=needle.replace("[", r"\[").replace("(", r"\(")):
        parse("constraint", text)


def test_affinity_without_a_value_is_refused():
    with pytest.raises(BadRequest, match=r"'affinity:container==' has no value"):
        parse_env(["affinity:container=="])
