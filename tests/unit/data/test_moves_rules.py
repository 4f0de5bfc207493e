"""The pure rules around moves, replicas and rescheduling: move records checked before use, the newest
copy and the base of an increment, what is pruned, the replica assignment (no copy is ever dropped), the
node-down rule, classic Swarm's reschedule policy words, and the create request a moved container keeps."""

from __future__ import annotations

import json
import uuid

import pytest

from shoal import keys
from shoal.data.model import DEFAULT_PROFILES, Dataset, Refused
from shoal.data.moves import (
    FINAL,
    Move,
    Replicas,
    ReplicaStatus,
    after_fence,
    begin_ops,
    check_move,
    copy_name,
    copy_order,
    fence_ops,
    newest_common,
    parse_move,
    promotion_ops,
    replica_plan,
    replicas_wanted,
    serves_writable,
    to_prune,
)
from shoal.errors import BadRequest, Conflict
from shoal.manager.failure import Seen, is_down, observe
from shoal.manager.moves import body_from_inspect, no_copy
from shoal.manager.reschedule import reschedule_policies, with_swarm_id, without_lost_node
from shoal.manager.spec import container_spec

ID = str(uuid.UUID(int=9))
D = Dataset(ID, "db", "gold", "node2", 0, "", "dataset", 1.0, "db@gold")


def test_only_the_node_the_record_names_at_its_epoch_serves_writable():
    assert serves_writable(D, "node2", "owner", 0)
    assert not serves_writable(D, "node2", "owner", 1)  # the pool is ahead: the registry lost a fence
    assert not serves_writable(D, "node2", "replica", 0)
    assert not serves_writable(D, "node1", "owner", 0)
    assert not serves_writable(None, "node2", "owner", 0)


def test_a_move_record_is_checked_before_anything_acts_on_it():
    m = Move(ID, "db", "node2", "node3", started=5.0)
    assert parse_move(ID, m.to_dict()) == m
    for bad in (
        {**m.to_dict(), "id": "../x"},
        {**m.to_dict(), "target": "node2"},
        {**m.to_dict(), "phase": "teleport"},
        {**m.to_dict(), "epoch": -1},
        "nope",
    ):
        assert isinstance(parse_move(ID, bad), Refused)


def test_a_move_asks_a_dataset_a_known_other_node_and_no_move_under_way():
    check_move(D, "node3", ["node1", "node2", "node3"], None)
    with pytest.raises(BadRequest, match="no node named 'node9'"):
        check_move(D, "node9", ["node1", "node2"], None)
    with pytest.raises(BadRequest, match="on node2 already"):
        check_move(D, "node2", ["node2"], None)
    with pytest.raises(Conflict, match="already moving"):
        check_move(D, "node3", ["node3"], Move(ID, "db", "node2", "node1"))


def test_the_fence_names_the_target_at_the_next_epoch_comparing_on_both_records():
    m = Move(ID, "db", "node2", "node3", FINAL, 0)
    new, ops = fence_ops(D, 11, m, 12, 9.0, Replicas(ID, ("node3", "node1")), 13)
    assert new.node == "node3" and new.epoch == 1
    assert [(o["Verb"], o.get("Index")) for o in ops] == [
        ("cas", 11),
        ("cas", 12),
        ("cas", 13),
        ("delete", None),
    ]
    assert ops[3]["Key"] == keys.replica_status(ID, "node3")
    assert ops[2]["Value"]["nodes"] == ["node1", "node2"]  # the old owner's copy stays tracked
    with pytest.raises(Conflict):
        fence_ops(D, 11, Move(ID, "db", "node2", "node3"), 12, 9.0)  # not in its final phase


def test_a_promotion_puts_the_old_owner_in_the_replicas_place():
    new, ops = promotion_ops(D, 3, "node1", Replicas(ID, ("node2",)), 4)
    assert new.node == "node1" and new.epoch == 1 and ops[1]["Value"]["nodes"] == ["node2"]
    assert ops[2] == {"Verb": "delete", "Key": keys.replica_status(ID, "node1")}  # no stale lag left
    with pytest.raises(BadRequest):
        promotion_ops(D, 3, "node1", Replicas(ID, ("node1",)), 4)


def test_the_newest_copy_counts_a_put_away_copy_by_its_epoch():
    a, b = copy_name(0, 100.0), copy_name(0, 200.0)
    old = "old-e000000-0000000250000"
    after = copy_name(1, 150.0)
    assert sorted([after, old, b, a], key=copy_order) == [a, b, old, after]
    assert newest_common([a, b], [a]) == a and newest_common([a], []) == ""


def test_pruning_keeps_the_newest_and_never_a_pinned_base():
    names = [copy_name(0, float(t)) for t in range(6)]
    assert to_prune(names, keep=3) == names[:3]
    assert to_prune(names, keep=3, pinned=[names[0]]) == names[1:3]
    assert to_prune(["old-e000000-0000000000001", *names[:2]], keep=3) == []


