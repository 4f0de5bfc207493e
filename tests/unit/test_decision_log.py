"""Moves, promotions, replica assignments, reschedules and drains as decision records (shoal.manager
.decisions): the pure record, the log's keys and pruning, which record `shoal why DATASET` picks and how it
reads; and, over an in-memory registry, that a manager started afresh still answers with what an earlier
one logged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from shoal import keys
from shoal.cli.why import decision_lines
from shoal.data.model import Dataset
from shoal.errors import NotFound
from shoal.manager.decisions import (
    LOG_KEEP,
    Decisions,
    event_record,
    latest_of_dataset,
    log_key,
    newest_first,
    to_prune,
)
from shoal.manager.overview import overview

DS = "1f2e3d4c-0000-4000-8000-000000000001"
T = 1_700_000_000.0


def moved(at: float = T, target: str | None = "node2", dataset_id: str = DS) -> dict[str, Any]:
    reasons = ["shoal volume move: data1 from node1 to node2"]
    reasons += ["fenced at epoch 1: node2 holds the writable copy"] if target else ["undone before the fence"]
    return event_record("move", "data1", target, reasons, at, ["data1"], "node1", dataset_id)


def test_a_move_record_carries_its_nodes_dataset_and_reasons_as_data():
    r = moved()
    assert (r["kind"], r["name"], r["source"], r["target"], r["dataset"]) == (
        "move",
        "data1",
        "node1",
        "node2",
        DS,
    )
    assert r["reasons"] == [
        "shoal volume move: data1 from node1 to node2",
        "fenced at epoch 1: node2 holds the writable copy",
    ]
    # shaped as a placement too, so the dashboard's table shows it: the reasons under the source node
    assert r["placement"]["node"] == "node2"
    assert [x["reason"] for x in r["placement"]["rejected"]] == r["reasons"]


def test_log_keys_sort_by_time_within_a_kind_and_the_oldest_past_the_bound_go():
    records = [moved(T + i) for i in range(LOG_KEEP + 3)]
    promoted = event_record("promote", "data1", "node3", ["node1 is down"], T, ["data1"], "node1", DS)
    ks = [log_key(r) for r in reversed(records)] + [log_key(promoted)]
    assert all(k.startswith(keys.decision_log("move")) for k in ks[:-1])
    assert sorted(ks[:-1]) == [log_key(r) for r in records]
    # the three oldest moves go; the one promotion, alone in its kind, stays
    assert to_prune(ks) == sorted(log_key(r) for r in records[:3])
    assert to_prune(ks, keep=1000) == []


def test_memory_and_the_log_merge_newest_first_each_once():
    a, b, c = moved(T), moved(T + 1), moved(T + 2)
    assert [r["id"] for r in newest_first([a, b], [b, c])] == [c["id"], b["id"], a["id"]]


def test_a_dataset_shows_its_latest_move_or_promotion_before_any_replica_assignment():
    replica = event_record(
        "replica", "data1", "node3", ["profile gold asks 1 replica(s)"], T + 50, (), "node2", DS
    )
    old, new = moved(T), moved(T + 10)
    other = moved(T + 99, dataset_id="1f2e3d4c-0000-4000-8000-000000000002")
    assert latest_of_dataset([old, replica, new, other], DS) is new
    assert latest_of_dataset([replica, other], DS) is replica
    assert latest_of_dataset([other], DS) is None


def test_why_says_which_decision_it_shows_the_nodes_and_the_reasons():
    lines = decision_lines(moved())
    assert lines[0].startswith("dataset data1 (1f2e3d4c): its latest move, 2023-11-14 ")
    assert lines[1] == "  moved node1 → node2"
    assert lines[2:] == [
        "  because:",
        "    shoal volume move: data1 from node1 to node2",
        "    fenced at epoch 1: node2 holds the writable copy",
    ]
    assert decision_lines(moved(target=None))[1] == "  undone: it stays on node1"
    promoted = event_record("promote", "db", "node3", ["node2 is down"], T, ["db"], "node2", DS)
    assert decision_lines(promoted)[1].startswith("  promoted: node2 → node3")


def test_a_container_and_its_dataset_of_one_name_show_both():
    placement = {"name": "data1", "request": {"image": "redis"}, "placement": {"node": "node2", "steps": []}}
    lines = decision_lines({**placement, "dataset_decision": moved()})
    assert lines[0] == "data1 → node2"
    i = lines.index("")
    assert (
        lines[i + 1].startswith("dataset data1 (1f2e3d4c): its latest move")
        and "  moved node1 → node2" in lines
    )


def test_the_dashboard_says_where_an_undone_move_left_the_dataset():
    doc = overview([], {}, {}, [], {}, [], [moved(target=None), moved()], T, 30.0)
    assert [d["placement"]["node"] for d in doc["decisions"]] == ["stays on node1", "node2"]


# --- the log over a registry, across a manager restart ---------------------------------------------


@dataclass
class Pair:
    key: str
    value: Any

    def json(self) -> Any:
        return self.value


@dataclass
class MemoryRegistry:
    """The few calls Decisions makes, over a dict (the registry's own semantics are tested elsewhere)."""

    kv: dict[str, Any] = field(default_factory=dict)

    async def put(self, key: str, value: Any, **_: Any) -> bool:
        self.kv[key] = value
        return True

    async def get_json(self, key: str) -> Any:
        return self.kv.get(key)

    async def delete(self, key: str, **_: Any) -> bool:
        return self.kv.pop(key, None) is not None

    async def list_prefix(self, prefix: str, **_: Any) -> tuple[list[Pair], int]:
        return [Pair(k, v) for k, v in sorted(self.kv.items()) if k.startswith(prefix)], 1


def manager(reg: MemoryRegistry, datasets: list[Dataset]) -> SimpleNamespace:
    def locate(ref: str):
        raise NotFound(f"No such container: {ref}")

    async def find(ref: str):
        return locate(ref)

    cluster = SimpleNamespace(client=reg, datasets=datasets, locate=locate, find=find)
    return SimpleNamespace(cluster=cluster)


def test_a_new_manager_answers_why_for_a_dataset_an_earlier_one_moved():
    reg = MemoryRegistry()
    ds = [Dataset(DS, "data1", "bronze", "node2")]

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
        first = Decisions(manager(reg, ds))
        for i in range(LOG_KEEP + 5):
            await first.event(moved(T + i))
        await first.event(moved(T + 1000))
        again = Decisions(manager(reg, ds))  # the restarted manager: nothing in memory
        await asyncio.sleep(0)  # its first read of the log
        recent = again.recent()  # what the dashboard shows, before anyone asks `why`
        shown = await again.of("data1")
        with pytest.raises(NotFound, match="No such container: nope"):
            await again.of("nope")
        return recent, shown, [k for k in reg.kv if k.startswith(keys.DECISION_LOG)]

    recent, shown, logged = asyncio.run(main())
    assert (shown["time"], shown["source"], shown["target"]) == (T + 1000, "node1", "node2")
    assert recent[0]["id"] == shown["id"]
    assert len(logged) == LOG_KEEP  # the newest of its kind, no more
