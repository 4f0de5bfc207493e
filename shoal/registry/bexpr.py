"""Consul's `?filter=` expressions (hashicorp/go-bexpr), parsed by hand and evaluated on the JSON entries
an endpoint answers.

The grammar is go-bexpr's (grammar/grammar.peg): `or` over `and` over `not`, parentheses, and matches

    <Selector> == <Value>        <Selector> != <Value>
    <Selector> contains <Value>  <Selector> not contains <Value>
    <Value> in <Selector>        <Value> not in <Selector>
    <Selector> is empty          <Selector> is not empty
    <Selector> matches <Value>   <Selector> not matches <Value>     (RE2: linear time on any input)

with selectors `Service.Tags`, `Service.Meta.env`, `Service.Meta["env"]`, and values quoted
("...", `...`), numbers or bare words. Its semantics are go-bexpr's evaluate.go: a list met inside a
selector matches when any element does (`Checks.Status == "passing"`); a missing map key makes `==`,
`contains`, `is not empty` and `matches` false and their negations true; `contains` on a list is
element equality, on a map key presence, on a string a substring.

Selectors are checked against the endpoint's shape before anything runs, so a typo is a 400 naming the
selector and what is there, never a silent empty answer. What go-bexpr has and this does not (JSON
pointer selectors, inline value lists, numeric indexes) is a 400 that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2

from shoal.errors import BadRequest

MAX_LENGTH = 16 * 1024
MAX_DEPTH = 64
PREFIX = "Failed to create boolean expression evaluator: "


# --- shapes: what an endpoint's entries hold, as go-bexpr's field configurations would say ------------


class Str:
    pass


class Int:
    pass


class Bool:
    pass


@dataclass(frozen=True)
class Struct:
    fields: dict[str, Any]


@dataclass(frozen=True)
class Map:
    value: Any


@dataclass(frozen=True)
class List:
    item: Any


STR, INT, BOOL = Str(), Int(), Bool()
_SERVICE_ADDRESS = Struct({"Address": STR, "Port": INT})
_WEIGHTS = Struct({"Passing": INT, "Warning": INT})
NODE = Struct(
    {
        "ID": STR,
        "Node": STR,
        "Address": STR,
        "Datacenter": STR,
        "TaggedAddresses": Map(STR),
        "Meta": Map(STR),
    }
)
SERVICE = Struct(
    {
        "ID": STR,
        "Service": STR,
        "Tags": List(STR),
        "Address": STR,
        "TaggedAddresses": Map(_SERVICE_ADDRESS),
        "Meta": Map(STR),
        "Port": INT,
        "Weights": _WEIGHTS,
        "EnableTagOverride": BOOL,
    }
)
AGENT_SERVICE = Struct({**SERVICE.fields, "Datacenter": STR})
CHECK = Struct(
    {
        "Node": STR,
        "CheckID": STR,
        "Name": STR,
        "Status": STR,
        "Notes": STR,
        "Output": STR,
        "ServiceID": STR,
        "ServiceName": STR,
        "ServiceTags": List(STR),
        "Type": STR,
        "Interval": STR,
        "Timeout": STR,
        "Namespace": STR,
    }
)
HEALTH_ENTRY = Struct({"Node": NODE, "Service": SERVICE, "Checks": List(CHECK)})
CATALOG_SERVICE = Struct(
    {
        "ID": STR,
        "Node": STR,
        "Address": STR,
        "Datacenter": STR,
        "TaggedAddresses": Map(STR),
        "NodeMeta": Map(STR),
        "ServiceKind": STR,
        "ServiceID": STR,
        "ServiceName": STR,
        "ServiceTags": List(STR),
        "ServiceAddress": STR,
        "ServiceTaggedAddresses": Map(_SERVICE_ADDRESS),
        "ServiceMeta": Map(STR),
        "ServicePort": INT,
        "ServiceWeights": _WEIGHTS,
        "ServiceEnableTagOverride": BOOL,
    }
)


# --- the expression tree ------------------------------------------------------------------------------

EQ, NE, IN, NOT_IN, EMPTY, NOT_EMPTY, MATCHES, NOT_MATCHES = (
    "==",
    "!=",
    "in",
    "not in",
    "is empty",
    "is not empty",
    "matches",
    "not matches",
)
_NEGATED = {NE: EQ, NOT_IN: IN, NOT_EMPTY: EMPTY, NOT_MATCHES: MATCHES}
_MISSING_KEY_TRUE = {NE, NOT_IN, EMPTY, NOT_MATCHES}  # go-bexpr: a missing map key cannot be equal...


@dataclass(frozen=True)
class Match:
    path: tuple[str, ...]
    op: str
    raw: str = ""
    regex: Any = None


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class And:
    left: Any
    right: Any


@dataclass(frozen=True)
class Or:
    left: Any
    right: Any


# --- tokens -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "sel", "str", "num", "op", "(", ")", "end"
    text: str
    at: int
    path: tuple[str, ...] = ()


_KEYWORDS = {"and", "or", "not", "in", "contains", "is", "empty", "matches"}
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def _bad(expr: str, detail: str) -> BadRequest:
    return BadRequest(f"{PREFIX}{detail} (in filter {expr[:200]!r})")


def _ident_start(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _ident_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_/")


class _Lexer:
    def __init__(self, expr: str) -> None:
        self.s = expr
        self.i = 0

    def bad(self, detail: str) -> BadRequest:
        return _bad(self.s, f"{detail} at position {self.i}")

    def _string(self) -> str:
        s, quote = self.s, self.s[self.i]
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= len(s):
                raise self.bad("Unterminated string literal")
            c = s[self.i]
            self.i += 1
            if c == quote:
                return "".join(out)
            if quote == "`":
                if c != "\r":  # Go drops carriage returns from raw strings
                    out.append(c)
                continue
            if c == "\n":
                raise self.bad("Unterminated string literal")
            if c != "\\":
                out.append(c)
                continue
            if self.i >= len(s):
                raise self.bad("Unterminated string literal")
            e = s[self.i]
            self.i += 1
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e in "xuU":
                n = {"x": 2, "u": 4, "U": 8}[e]
                digits = s[self.i : self.i + n]
                if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise self.bad(f"invalid \\{e} escape in a string")
                cp = int(digits, 16)
                if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                    raise self.bad(f"invalid \\{e} escape in a string")
                out.append(chr(cp))
                self.i += n
            elif e in "01234567":
                digits = s[self.i - 1 : self.i + 2]
                if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                    raise self.bad("invalid octal escape in a string")
                out.append(chr(int(digits, 8)))
                self.i += 2
            else:
                raise self.bad(f"invalid escape \\{e} in a string")

    def _number(self) -> str:
        s, start = self.s, self.i
        if s[self.i] == "-":
            self.i += 1
        if self.i < len(s) and s[self.i] == "0":
            self.i += 1
        elif self.i < len(s) and s[self.i] in "123456789":
            while self.i < len(s) and s[self.i].isascii() and s[self.i].isdigit():
                self.i += 1
        else:
            raise self.bad("Invalid number literal")
        if self.i < len(s) and s[self.i] == ".":
            self.i += 1
            digits = self.i
            while self.i < len(s) and s[self.i].isascii() and s[self.i].isdigit():
                self.i += 1
            if self.i == digits:
                raise self.bad("Invalid number literal")
        if self.i < len(s) and s[self.i] not in " \t\r\n)":
            raise self.bad("Invalid number literal")
        return s[start : self.i]

    def _selector(self) -> tuple[str, ...]:
        s = self.s
        path: list[str] = []
        start = self.i
        while self.i < len(s) and _ident_char(s[self.i]):
            self.i += 1
        path.append(s[start : self.i])
        while self.i < len(s):
            c = s[self.i]
            if c == "." and self.i + 1 < len(s) and _ident_start(s[self.i + 1]):
                self.i += 1
                start = self.i
                while self.i < len(s) and _ident_char(s[self.i]):
                    self.i += 1
                path.append(s[start : self.i])
            elif c == "." and self.i + 1 < len(s) and s[self.i + 1].isdigit():
                raise self.bad("numeric indexes into lists (Selector.0) are not supported")
            elif c == "[":
                self.i += 1
                self._space()
                if self.i >= len(s) or s[self.i] not in '"`':
                    raise self.bad("Invalid index: a selector index must be a quoted string")
                path.append(self._string())
                self._space()
                if self.i >= len(s) or s[self.i] != "]":
                    raise self.bad("Unclosed index expression")
                self.i += 1
            else:
                break
        return tuple(path)

    def _space(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def tokens(self) -> list[_Tok]:
        s = self.s
        out: list[_Tok] = []
        while True:
            self._space()
            at = self.i
            if self.i >= len(s):
                out.append(_Tok("end", "", at))
                return out
            c = s[self.i]
            if c in "()":
                self.i += 1
                out.append(_Tok(c, c, at))
            elif s.startswith(("==", "!="), self.i):
                self.i += 2
                out.append(_Tok("op", s[at : self.i], at))
            elif c in '"`':
                out.append(_Tok("str", self._string(), at))
            elif c == "-" or (c.isascii() and c.isdigit()):
                out.append(_Tok("num", self._number(), at))
            elif _ident_start(c):
                path = self._selector()
                out.append(_Tok("sel", ".".join(path), at, path))
            elif c == "[":
                raise self.bad('inline value lists (["a", "b"] as a selector) are not supported')
            elif c in "<>":
                raise self.bad("the comparison operators <, <=, >, >= are not supported")
            else:
                raise self.bad(f"unexpected character {c!r}")


# --- the parser (go-bexpr's precedence: or < and < not < grouping) -------------------------------------


class _Parser:
    def __init__(self, expr: str, shape: Struct) -> None:
        self.expr = expr
        self.shape = shape
        self.toks = _Lexer(expr).tokens()
        self.pos = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.pos + ahead, len(self.toks) - 1)]

    def word(self, ahead: int = 0) -> str:
        t = self.peek(ahead)
        return t.text if t.kind == "sel" and len(t.path) == 1 and t.text in _KEYWORDS else ""

    def take(self) -> _Tok:
        t = self.peek()
        self.pos += 1
        return t

    def bad(self, detail: str, t: _Tok | None = None) -> BadRequest:
        t = t or self.peek()
        return _bad(self.expr, f"{detail} at position {t.at}")

    def parse(self) -> Any:
        node = self.or_expr()
        if self.peek().kind != "end":
            t = self.peek()
            raise self.bad(f"unexpected {t.text or t.kind!r}: expected and, or, or the end", t)
        return node

    def _nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.bad(f"expression nested deeper than {MAX_DEPTH} levels")

    def or_expr(self) -> Any:
        self._nest()
        left = self.and_expr()
        if self.word() == "or":
            self.take()
            left = Or(left, self.or_expr())
        self.depth -= 1
        return left

    def and_expr(self) -> Any:
        self._nest()
        left = self.not_expr()
        if self.word() == "and":
            self.take()
            left = And(left, self.and_expr())
        self.depth -= 1
        return left

    def not_expr(self) -> Any:
        if self.word() == "not":
            self.take()
            self._nest()
            inner = self.not_expr()
            self.depth -= 1
            return inner.operand if isinstance(inner, Not) else Not(inner)
        if self.peek().kind == "(":
            self.take()
            inner = self.or_expr()
            if self.peek().kind != ")":
                raise self.bad("Unmatched parentheses")
            self.take()
            return inner
        return self.match()

    def value(self) -> str:
        t = self.take()
        if t.kind in ("str", "num", "sel"):
            return t.text
        raise self.bad("expected a value (a quoted string, a number or a word)", t)

    def match(self) -> Match:
        first = self.take()
        if first.kind == "end":
            raise self.bad('expected a match expression such as Service.Tags contains "x"', first)
        if first.kind not in ("sel", "str", "num"):
            raise self.bad(f"unexpected {first.text!r}: expected a selector or a value", first)
        w, w2 = self.word(), self.word(1)
        if w == "in" or (w == "not" and w2 == "in"):  # <Value> in <Selector>
            self.pos += 1 if w == "in" else 2
            sel = self.take()
            if sel.kind != "sel":
                raise self.bad("Invalid selector after in", sel)
            return self._check(sel, IN if w == "in" else NOT_IN, first.text)
        if first.kind != "sel":
            if self.peek().kind == "op" and first.kind == "str":
                raise self.bad(
                    'JSON pointer selectors ("/a/b") are not supported; write Service.Meta.k', first
                )
            raise self.bad("a quoted value must be followed by in or not in", first)
        t = self.peek()
        if t.kind == "op":
            self.take()
            return self._check(first, EQ if t.text == "==" else NE, self.value())
        if w == "contains" or (w == "not" and w2 == "contains"):
            self.pos += 1 if w == "contains" else 2
            return self._check(first, IN if w == "contains" else NOT_IN, self.value())
        if w == "matches" or (w == "not" and w2 == "matches"):
            self.pos += 1 if w == "matches" else 2
            return self._check(first, MATCHES if w == "matches" else NOT_MATCHES, self.value())
        if w == "is":
            self.take()
            negate = self.word() == "not"
            if negate:
                self.take()
            if self.word() != "empty":
                raise self.bad("expected empty after is")
            self.take()
            return self._check(first, NOT_EMPTY if negate else EMPTY, "")
        raise self.bad(
            f"expected an operator after {first.text!r}: ==, !=, contains, not contains, in, not in, "
            "matches, not matches, is empty or is not empty",
            t,
        )

    def _check(self, sel: _Tok, op: str, raw: str) -> Match:
        """The selector against the endpoint's shape, and the operator and value against its type."""
        shape: Any = self.shape
        for depth, name in enumerate(sel.path):
            while isinstance(shape, List):
                shape = shape.item
            if isinstance(shape, Struct):
                if name not in shape.fields:
                    known = ", ".join(sorted(shape.fields))
                    where = ".".join(sel.path[:depth]) or "the top level"
                    raise self.bad(f"Selector {sel.text!r} is not valid: {where} has {known}", sel)
                shape = shape.fields[name]
            elif isinstance(shape, Map):
                shape = shape.value
            else:
                raise self.bad(
                    f"Selector {sel.text!r} is not valid: {'.'.join(sel.path[:depth])} has no fields", sel
                )
        leaf = shape
        base = _NEGATED.get(op, op)
        if isinstance(leaf, List):
            if base not in (IN, EMPTY):
                raise self.bad(f"{sel.text} is a list: use contains, not contains, in, is empty", sel)
            leaf = leaf.item
        elif isinstance(leaf, Map):
            if base not in (IN, EMPTY):
                raise self.bad(f"{sel.text} is a map: use contains (a key), in, is empty", sel)
            leaf = STR
        elif isinstance(leaf, Struct):
            raise self.bad(
                f"{sel.text} is an object: select one of its fields ({', '.join(sorted(leaf.fields))})", sel
            )
        elif isinstance(leaf, Int | Bool) and base not in (EQ,):
            kind = "number" if isinstance(leaf, Int) else "boolean"
            raise self.bad(f"{sel.text} is a {kind}: use == or !=", sel)
        if base in (EQ, IN) and raw:
            _coerce(raw, leaf, lambda d: self.bad(f"{d} for {sel.text}", sel))
        regex = None
        if base == MATCHES:
            try:
                regex = re2.compile(raw)
            except re2.error as e:
                raise self.bad(f"Failed to compile regular expression {raw[:100]!r}: {e}", sel) from None
        return Match(sel.path, op, raw, regex)


