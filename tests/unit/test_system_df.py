"""`docker system df` over every node (shoal.manager.system.merge_df, pure): a cluster-wide volume is one
row under its bare name, one node's volume keeps node/name, an image id counts once."""

from __future__ import annotations

from shoal.manager.system import merge_df

MID = "ab" * 32


def _vol(name: str, size: int, refs: int, mid: str = "") -> dict:
    labels = {"com.docker.swarm.id": mid} if mid else {}
    return {"Name": name, "Labels": labels, "UsageData": {"Size": size, "RefCount": refs}}


def test_a_cluster_wide_volume_is_one_row_with_its_copies_summed_and_a_local_one_keeps_its_node():
    img = {"Id": "sha256:1", "Containers": 1}
    per_node = [
        ("node1", {"Images": [img], "Volumes": [_vol("data", 10, 1, MID), _vol("scratch", 5, 0)]}),
        ("node2", {"Images": [img], "Volumes": [_vol("data", 7, 0, MID)]}),
        ("node3", {"Images": [], "Volumes": [_vol("data", -1, -1, MID)]}),  # -1: the engine did not count
    ]
    df = merge_df(per_node)
    assert [(v["Name"], v["UsageData"]) for v in df["Volumes"]] == [
        ("data", {"Size": 17, "RefCount": 1}),
        ("node1/scratch", {"Size": 5, "RefCount": 0}),
    ]
    assert [(i["Id"], i["Containers"]) for i in df["Images"]] == [("sha256:1", 2)]
    assert per_node[0][1]["Volumes"][0]["UsageData"] == {"Size": 10, "RefCount": 1}  # inputs untouched
