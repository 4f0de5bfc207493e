import pytest

from shoal.data.model import DEFAULT_PROFILES, Dataset, PoolFull, decide_clone, find
from shoal.data.profiles import profiles_from_doc
from shoal.data.requests import dataset_requests, dataset_volumes, decide_all, with_limits
from shoal.errors import BadRequest, Conflict, NotFound
from shoal.manager.spec import volume_uses

SRC = Dataset("f23ca986-1", "demoVol", "gold", "node1")


def _body(*binds: str, driver: str = "flocker") -> dict:
    return {"HostConfig": {"VolumeDriver": driver, "Binds": list(binds)}}


def test_only_the_dataset_drivers_volumes_count():
    assert dataset_volumes(volume_uses(_body("a@gold:/d", "/host:/h"))) == ["a@gold"]
    assert dataset_volumes(volume_uses(_body("a@gold:/d", driver="local"))) == []
    mounts = {
        "HostConfig": {
            "Mounts": [
                {"Type": "volume", "Source": "m", "VolumeOptions": {"DriverConfig": {"Name": "shoal"}}}
            ]
        }
    }
    assert dataset_volumes(volume_uses(mounts)) == ["m"]


def test_existing_datasets_and_snapshot_sources_pull_the_container():
    reqs = dataset_requests(
        volume_uses(_body("demoVol@gold:/a", "snap@snapshot-f23c:/b", "new@silver:/c")),
        [SRC],
        DEFAULT_PROFILES,
    )
    assert [r.follows for r in reqs] == ["demoVol", "demoVol", None]
    with pytest.raises(NotFound):
        dataset_requests(volume_uses(_body("x@snapshot-00:/b")), [SRC], DEFAULT_PROFILES)


def test_decide_all_refuses_a_full_pool_and_returns_new_records():
    reqs = dataset_requests(volume_uses(_body("new@silver:/c")), [], DEFAULT_PROFILES)
    used, new = decide_all(reqs, "node2", [], "bronze", 1 << 30, ["id1"], 0.0)
    assert used == new and new[0].node == "node2" and new[0].profile == "silver"
    with pytest.raises(PoolFull, match="the pool on node2 is full: 1 MiB free"):
        decide_all(reqs, "node2", [], "bronze", 1 << 20, ["id2"], 0.0)


def test_profile_limits_land_in_the_host_config_strictest_first():
    used = [Dataset("1", "a", "bronze", "n"), Dataset("2", "b", "silver", "n")]
    out = with_limits({"HostConfig": {"Memory": 1}}, used, DEFAULT_PROFILES, "/dev/loop7")
    assert out["HostConfig"]["BlkioDeviceReadBps"] == [{"Path": "/dev/loop7", "Rate": 10 << 20}]
    assert out["HostConfig"]["Memory"] == 1
    assert with_limits({}, [Dataset("1", "a", "gold", "n")], DEFAULT_PROFILES, "/dev/loop7") == {
        "HostConfig": {}
    }


def test_profiles_file():
    profiles, default = profiles_from_doc(
        {"default": "fast", "profiles": {"fast": {}, "slow": {"read_bps": "1M"}}}
    )
    assert default == "fast" and profiles["slow"].read_bps == 1 << 20
    with pytest.raises(BadRequest, match="unknown key speed"):
        profiles_from_doc({"profiles": {"x": {"speed": 1}}})
    with pytest.raises(BadRequest, match="default profile 'nope'"):
        profiles_from_doc({"default": "nope", "profiles": {"x": {}}})


def test_clone_of_a_dataset_goes_through_a_snapshot():
    snap, clone = decide_clone(SRC, "copy", [SRC], ["s1", "c1"], 0.0)
    assert snap.kind == "snapshot" and snap.parent == SRC.id and clone.parent == "s1" and clone.name == "copy"
    (only,) = decide_clone(snap, "copy2", [SRC, snap], ["c2"], 0.0)
    assert only.parent == "s1"
    with pytest.raises(Conflict):
        decide_clone(SRC, "demoVol", [SRC], ["x", "y"], 0.0)
    assert find([SRC, snap], "s1") == snap and find([SRC], "demoVol") == SRC


def test_an_intent_name_without_a_driver_becomes_a_dataset_mount():
    from shoal.manager.spec import intent_binds_to_mounts

    body = {"HostConfig": {"Binds": ["myVol@gold:/data/", "plain:/p", "/h:/h:ro"]}}
    out = intent_binds_to_mounts(body)
    assert out["HostConfig"]["Binds"] == ["plain:/p", "/h:/h:ro"]
    [m] = out["HostConfig"]["Mounts"]
    assert (
        m["Source"] == "myVol@gold"
        and m["Target"] == "/data/"
        and m["VolumeOptions"]["DriverConfig"]["Name"] == "shoal"
    )
    assert dataset_volumes(volume_uses(out)) == ["myVol@gold"]
    assert intent_binds_to_mounts(_body("x@gold:/d")) == _body("x@gold:/d")  # a driver was given: as asked
