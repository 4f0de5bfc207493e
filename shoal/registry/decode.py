"""Reading what Consul clients send: JSON bodies and query values, checked field by field.

Consul's Go decoder turns a wrong type, NaN, a number out of range or nesting it cannot hold into a
400; so does this module, with the field named, so no bad input reaches the store or a 500. Keys are
matched case-insensitively (py-consul sends `name`, `ttl`, `lockdelay`), except inside user maps
(Meta, NodeMeta), whose keys are the user's. Lone UTF-16 surrogates (which JSON can spell but UTF-8
cannot hold) become U+FFFD, as Go's decoder makes them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shoal.errors import BadRequest

MAX_JSON = 1 << 20  # JSON bodies (the KV route caps values at Consul's 512 KB on its own)
MAX_DEPTH = 32  # no Consul body nests deeper than a handful of levels
U64 = 2**64 - 1
MAX_DURATION = (2**63 - 1) * 1e-9  # Go's time.Duration, in seconds
USER_MAPS = ("meta", "nodemeta", "servicemeta", "header")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile(r"[0-9]{1,20}", re.ASCII)
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}", re.ASCII)  # an HTTP method (RFC 9110 token)


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid number literal {name}")


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} out of range")
    return v


def clean(s: str) -> str:
    if s.isascii():  # the common case, and no surrogate can be in it
        return s
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def parse_json(raw: bytes, what: str = "Request decode failed") -> Any:
    """JSON as Go's decoder takes it: no NaN or Infinity, finite numbers, bounded nesting."""
    try:
        data = json.loads(
            raw.decode("utf-8", errors="replace"), parse_constant=_no_constant, parse_float=_finite
        )
    except RecursionError:
        raise BadRequest(f"{what}: nesting deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise BadRequest(f"{what}: {e}") from None
    return normalize(data, what)


def normalize(data: Any, what: str = "Request decode failed") -> Any:
    """Lower-cased keys (user maps keep theirs), surrogate-free strings, at most MAX_DEPTH levels; built
    without recursion so no input can exhaust the stack."""
    root: list[Any] = [None]
    stack: list[tuple[Any, list[Any] | dict[str, Any], Any, bool, int]] = [(data, root, 0, True, 0)]
    while stack:
        value, parent, slot, lower, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"{what}: nesting deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                key = clean(k).lower() if lower else clean(k)
                out[key] = None
                stack.append((v, out, key, lower and key not in USER_MAPS, depth + 1))
            parent[slot] = out
        elif isinstance(value, list):
            items: list[Any] = [None] * len(value)
            for i, v in enumerate(value):
                stack.append((v, items, i, lower, depth + 1))
            parent[slot] = items
        else:
            parent[slot] = clean(value) if isinstance(value, str) else value
    return root[0]


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


class Obj:
    """One JSON object of a request, read field by field; every getter raises a 400 naming the field."""

    def __init__(self, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise BadRequest(f"Request decode failed: {where or 'body'} must be an object, not {_kind(data)}")
        self.data = data
        self.where = where

    def _bad(self, name: str, want: str, v: Any) -> BadRequest:
        field = f"{self.where}.{name}" if self.where else name
        return BadRequest(f"Request decode failed: {field} must be {want}, not {_kind(v)} {_show(v)}")

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def str(self, name: str, default: str = "") -> str:
        v = self.data.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self._bad(name, "a string", v)
        return v

    def int(self, name: str, default: int = 0, lo: int = 0, hi: int = U64) -> int:
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(name, "an integer", v)
        if not lo <= v <= hi:
            raise self._bad(name, f"an integer in {lo}..{hi}", v)
        return v

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.data.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._bad(name, "true or false", v)
        return v

    def strs(self, name: str) -> tuple[str, ...]:
        v = self.data.get(name)
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self._bad(name, "a list of strings", v)
        return tuple(v)

    def str_map(self, name: str) -> dict[str, str]:
        v = self.data.get(name)
        if v is None:
            return {}
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise self._bad(name, "an object of strings", v)
        return dict(v)

    def obj(self, name: str) -> Obj | None:
        v = self.data.get(name)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self._bad(name, "an object", v)
        return Obj(v, f"{self.where}.{name}" if self.where else name)

    def objs(self, name: str) -> list[Obj]:
        v = self.data.get(name)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self._bad(name, "a list of objects", v)
        return [Obj(x, f"{name}[{i}]") for i, x in enumerate(v)]

    def duration(self, name: str, what: str, default: Any = None) -> float:
        v = self.data.get(name, default)
        return duration(default if v is None else v, what)


def _show(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


_DUR = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: Any, what: str, *, number_unit: float = 1e-9) -> float:
    """Go-style durations ("10s", "1m30s", "100ms") or numbers (nanoseconds, as Go's JSON has them), in
    seconds; never negative, NaN or beyond Go's Duration."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"Invalid {what}: {_show(value)} is not a duration")
    if isinstance(value, int | float):
        total = float(value) * number_unit
    else:
        s = value.strip()
        if s == "0":
            return 0.0
        pos, total = 0, 0.0
        for m in _DUR.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos != len(s) or pos == 0:
            raise BadRequest(f'Invalid {what}: time: invalid duration "{s[:64]}"')
    if not math.isfinite(total) or total < 0 or total > MAX_DURATION:
        raise BadRequest(f"Invalid {what}: {_show(value)} is out of range (0 to 2562047h)")
    return total


def uint(raw: str | None, what: str) -> int | None:
    """A query parameter Consul reads as uint64 (index, cas, flags): ASCII digits, at most 2^64-1."""
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > U64:
        raise BadRequest(f"Invalid {what} {raw[:64]!r}: must be an integer from 0 to {U64}")
    return int(raw)
