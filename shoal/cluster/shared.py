"""One copy of each short string the engines' lists repeat, kept by the cache.

At 1,000 nodes the cache holds 30,000 containers as the engines listed them, each decoded afresh: about
75 strings a container (its image, command, state, status, network name, gateway, label values...), most
of them equal to other containers' ones, and each its own object, since the JSON decoder shares only the
keys within one answer. Strings were two thirds of the 7 KB a container cost. Each newly listed document
is walked once (an unchanged entry keeps the object already held, see `Cluster._set_containers`) and its
short strings replaced by the copy already held, so 30,000 containers cost their unique values (ids,
addresses, names) and one copy of the rest.

Only strings shorter than SHARED_BELOW are looked up: ids (64 hex) are unique, and keeping them in the
memo would only keep them alive. For the same reason the values of UNIQUE_KEYS (a container's name, its
addresses) are left as decoded: at 30,000 containers they were 90,000 memo entries sharing nothing. The
memo is cleared when it passes MAX_KEPT (documents keep the copies they were given; new ones start
sharing again), so it never holds more than a bounded set.
"""

from __future__ import annotations

from typing import Any

SHARED_BELOW = 64  # a full id is 64 characters: unique, not shared
MAX_KEPT = 200_000
UNIQUE_KEYS = frozenset({"Names", "IPAddress", "MacAddress", "GlobalIPv6Address"})  # one per container


class SharedStrings:
    """The memo of short strings, and the walk that puts its copies into a freshly decoded document."""

    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self._kept: dict[str, str] = {}
        self._max = max_kept

    def __len__(self) -> int:
        return len(self._kept)

    def share(self, doc: Any) -> Any:
        """`doc` with its short string values (at any depth) replaced, in place, by the copies held;
        returned for convenience. The document must be one nobody else holds yet (just decoded): its
        values change identity, never value."""
        if len(self._kept) > self._max:
            self._kept.clear()
        self._walk(doc)
        return doc

    def _one(self, s: str) -> str:
        if len(s) >= SHARED_BELOW:
            return s
        return self._kept.setdefault(s, s)

    def _walk(self, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in UNIQUE_KEYS:
                    continue
                if isinstance(v, str):
                    value[k] = self._one(v)  # an existing key: no resize while iterating
                elif isinstance(v, dict | list):
                    self._walk(v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, str):
                    value[i] = self._one(v)
                elif isinstance(v, dict | list):
                    self._walk(v)