def _coerce(raw: str, leaf: Any, bad: Callable[[str], BadRequest]) -> Any:
    if isinstance(leaf, Int):
        try:
            return int(raw)
        except ValueError:
            raise bad(f"Failed to convert {raw[:40]!r} to a number") from None
    if isinstance(leaf, Bool):  # Go's strconv.ParseBool
        if raw in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if raw in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise bad(f"Failed to convert {raw[:40]!r} to a boolean")
    return raw


# --- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """A compiled `?filter=`: `keep(entry)` for each JSON entry of the endpoint it was compiled for."""

    expr: str
    tree: Any = field(repr=False)
    shape: Struct = field(repr=False)

    def keep(self, entry: Any) -> bool:
        return _eval(self.tree, entry, self.shape)


def compile_filter(expr: str, shape: Struct) -> Filter | None:
    """None for an empty filter; a 400 naming the problem for one that cannot be used."""
    if not expr.strip():
        return None
    if len(expr) > MAX_LENGTH:
        raise _bad(expr, f"the filter is longer than {MAX_LENGTH} characters")
    return Filter(expr, _Parser(expr, shape).parse(), shape)


def _eval(node: Any, entry: Any, shape: Struct) -> bool:
    if isinstance(node, Match):
        return _match(node, entry, shape, 0)
    if isinstance(node, Not):
        return not _eval(node.operand, entry, shape)
    if isinstance(node, And):
        return _eval(node.left, entry, shape) and _eval(node.right, entry, shape)
    return _eval(node.left, entry, shape) or _eval(node.right, entry, shape)


