"""shoal.jsonbody: what orjson refuses is written by the standard encoder, so no answer fails for it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import jsonbody


@pytest.mark.parametrize(
    "data",
    [
        {"Id": "a" * 64, "Labels": {"k": "v"}, "Ports": [], "Created": 1_700_000_000},
        {"Size": 2**70},  # past 64 bits: orjson refuses it
        {1: "a non-str key"},  # orjson refuses it; json writes "1"
        [("a", 1)],  # a tuple, as json writes it: a list
    ],
)
def test_every_body_is_the_json_the_standard_encoder_means(data: object) -> None:
    assert json.loads(jsonbody.dumps(data)) == json.loads(json.dumps(data))


def test_what_neither_encoder_takes_still_raises() -> None:
    with pytest.raises(TypeError):
        jsonbody.dumps({"a": object()})


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(rows=st.lists(st.dictionaries(st.text(max_size=5), _VALUES, min_size=1, max_size=4), max_size=5),
       status=st.none() | st.text(max_size=12))  # fmt: skip
def test_open_rows_closed_with_a_member_are_the_objects_with_it(rows, status) -> None:
    """How `docker ps` rows are written (containers._row_open): each object rendered once without its
    closing brace, a STATUS member added per answer, the rows joined into one body written beforehand."""
    tail = b"}" if status is None else b',"Status":' + jsonbody.dumps(status) + b"}"
    written = jsonbody.Written(b"[" + b",".join(jsonbody.dumps_open(r) + tail for r in rows) + b"]")
    body = jsonbody.dumps(written)
    assert body is written.body  # answered as it is, not copied
    want = [{**r, "Status": status} if status is not None else r for r in rows]
    assert json.loads(body) == json.loads(json.dumps(want))
