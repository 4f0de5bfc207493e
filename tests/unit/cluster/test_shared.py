"""The cache's shared strings: a document shared is the document it was, and equal short strings across
documents become one object (ids, names and addresses stay their own)."""

from __future__ import annotations

import copy
import json

from hypothesis import given
from hypothesis import strategies as st

from shoal.cluster.shared import SHARED_BELOW, UNIQUE_KEYS, SharedStrings

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
DOCS = st.dictionaries(st.text(max_size=8), JSON, max_size=6)  # what an engine lists: objects


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in UNIQUE_KEYS for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@given(DOCS)
def test_a_shared_document_is_the_document_it_was(doc):
    strings = SharedStrings()
    a, b = json.loads(json.dumps(doc)), json.loads(json.dumps(doc))  # two decodings: distinct objects
    assert strings.share(a) == doc
    assert strings.share(b) == doc
    for x, y in zip(_strings(a), _strings(b), strict=True):
        assert (x is y) == (len(x) < SHARED_BELOW), (x, y)  # short ones one object, ids their own


def test_two_listed_containers_share_what_they_repeat_and_keep_their_ids():
    doc = {
        "Id": "a" * 64,
        "Names": ["/web-1"],
        "Image": "busybox",
        "State": "running",
        "NetworkSettings": {"Networks": {"bridge": {"Gateway": "172.17.0.1", "IPAddress": "172.17.0.2"}}},
    }
    strings = SharedStrings()
    a = strings.share(json.loads(json.dumps(doc)))
    b = strings.share(json.loads(json.dumps({**doc, "Id": "b" * 64})))
    assert a["Image"] is b["Image"] and a["State"] is b["State"]
    net = a["NetworkSettings"]["Networks"]["bridge"], b["NetworkSettings"]["Networks"]["bridge"]
    assert net[0]["Gateway"] is net[1]["Gateway"]
    assert a["Id"] is not b["Id"] and len(strings) == 3  # busybox, running, the gateway: no ids
    assert a["Names"][0] is not b["Names"][0]  # a name is one container's: not kept in the memo
    assert net[0]["IPAddress"] is not net[1]["IPAddress"]


def test_the_memo_is_bounded_and_what_was_shared_stays_as_it_is():
    strings = SharedStrings(max_kept=10)
    docs = [strings.share({"n": f"name-{i}"}) for i in range(25)]
    assert len(strings) <= 11
    assert [d["n"] for d in docs] == [f"name-{i}" for i in range(25)]
    assert copy.deepcopy(docs) == docs
