"""shoal's one KV extension, GET /v1/kv/<prefix>?recurse&since=N (views.Views.kv_changes): the entries
under the prefix written after index N, marked by X-Shoal-Since: N, or, where that cannot be told
(something deleted since N, N past what the store holds), the whole prefix without the header. What a
reader that follows it sees is what ?recurse shows: the property test at the end holds the two to each
other over random writes and deletes. Against `shoal registry` on SQLite and on etcd, over HTTP as the
manager's client sends it (py-consul has no such parameter).
"""

from __future__ import annotations

import base64
import threading
import uuid
from typing import Any

import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.registry.conftest import ACL_MANAGEMENT, RegistryProc
from tests.registry.test_acl import _token

SINCE = "X-Shoal-Since"


def _prefix() -> str:
    return f"since-{uuid.uuid4().hex[:8]}/"


def _put(r: RegistryProc, key: str, value: str) -> None:
    got = requests.put(f"{r.url}/v1/kv/{key}", data=value, timeout=10)
    assert got.status_code == 200 and got.json() is True, got.text


def _delete(r: RegistryProc, key: str, recurse: bool = False) -> None:
    got = requests.delete(f"{r.url}/v1/kv/{key}", params={"recurse": ""} if recurse else {}, timeout=10)
    assert got.status_code == 200, got.text


def _list(r: RegistryProc, prefix: str, **params: Any) -> requests.Response:
    return requests.get(f"{r.url}/v1/kv/{prefix}", params={"recurse": "", **params}, timeout=30)


def _values(got: requests.Response) -> dict[str, str]:
    return {e["Key"]: base64.b64decode(e["Value"] or "").decode() for e in got.json()} if got.content else {}


def _index(got: requests.Response) -> int:
    return int(got.headers["X-Consul-Index"])


def test_since_answers_only_what_was_written_after_it(reg):
    p = _prefix()
    for k in "abc":
        _put(reg, p + k, "one")
    whole = _list(reg, p)
    at = _index(whole)
    _put(reg, p + "b", "two")
    _put(reg, p + "d", "new")
    got = _list(reg, p, since=at)
    assert got.status_code == 200
    assert got.headers[SINCE] == str(at)
    assert _values(got) == {p + "b": "two", p + "d": "new"}
    assert _index(got) == _index(_list(reg, p))  # the index ?recurse answers: the reader's next since


def test_since_with_nothing_changed_is_an_empty_list_not_a_missing_prefix(reg):
    p = _prefix()
    _put(reg, p + "a", "one")
    at = _index(_list(reg, p))
    _put(reg, _prefix() + "elsewhere", "x")  # a write outside the prefix
    got = _list(reg, p, since=at)
    assert got.status_code == 200 and got.json() == [] and got.headers[SINCE] == str(at)
    assert _index(got) == at


def test_a_blocking_since_query_wakes_with_the_one_change(reg):
    p = _prefix()
    for k in "abc":
        _put(reg, p + k, "one")
    at = _index(_list(reg, p))
    answer: dict[str, requests.Response] = {}
    t = threading.Thread(target=lambda: answer.setdefault("r", _list(reg, p, since=at, index=at, wait="10s")))
    t.start()
    _put(reg, _prefix() + "elsewhere", "x")  # does not wake it
    _put(reg, p + "c", "two")
    t.join(20)
    got = answer["r"]
    assert _values(got) == {p + "c": "two"} and got.headers[SINCE] == str(at)
    assert _index(got) > at


def test_after_a_deletion_anywhere_the_answer_is_whole(reg):
    p = _prefix()
    for k in "abc":
        _put(reg, p + k, "one")
    at = _index(_list(reg, p))
    _delete(reg, p + "a")
    got = _list(reg, p, since=at)
    assert SINCE not in got.headers
    assert _values(got) == {p + "b": "one", p + "c": "one"}  # what is not listed is gone
    at = _index(got)
    other = _prefix()
    _put(reg, other + "x", "x")
    _delete(reg, other, recurse=True)  # a deletion outside the prefix: shoal cannot tell, so whole too
    got = _list(reg, p, since=at)
    assert SINCE not in got.headers and _values(got) == {p + "b": "one", p + "c": "one"}


