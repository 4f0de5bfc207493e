"""Records are checked before anything acts on them: a forged record (ids or paths that try to leave the
pool, NUL, 4 KB ids, bad uuids, wrong types) is refused with the reason, and nothing in a usable record can
become a path outside the pool."""

from __future__ import annotations

import logging
import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.agent.convergence import failed, users_of
from shoal.cli.volume import detail_lines, report_lines, state_of
from shoal.data.model import (
    Dataset,
    Deletion,
    Refused,
    containers_using,
    is_dataset_id,
    parse_deletion,
    parse_record,
)
from shoal.data.plan import OnDisk, PoolState, Step
from shoal.data.pool import ondisk
from shoal.logs import LogfmtFormatter

GOOD = str(uuid.uuid4())


def doc(**over) -> dict:
    return {"id": GOOD, "name": "data", "profile": "gold", "node": "node1", "kind": "dataset", **over}


def test_a_good_record_is_a_dataset():
    assert parse_record(GOOD, doc(size=5, created=1.5)) == Dataset(
        GOOD, "data", "gold", "node1", 5, "", created=1.5
    )


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (GOOD, doc(id="../../etc"), "id '../../etc' is not a dataset id"),
        ("../../etc", doc(id="../../etc"), "is not a dataset id"),
        (GOOD, doc(id="/etc"), "id '/etc' is not a dataset id"),
        (GOOD, doc(id=GOOD[:-1] + "\x00"), "is not a dataset id"),
        ("a" * 4096, doc(id="a" * 4096), "is not a dataset id"),
        (GOOD, doc(id=GOOD.upper()), "is not a dataset id"),
        (GOOD, doc(id="not-a-uuid"), "is not a dataset id"),
        (GOOD, doc(id=str(uuid.uuid4())), "but is stored under"),
        (GOOD, doc(parent="../../etc"), "parent '../../etc' is not a dataset id"),
        (GOOD, doc(name="../x"), "is not a volume name"),
        (GOOD, doc(name="x\n"), "is not a volume name"),
        (GOOD, doc(node="../n"), "node '../n' is not a node name"),
        (GOOD, doc(node=["node1"]), "is not a node name"),
        (GOOD, doc(profile=""), "is not a profile name"),
        (GOOD, doc(kind="volume"), "kind 'volume' is not one of"),
        (GOOD, doc(kind="snapshot", name="x", parent=GOOD), "a snapshot has no name"),
        (GOOD, doc(size="big"), "size 'big' is not a number of bytes"),
        (GOOD, doc(size=True), "is not a number of bytes"),
        (GOOD, doc(size=-1), "is not a number of bytes"),
        (GOOD, doc(created=math.nan), "created nan is not a time"),
        (GOOD, doc(volume="x" * 2000), "is not a short line of text"),
        (GOOD, ["not", "an", "object"], "not a JSON object"),
        (GOOD, None, "not a JSON object"),
    ],
)
def test_forged_records_are_refused_with_the_reason(key, value, reason):
    got = parse_record(key, value)
    assert isinstance(got, Refused) and reason in got.reason, got
    assert len(str(got)) < 400  # a report quotes a bounded, escaped part of what it refused


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=10,
)
fields = st.sampled_from(["id", "name", "profile", "node", "kind", "parent", "size", "created", "volume"])


@settings(max_examples=600, deadline=None)
@given(
    key=st.one_of(st.just(GOOD), st.text(max_size=80)),
    forged=st.dictionaries(fields, json_values | st.just(GOOD) | st.just("../../etc"), max_size=9),
)
def test_no_record_is_ever_both_usable_and_a_way_out_of_the_pool(key, forged):
    got = parse_record(key, {**doc(), **forged})
    if isinstance(got, Dataset):
        assert is_dataset_id(got.id) and got.id == key
        assert got.parent == "" or is_dataset_id(got.parent)
        assert "/" not in got.name and ".." not in got.name and "\x00" not in got.name
        assert "/" not in got.node and got.node
    else:
        assert isinstance(got, Refused) and got.reason


@settings(max_examples=500, deadline=None)
@given(key=st.text(max_size=40), value=json_values)
def test_any_deletion_request_is_parsed_or_refused_never_an_exception(key, value):
    got = parse_deletion(key, value)
    assert isinstance(got, Deletion | Refused)
    if isinstance(got, Deletion):
        assert is_dataset_id(got.id) and got.id == key


def test_a_deletion_request_names_its_dataset_and_node():
    assert parse_deletion(GOOD, {"id": GOOD, "node": "node2", "by": "shoal volume rm"}) == Deletion(
        GOOD, "node2", by="shoal volume rm"
    )
    assert isinstance(parse_deletion(GOOD, {"id": "../x", "node": "node2"}), Refused)
    assert isinstance(parse_deletion(GOOD, {"id": GOOD, "node": "../n"}), Refused)