def test_no_copy_is_ever_dropped_from_the_replica_assignment():
    p = replica_plan(D, 1, Replicas(ID, ("node1", "node3")), ["node1", "node2", "node3"])
    assert p.keep == ("node1", "node3") and p.add == 0  # beyond the profile's one: still kept
    p = replica_plan(D, 1, Replicas(ID, ("node2",)), ["node1", "node2"])  # the owner is no replica
    assert p.keep == () and p.add == 1
    # a node the manager does not list (its cache not filled yet, or the node removed) keeps its place:
    # its copy is still on its disk; it does not count towards the profile's number
    p = replica_plan(D, 1, Replicas(ID, ("node7",)), ["node1", "node2", "node3"])
    assert p.keep == ("node7",) and p.add == 1
    assert replica_plan(D, 1, Replicas(ID, ("node7",)), []).keep == ("node7",)


def test_a_move_puts_its_target_in_the_assignment_before_any_copy_is_made():
    m = Move(ID, "db", "node2", "node3")
    ops = begin_ops(m, 5, Replicas(ID, ("node1",)), 6)
    assert [(o["Verb"], o["Key"], o["Index"]) for o in ops] == [
        ("check-index", keys.dataset(ID), 5),
        ("cas", keys.move(ID), 0),
        ("cas", keys.replicas(ID), 6),
    ]
    assert ops[2]["Value"]["nodes"] == ["node1", "node3"]
    assert begin_ops(m, 5)[2]["Value"]["nodes"] == ["node3"] and begin_ops(m, 5)[2]["Index"] == 0
    m = Move(ID, "db", "node2", "node3")
    assert after_fence(Replicas(ID, ("node3",)), m).nodes == ("node2",)
    assert after_fence(None, m).nodes == ("node2",)
    assert after_fence(Replicas(ID, ("node1",)), m).nodes == ("node1", "node2")


def test_gold_asks_one_replica_once_the_dataset_is_a_few_seconds_old():
    assert replicas_wanted(D, DEFAULT_PROFILES, D.created + 10) == 1
    assert replicas_wanted(D, DEFAULT_PROFILES, D.created + 1) == 0
    assert replicas_wanted(Dataset(ID, "b", "bronze", "n", created=1.0), DEFAULT_PROFILES, 99) == 0
    assert ReplicaStatus("node1", "s", taken=10.0).lag(12.5) == 2.5 and ReplicaStatus("n").lag(1) is None


def test_a_node_is_down_only_when_both_halves_hold_for_the_whole_time():
    s = observe(None, critical=True, answered=True, now=0.0)
    s = observe(s, critical=True, answered=False, now=1.0)
    assert not is_down(s, 1.5, after=1.0)
    assert is_down(s, 2.0, after=1.0)
    s = observe(s, critical=True, answered=True, now=2.1)  # the engine answered: the clock starts over
    assert not is_down(observe(s, True, False, 2.2), 3.0, after=1.0)
    assert not is_down(Seen(None, 0.0), 100.0)


def test_classic_swarms_reschedule_words_and_nothing_else():
    body, policies = reschedule_policies({"Env": ["A=1", "reschedule:on-node-failure"]})
    assert policies == ["on-node-failure"] and body["Env"] == ["A=1"]
    assert json.loads(body["Labels"]["com.docker.swarm.reschedule-policies"]) == ["on-node-failure"]
    label = {"Labels": {"com.docker.swarm.reschedule-policies": '["on-node-failure"]'}}
    assert reschedule_policies(label)[1] == ["on-node-failure"]
    with pytest.raises(BadRequest, match="unknown reschedule policy 'sometimes'"):
        reschedule_policies({"Env": ["reschedule:sometimes"]})
    with pytest.raises(BadRequest, match="JSON list"):
        reschedule_policies({"Labels": {"com.docker.swarm.reschedule-policies": "on-node-failure"}})
    assert reschedule_policies({"Env": ["reschedule:off"]})[1] == ["off"]


def test_every_container_gets_a_swarm_id_once():
    got = with_swarm_id({"Image": "x"})
    sid = got["Labels"]["com.docker.swarm.id"]
    assert len(sid) == 64 and int(sid, 16) >= 0 and with_swarm_id(got) == got


def test_rescheduling_drops_only_the_hard_node_pin():
    spec, _ = container_spec({"Image": "x", "Env": ["constraint:node==node2", "constraint:disk==ssd"]}, "c")
    freed, why = without_lost_node(spec, "node2")
    assert [str(e) for e in freed.constraints] == ["disk==ssd"] and "node==node2" in why[0]


def test_a_moved_container_keeps_its_request_without_the_image_copy_and_old_limits():
    body = no_copy({"HostConfig": {"Binds": ["db@gold:/data", "other:/o:ro"]}}, "db")
    assert body["HostConfig"]["Binds"] == ["db@gold:/data:nocopy", "other:/o:ro"]
    doc = {
        "Id": "abcdef1234567890",
        "Config": {"Hostname": "abcdef123456", "Image": "redis", "Cmd": ["redis-server"]},
        "HostConfig": {"BlkioDeviceReadBps": [{"Path": "/dev/loop3", "Rate": 5}], "Binds": ["db@gold:/data"]},
        "NetworkSettings": {"Networks": {"bridge": {}, "app": {}}},
    }
    got = body_from_inspect(doc, "/dev/loop3")
    assert "Hostname" not in got and got["HostConfig"]["BlkioDeviceReadBps"] == []
    assert got["NetworkingConfig"] == {"EndpointsConfig": {"app": {}}} and got["Cmd"] == ["redis-server"]
