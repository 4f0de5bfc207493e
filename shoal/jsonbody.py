"""JSON bodies out of shoal's servers (the Docker API, the registry, the dashboard), encoded by orjson.

At 1,000 nodes the answers are large: `docker ps -a` over 30,000 containers is about 28 MB of JSON, which
the standard library's encoder took 0.65 s to write on this machine, the event loop stopped all the
while; orjson writes it about ten times faster. Reading stays with the standard library: orjson's decoder
was no faster on these documents, and it turns an integer past 64 bits into a float, which would alter
a value silently.

orjson refuses what the standard encoder takes (an integer past 64 bits, a non-str key): those few
bodies are written by the standard encoder instead, so no answer fails for the codec's sake. Its output
is compact (no spaces) and keeps each dict's order, as `json.dumps` does.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(data: Any) -> bytes:
    """`data` as a JSON body."""
    if isinstance(data, Written):
        return data.body
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError is a TypeError: a big int, a non-str key, a stray type
        return json.dumps(data).encode()


class Written:
    """A body already written as JSON: `dumps` answers it as it is, not copied (`docker ps -a` over
    30,000 containers is 24 MB, written once from rows rendered beforehand)."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


def dumps_open(data: dict[str, Any]) -> bytes:
    """A non-empty object as JSON without its closing brace, for a caller that adds members to a part
    it renders once and reuses (the rows of `docker ps -a`, whose STATUS changes while they do not)."""
    body = dumps(data)
    assert body.endswith(b"}") and len(body) > 2, "an object with members"
    return body[:-1]
