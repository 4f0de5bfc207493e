"""The pure parts of a pull through the manager: how a reference splits, how a progress line names its
node, and what a failed pull says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.manager.images import node_line, pull_error, split_ref


def test_references_split_as_the_docker_cli_sends_them():
    assert split_ref("busybox") == ("busybox", "latest")
    assert split_ref("10.99.0.1:5000/a/b:1") == ("10.99.0.1:5000/a/b", "1")
    assert split_ref("10.99.0.1:5000/b") == ("10.99.0.1:5000/b", "latest")
    assert split_ref("b@sha256:" + "a" * 64) == ("b", "sha256:" + "a" * 64)


_part = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,9}", fullmatch=True)
_host = st.sampled_from(["", "10.99.0.1:5000/", "reg.example:443/"])


@given(host=_host, path=st.lists(_part, min_size=1, max_size=3), tag=st.one_of(st.none(), _tag))
def test_a_split_reference_joins_back_to_the_same_image(host, path, tag):
    repo = host + "/".join(path)
    ref = repo if tag is None else f"{repo}:{tag}"
    got_repo, got_tag = split_ref(ref)
    assert got_repo == repo and got_tag == (tag or "latest")


def test_each_progress_line_says_its_node_by_layer_id_or_by_status():
    got = node_line({"id": "abc", "status": "Downloading"}, "node2")
    assert got == {"id": "node2: abc", "status": "Downloading"}
    assert node_line({"status": "Digest: sha256:1"}, "node3") == {"status": "node3: Digest: sha256:1"}


def test_the_same_error_on_every_node_is_said_once():
    msg = "manifest for r/x:1 not found: manifest unknown: manifest unknown"
    assert pull_error({"node1": msg, "node2": msg, "node3": msg}, 3) == msg


def test_errors_on_some_nodes_name_them():
    got = pull_error({"node3": "no space left on device"}, 3)
    assert got == "pull failed on node3 of 3 nodes: node3: no space left on device"
    got = pull_error({"node1": "a", "node2": "b"}, 2)
    assert got == "pull failed on node1, node2 of 2 nodes: node1: a; node2: b"