def _match(m: Match, value: Any, shape: Any, depth: int) -> bool:
    if isinstance(shape, List) and depth < len(m.path):  # inside a selector, a list matches on any item
        return any(_match(m, item, shape.item, depth) for item in (value or ()))
    if depth == len(m.path):
        return _leaf(m, value, shape)
    name = m.path[depth]
    if isinstance(shape, Struct):
        return _match(m, (value or {}).get(name), shape.fields[name], depth + 1)
    held = value if isinstance(value, dict) else {}
    if name not in held:
        return m.op in _MISSING_KEY_TRUE
    return _match(m, held[name], shape.value, depth + 1)


def _leaf(m: Match, value: Any, shape: Any) -> bool:
    base = _NEGATED.get(m.op, m.op)
    if base == EMPTY:
        result = not value
    elif base == EQ:
        result = _equal(m.raw, value, shape)
    elif base == IN:
        if isinstance(shape, List):
            result = any(_equal(m.raw, v, shape.item) for v in (value or ()))
        elif isinstance(shape, Map):
            result = m.raw in (value or {})
        else:
            result = m.raw in str(value or "")
    else:
        result = m.regex.search(str(value or "")) is not None
    return result if base == m.op else not result


def _equal(raw: str, value: Any, shape: Any) -> bool:
    if isinstance(shape, Int):
        return isinstance(value, int) and not isinstance(value, bool) and value == int(raw)
    if isinstance(shape, Bool):
        return value is (raw in ("1", "t", "T", "TRUE", "true", "True"))
    return isinstance(value, str) and value == raw
