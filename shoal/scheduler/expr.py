"""Scheduling expressions, as classic Swarm wrote them, parsed once at the API edge.

    constraint:KEY==VALUE   constraint:KEY!=VALUE   (and soft: ==~ / !=~)
    constraint:KEY<N  <=N  >N  >=N                  (shoal: numeric, on live facts)
    constraint:KEY=VALUE                            (the seed's single `=`, read as ==)
    affinity:container==NAME  affinity:image==NAME  affinity:LABEL==VALUE

Classic Swarm's meaning is kept (scheduler/filter/expr.go): a `/re/` value is an unanchored,
case-sensitive regular expression, any other value an anchored glob where `*` matches anything;
`==` holds if any candidate string matches, `!=` is its negation (so a node without the key
passes `!=`); keys are case-insensitive and match `^[a-z_][a-z0-9\\-_.]+$`. Numeric comparisons need a
number on both sides; a node whose value is missing or not a number fails them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from shoal.errors import BadRequest

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
    _matcher: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{'~' if self.soft else ''}{self.value}"

    @property
    def is_regex(self) -> bool:
        return len(self.value) >= 2 and self.value.startswith("/") and self.value.endswith("/")

    def matches(self, candidate: str) -> bool:
        """Does one candidate string match the value (glob or regex)? The operator is applied by `holds`."""
        return _cached_match(self._matcher, candidate)

    def holds(self, candidates: tuple[str, ...] | list[str]) -> bool:
        """== / != over the candidate strings of one node (empty: the node lacks the key)."""
        hit = any(_cached_match(self._matcher, c) for c in candidates) if self._matcher else False
        return hit if self.op == EQ else not hit

    def compare(self, value: float) -> bool:
        n = self.number
        return {LT: value < n, LE: value <= n, GT: value > n, GE: value >= n}[self.op]


@lru_cache(maxsize=1 << 16)
def _cached_match(pattern: re.Pattern[str] | None, candidate: str) -> bool:
    """Regex results per distinct value: facts repeat the same few values across thousands of nodes."""
    return pattern is not None and pattern.search(candidate) is not None


def _compile(value: str, text: str) -> re.Pattern[str]:
    if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
        try:
            return re.compile(value[1:-1])
        except re.error as e:
            raise BadRequest(f"invalid regular expression {value} in {text!r}: {e}") from None
    return re.compile("^" + ".*".join(re.escape(part) for part in value.split("*")) + "$")


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
    if op in NUMERIC:
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(f"{full!r}: {op} compares numbers, and {value!r} is not one") from None
        return Expr(kind, key.lower(), op, value, soft, number)
    return Expr(kind, key.lower(), op, value, soft, math.nan, _compile(value, full))


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
