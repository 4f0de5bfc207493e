"""Scheduling expressions, as classic Swarm wrote them, parsed once at the API edge.

    constraint:KEY==VALUE   constraint:KEY!=VALUE   (and soft: ==~ / !=~)
    constraint:KEY<N  <=N  >N  >=N                  (shoal: numeric, on live facts)
    constraint:KEY=VALUE                            (the seed's single `=`, read as ==)
    affinity:container==NAME  affinity:image==NAME  affinity:LABEL==VALUE

Classic Swarm's meaning is kept (scheduler/filter/expr.go): a `/re/` value is an unanchored,
case-sensitive regular expression, compiled by RE2 as Go's regexp was (linear time, at most
pattern.MAX_PATTERN bytes; see pattern.py), any other value an anchored glob where `*` matches anything;
`==` holds if any candidate string matches, `!=` is its negation (so a node without the key
passes `!=`); keys are case-insensitive and match `^[a-z_][a-z0-9\\-_.]+$`. Numeric comparisons need a
number on both sides; a node whose value is missing or not a number fails them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from shoal.errors import BadRequest, PatternError
from shoal.scheduler import pattern
from shoal.scheduler.pattern import Pattern

EQ, NE, LT, LE, GT, GE = "==", "!=", "<", "<=", ">", ">="
NUMERIC = (LT, LE, GT, GE)
_OPS = ("==", "!=", "<=", ">=", "<", ">", "=")  # longest first; a lone "=" is the seed's "=="
_KEY = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Expr:
    kind: str  # "constraint" | "affinity"
    key: str
    op: str
    value: str
    soft: bool = False
    number: float = math.nan
    _matcher: Pattern | None = field(default=None, compare=False, repr=False)
    _text: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{'~' if self.soft else ''}{self.value}"

    @property
    def text(self) -> str:
        """As the user wrote it, with its prefix: `constraint:system_overload_10min<25`."""
        return self._text or f"{self.kind}:{self}"

    @property
    def pattern(self) -> Pattern | None:
        """The compiled value of == / != (None for numeric comparisons)."""
        return self._matcher

    @property
    def is_literal(self) -> bool:
        """A plain value (no regex, no `*`): it matches exactly itself, so an index lookup answers it."""
        return self._matcher is not None and not self.is_regex and "*" not in self.value

    @property
    def is_regex(self) -> bool:
        return len(self.value) >= 2 and self.value.startswith("/") and self.value.endswith("/")

    def matches(self, candidate: str) -> bool:
        """Does one candidate string match the value (glob or regex)? The operator is applied by `holds`."""
        return _cached_match(self._matcher, candidate)

    def holds(self, candidates: tuple[str, ...] | list[str]) -> bool:
        """== / != over the candidate strings of one node (empty: the node lacks the key)."""
        m = self._matcher
        if m is None or not candidates:
            hit = False
        elif self.is_literal:
            hit = self.value in candidates
        elif len(candidates) <= 3:  # a fact's few spellings: results cached per distinct value
            hit = any(_cached_match(m, c) for c in candidates)
        else:  # a node's container names and ids: one RE2 call over all of them
            hit = m.search_any(candidates)
        return hit if self.op == EQ else not hit

    def compare(self, value: float) -> bool:
        n = self.number
        return {LT: value < n, LE: value <= n, GT: value > n, GE: value >= n}[self.op]


@lru_cache(maxsize=1 << 16)
def _cached_match(matcher: Pattern | None, candidate: str) -> bool:
    """Results per distinct value: facts repeat the same few values across thousands of nodes."""
    return matcher is not None and matcher.search(candidate)


def _compile(value: str, text: str) -> Pattern:
    """The value's matcher; a BadRequest naming the whole expression when RE2 refuses it."""
    is_regex = len(value) >= 2 and value.startswith("/") and value.endswith("/")
    shown = text if len(text) <= 120 else text[:100] + "…"
    if is_regex and len(pattern.encode(value[1:-1])) > pattern.MAX_PATTERN:
        raise BadRequest(
            f"regular expression in {shown!r} is {len(pattern.encode(value[1:-1]))} bytes long; the limit "
            f"is {pattern.MAX_PATTERN} bytes: match less (a prefix such as /^web-/, or a glob such as web-*)"
        )
    try:
        return pattern.regex(value[1:-1]) if is_regex else pattern.glob(value)
    except PatternError as e:
        what = f"regular expression {value}" if is_regex else f"value {value!r}"
        raise BadRequest(
            f"invalid {what} in {shown!r}: {e} (the syntax is RE2's, as Go's regexp: "
            "https://github.com/google/re2/wiki/Syntax)"
        ) from None


def parse(kind: str, text: str) -> Expr:
    """One expression (without its `constraint:`/`affinity:` prefix); BadRequest names what is wrong."""
    full = f"{kind}:{text}"
    found = [(text.find(o), -len(o), o) for o in _OPS if o in text]
    if not found:
        raise BadRequest(
            f"{full!r} has no operator: use KEY==VALUE, KEY!=VALUE, KEY<N, KEY<=N, KEY>N or KEY>=N "
            "(add ~ after the operator for a soft rule, e.g. KEY==~VALUE)"
        )
    pos, _, op = min(found)  # the first operator in the text, the longest at that place
    key, value = text[:pos], text[pos + len(op) :]
    oplen = len(op)
    if op == "=":
        op = EQ
    if not key:
        raise BadRequest(f"{full!r} has no key before {op}: write e.g. {kind}:node=={value or 'node1'}")
    if not _KEY.match(key):
        raise BadRequest(
            f"{full!r}: key {key!r} is invalid (letters, digits, '_', '-', '.'; at least 2 characters, "
            "starting with a letter or '_')"
        )
    soft = value.startswith("~")
    value = value[1:] if soft else value
    if value[:1] in ("<", ">", "=", "!"):
        bad = text[pos : pos + oplen + soft + 1]
        raise BadRequest(
            f"{full!r}: unknown operator {bad!r}; the operators are ==, !=, <, <=, >, >= "
            "(and = for ==), each optionally followed by ~ for a soft rule"
        )
    if value == "":
        raise BadRequest(
            f"{full!r} has no value after {op}: write e.g. {kind}:{key}{op}"
            f"{'25' if op in NUMERIC else 'VALUE'}"
        )
    key = key.lower()
    shown = f"{kind}:{key}{op}{'~' if soft else ''}{value}"
    if op in NUMERIC:
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(f"{full!r}: {op} compares numbers, and {value!r} is not one") from None
        return Expr(kind, key, op, value, soft, number, None, shown)
    return Expr(kind, key, op, value, soft, math.nan, _compile(value, full), shown)


def parse_env(env: list[str] | None) -> tuple[list[str], list[Expr], list[Expr]]:
    """Splits `-e constraint:...`/`-e affinity:...` out of a container's Env, as classic Swarm did."""
    rest, constraints, affinities = [], [], []
    for item in env or []:
        for kind, bucket in (("constraint", constraints), ("affinity", affinities)):
            if item.startswith(kind + ":"):
                bucket.append(parse(kind, item[len(kind) + 1 :]))
                break
        else:
            rest.append(item)
    return rest, constraints, affinities
