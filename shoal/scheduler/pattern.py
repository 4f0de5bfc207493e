"""The `/regex/` and glob values of scheduling expressions, compiled once with RE2.

RE2 (google-re2) runs in time linear in the text, whatever the pattern: it is the engine behind the Go
regexp classic Swarm matched with, so a pattern means here what it meant there, and no pattern a user
sends (`^(\\w|\\w)+x$` froze a backtracking engine) can hold placement up. A regex body longer than
MAX_PATTERN bytes is refused, so a pattern's compiled program stays small too.

Three ways to ask, all exact:
- `search(value)`: does the pattern occur in one string (unanchored, as Go's MatchString);
- `search_any(values, joined)`: does it occur in any of several strings, in ONE call over the strings
  joined by "\\n". The joined form is compiled with `(?m:...)` (so `^`/`$` mean each string's start
  and end) and RE2's `never_nl` (nothing in it can match "\\n", so no match spans two strings; verified,
  and held by a property test). A pattern whose meaning needs the whole text (`\\A`, `\\z`, `\\C`, a
  flag group that turns `m` off) and strings that hold "\\n" themselves are asked one by one instead.
- `find_joined(joined, pos)`: where the leftmost match at or after `pos` starts in such a joined text,
  so a caller that joined several owners' strings (the index: 32 nodes' names and ids in one text)
  learns whose string matched, and goes on from the next owner's first string. Text with no match costs
  one call, a pass at RE2's speed (~1.5 ns a byte here: ~2.4 MB for 1,000 nodes x 30 containers), where
  a call per node added ~1 us of overhead (and Python) per node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2
from re2 import _re2

from shoal.errors import PatternError

MAX_PATTERN = 512  # bytes of a /regex/ body
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
# constructs whose meaning depends on where one string ends inside the joined text
_WHOLE_TEXT = re.compile(r"\\[AzC]|\(\?[imsU]*-[imsU]*m")


def _options(*, joined: bool) -> re2.Options:
    o = re2.Options()
    o.never_capture = True  # only "does it match" is ever asked
    o.log_errors = False  # the error goes to the user, not to stderr
    o.never_nl = joined
    return o


def _compile(source: str, *, joined: bool) -> Any:
    r = _re2.RE2(encode(source), _options(joined=joined))
    if not r.ok():
        raise PatternError(_text(r.error()))
    return r


def _text(msg: object) -> str:
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)


def encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def join(values: Sequence[str]) -> bytes | None:
    """The form `search_any` reads in one call; None when a value holds "\\n" (then: one by one).
    Joined as text, then encoded once (the same bytes: UTF-8 encodes code point by code point, lone
    surrogates too), so a node's 60 names and ids cost three C calls, not 60 encodes."""
    if not values:
        return b""
    text = "\n".join(values)
    if text.count("\n") != len(values) - 1:
        return None
    return encode(text)


@dataclass(frozen=True, slots=True)
class Pattern:
    source: str  # the RE2 source (a glob's is derived from it)
    _one: Any = field(compare=False, repr=False)
    _many: Any = field(compare=False, repr=False)  # None: the joined form would not mean the same

    def search(self, value: str) -> bool:
        b = encode(value)
        return self._one.Match(_UNANCHORED, b, 0, len(b))[0][0] >= 0

    @property
    def joinable(self) -> bool:
        """Can `search_joined` answer for this pattern?"""
        return self._many is not None

    def search_joined(self, joined: bytes) -> bool:
        """Does the pattern occur in any of the strings `join` made `joined` from (needs `joinable`)?"""
        return self._many.Match(_UNANCHORED, joined, 0, len(joined))[0][0] >= 0

    def find_joined(self, joined: bytes, pos: int = 0) -> int:
        """Where the leftmost match at or after `pos` in `joined` (strings joined by "\\n") starts; -1 if
        none (needs `joinable`). What precedes `pos` is context: at the start of a string, `^` and `\\b`
        read the "\\n" before it as they read the start of that string alone."""
        return self._many.Match(_UNANCHORED, joined, pos, len(joined))[0][0]

    def search_any(self, values: Sequence[str], joined: bytes | None = None) -> bool:
        """Does the pattern occur in any of `values`? `joined` is `join(values)`, when the caller keeps it."""
        if not values:
            return False
        if len(values) == 1:
            return self.search(values[0])
        if joined is None:
            joined = join(values)
        if self._many is None or joined is None:
            return any(self.search(v) for v in values)
        return self._many.Match(_UNANCHORED, joined, 0, len(joined))[0][0] >= 0


@lru_cache(maxsize=1024)
def regex(body: str) -> Pattern:
    """A `/body/` value: unanchored, case-sensitive (classic Swarm). PatternError if RE2 refuses it."""
    size = len(encode(body))
    if size > MAX_PATTERN:
        raise PatternError(f"it is {size} bytes long, and the limit is {MAX_PATTERN} bytes")
    return _pattern(body)


@lru_cache(maxsize=1024)
def glob(value: str) -> Pattern:
    """Any other value: anchored, `*` matches anything (including nothing)."""
    return _pattern("^" + ".*".join(re2.escape(part) for part in value.split("*")) + "$")


def _pattern(source: str) -> Pattern:
    one = _compile(source, joined=False)
    many = None if _WHOLE_TEXT.search(source) else _compile(f"(?m:{source})", joined=True)
    return Pattern(source, one, many)