def test_since_past_the_store_or_zero_answers_whole(reg):
    p = _prefix()
    _put(reg, p + "a", "one")
    for since in (0, 10**15):  # a reader whose registry was restored from older state
        got = _list(reg, p, since=since)
        assert SINCE not in got.headers and _values(got) == {p + "a": "one"}


def test_an_empty_prefix_with_since_is_missing_as_with_recurse(reg):
    got = _list(reg, _prefix(), since=1)
    assert got.status_code == 404 and SINCE not in got.headers


def test_a_bad_since_is_refused_naming_it(reg):
    p = _prefix()
    _put(reg, p + "a", "one")
    for bad in ("abc", "-1", "1.5"):
        got = _list(reg, p, since=bad)
        assert got.status_code == 400, (bad, got.status_code, got.text)
        assert "since" in got.text


_KEYS = st.sampled_from(["a", "b", "c", "d/e", "d/f"])
_STEP = st.one_of(
    st.tuples(st.just("put"), _KEYS, st.text("xyz", max_size=3)),
    st.tuples(st.just("delete"), _KEYS, st.booleans()),
)


@given(steps=st.lists(_STEP, min_size=1, max_size=12))
@settings(max_examples=25, deadline=None, database=None)
def test_a_reader_following_since_sees_what_recurse_shows(registries, steps):
    """Held to each other after every step: the view a reader builds from ?since answers (merging the
    changes, replacing the view on a whole answer) and the whole ?recurse listing -- on both stores."""
    for r in registries.values():
        p = _prefix()
        view: dict[str, str] = {}
        at = 0
        for op, key, arg in steps:
            if op == "put":
                _put(r, p + key, arg)
            else:
                _delete(
                    r, p + (key.partition("/")[0] + "/" if arg and "/" in key else key), recurse=bool(arg)
                )
            got = _list(r, p, since=at)
            if SINCE in got.headers:
                view.update(_values(got))
            else:
                view = _values(got)
            at = _index(got)
            assert view == _values(_list(r, p)), (op, key, arg)


def test_with_acls_since_shows_only_what_the_token_may_read(acl_registry):
    """The token's filter applies to the changes as to ?recurse: an entry it may not read is left out
    and says nothing of itself; the answer still says it is only the changes."""
    r, p = acl_registry, _prefix()
    mine = _token(r, f'key_prefix "{p}open/" {{ policy = "read" }}')

    def call(method: str, key: str, token: str, **kw: Any) -> requests.Response:
        return requests.request(
            method, f"{r.url}/v1/kv/{key}", headers={"X-Consul-Token": token}, timeout=10, **kw
        )

    for k in ("open/a", "closed/a"):
        assert call("PUT", p + k, ACL_MANAGEMENT, data="one").json() is True
    at = int(call("GET", p, mine, params={"recurse": ""}).headers["X-Consul-Index"])
    for k in ("open/a", "closed/a"):
        assert call("PUT", p + k, ACL_MANAGEMENT, data="two").json() is True
    got = call("GET", p, mine, params={"recurse": "", "since": str(at)})
    assert got.headers[SINCE] == str(at) and _values(got) == {p + "open/a": "two"}
    everything = call("GET", p, ACL_MANAGEMENT, params={"recurse": "", "since": str(at)})
    assert _values(everything) == {p + "open/a": "two", p + "closed/a": "two"}


@given(bad=st.text(max_size=12).filter(lambda t: not (t.isascii() and t.isdigit())))
@settings(max_examples=60, deadline=None, database=None)
def test_any_since_that_is_not_an_index_is_a_400_naming_it_and_changes_nothing(registries, bad):
    for r in registries.values():
        p = _prefix()
        _put(r, p + "a", "one")
        before = _list(r, p)
        got = _list(r, p, since=bad)
        assert got.status_code == 400 and "since" in got.text, (bad, got.status_code, got.text)
        after = _list(r, p)
        assert _values(after) == _values(before) and _index(after) == _index(before)
