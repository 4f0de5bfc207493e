"""shoal.jsonbody: what orjson refuses is written by the standard encoder, so no answer fails for it."""

from __future__ import annotations

import json

import pytest

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