def test_the_pools_own_record_round_trips_and_refuses_what_is_not_one():
    d = Dataset(GOOD, "data", "gold", "", 5, "", "dataset", 1.5, "data@gold")
    rec = ondisk.from_doc(GOOD, ondisk.to_doc(d))
    assert isinstance(rec, ondisk.PoolRecord) and rec.dataset == d and rec.deleting == 0.0
    assert ondisk.from_doc(GOOD, ondisk.to_doc(d, deleting=3.0)).deleting == 3.0
    assert isinstance(ondisk.from_doc(GOOD, {**ondisk.to_doc(d), "format": "other"}), Refused)
    assert isinstance(ondisk.from_doc(GOOD, {**ondisk.to_doc(d), "id": "../../etc"}), Refused)


# --- who uses a dataset (the check before any deletion) ------------------------------------------------


def _ct(name: str, *mounts: dict) -> dict:
    return {"Id": "c" * 64, "Names": [f"/{name}"], "Mounts": list(mounts)}


def test_containers_using_a_dataset_by_any_of_its_volume_names_or_its_path():
    d = Dataset(GOOD, "data", "gold", "node1")
    path = f"/flocker/{GOOD}"
    containers = [
        _ct("a", {"Type": "volume", "Name": "data@gold", "Driver": "flocker", "Source": ""}),
        _ct("b", {"Type": "volume", "Name": "data", "Driver": "shoal", "Source": path}),
        _ct("c", {"Type": "bind", "Source": f"{path}/sub"}),
        _ct("d", {"Type": "volume", "Name": "data", "Driver": "local", "Source": "/var/lib/docker/x"}),
        _ct("e", {"Type": "volume", "Name": "database@gold", "Driver": "shoal"}),
        _ct("f", "not a mount"),
    ]
    assert containers_using(d, containers, path) == ["a", "b", "c"]


def test_users_of_counts_the_plugins_own_mounts_and_none_means_the_engine_was_not_asked():
    pool = PoolState({GOOD: OnDisk(GOOD, record=Dataset(GOOD, "data", "gold", ""))})
    assert users_of(pool, None, {}, lambda i: f"/flocker/{i}") is None
    assert users_of(pool, [], {GOOD: ["f" * 64]}, lambda i: f"/flocker/{i}") == {
        GOOD: ("mount ffffffffffff",)
    }
    assert users_of(pool, [], {}, lambda i: f"/flocker/{i}") == {}


# --- the loop's pure parts ---------------------------------------------------------------------------


def test_a_failed_step_backs_off_doubling_to_a_minute():
    step = Step("clone", GOOD, str(uuid.uuid4()))
    f = None
    delays = []
    for _ in range(9):
        f = failed(f, step, "parent missing", 100.0, 0.5)
        delays.append(f.retry_at - 100.0)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0] and f.attempts == 9
    assert failed(None, step, "x", 0.0, 0.0).retry_at == pytest.approx(0.8)  # jitter: 0.8x..1.2x


def test_log_lines_are_key_value():
    record = logging.LogRecord("shoal.agent", logging.INFO, "", 0, "step applied", (), None)
    record.kv = {"step": "create", "dataset": GOOD}
    assert LogfmtFormatter().format(record).endswith(f'event="step applied" step=create dataset={GOOD}')
    record.kv = {"error": "no such file"}
    assert LogfmtFormatter().format(record).endswith('event="step applied" error="no such file"')


def test_ls_says_what_state_each_dataset_is_in():
    d = Dataset(GOOD, "data", "gold", "node1")
    assert state_of(d, {}) == "-"
    assert state_of(Dataset(GOOD, "data", "gold", "n", recovered=5.0), {}) == "recovered"
    clash = Dataset(GOOD, "data", "gold", "n", conflict="name data is held by dataset x")
    assert state_of(clash, {}) == "conflict"
    [text] = detail_lines([clash], {})
    assert text.startswith(f"n: conflict: data ({GOOD}): name data is held by dataset x; reach it by id")
    assert state_of(d, {GOOD: Deletion(GOOD, "node1")}) == "deleting"
    assert state_of(d, {GOOD: Deletion(GOOD, "node1", refused="in use")}) == "rm refused"
    assert detail_lines([d], {GOOD: Deletion(GOOD, "node1", refused="in use")}) == [
        f"node1: rm refused: data ({GOOD}): in use"
    ]
    reports = {"node2": {"reports": ["refused record x: bad"], "failing": [{"step": "clone a from b",
               "error": "missing", "attempts": 3, "retry_in": 4.0}]}}  # fmt: skip
    assert report_lines(reports) == [
        "node2: refused record x: bad",
        "node2: failing: clone a from b: missing (attempt 3, next in 4.0s)",
    ]
