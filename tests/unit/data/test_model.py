import pytest

from shoal.data.model import DEFAULT_PROFILES, Dataset, Intent, check_remove, decide, parse_intent, parse_size
from shoal.errors import BadRequest, Conflict, NotFound

P = DEFAULT_PROFILES
IDS = ["f23ca986-0000-4000-8000-000000000001", "aaaa0000-0000-4000-8000-000000000002", "3"]


def test_names_carry_intent():
    assert parse_intent("myVol@gold", P) == Intent("myVol", profile="gold")
    assert parse_intent("demoVol-snap@snapshot-F23CA986", P) == Intent("demoVol-snap", snapshot_of="f23ca986")
    assert parse_intent("plain", P) == Intent("plain")
    assert parse_intent("v", P, {"profile": "silver", "size": "1G"}) == Intent("v", "silver", size=1 << 30)
    assert parse_size("512M") == 512 << 20 and parse_size("1.5g") == 3 << 29


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("name@nosuchprofile", "unknown storage profile 'nosuchprofile'"),
        ("x@snapshot-", "after @snapshot- give the first hex digits"),
        ("x@snapshot-zz", "after @snapshot- give the first hex digits"),
        ("a/b", "may not contain '/' or '..'"),
        ("a..b", "may not contain '/' or '..'"),
        ("v" * 256, "256 bytes; at most 255"),
        ("-x", "must start with a letter or digit"),
        ("x@", "names no profile"),
    ],
)
def test_bad_names_say_what_is_wrong(raw, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_intent(raw, P)


def test_a_new_dataset_goes_where_the_scheduler_chose_with_the_default_profile():
    d = decide(Intent("v"), "node2", [], IDS, 10.0, "v")
    assert d.dataset == Dataset(IDS[0], "v", "bronze", "node2", 0, "", "dataset", 10.0, "v")
    assert d.new == (d.dataset,)


def test_an_existing_name_is_found_and_a_profile_clash_refused():
    have = Dataset(IDS[0], "v", "gold", "node1")
    assert decide(Intent("v", "gold"), "node3", [have], IDS, 0).dataset == have
    assert decide(Intent("v", "gold"), "node3", [have], IDS, 0).new == ()
    with pytest.raises(Conflict, match="exists with profile gold, not bronze"):
        decide(Intent("v", "bronze"), "node3", [have], IDS, 0)


def test_a_snapshot_volume_is_a_snapshot_and_a_clone_on_the_sources_node():
    src = Dataset(IDS[0], "demoVol", "gold", "node1", size=5)
    d = decide(Intent("snap", snapshot_of="f23c"), "node3", [src], IDS[1:], 1.0, "snap@snapshot-f23c")
    snap, clone = d.new
    assert snap.kind == "snapshot" and snap.parent == src.id and snap.node == "node1"
    assert clone.kind == "dataset" and clone.parent == snap.id and clone.node == "node1"
    assert clone.name == "snap" and clone.profile == "gold" and d.dataset == clone
    again = decide(Intent("snap", snapshot_of="f23c"), "node3", [src, snap, clone], IDS, 2.0)
    assert again.dataset == clone and again.new == ()


def test_snapshot_prefixes_that_match_nothing_or_several_list_the_candidates():
    a = Dataset("abc1", "one", "gold", "n1")
    b = Dataset("abc2", "two", "gold", "n2")
    with pytest.raises(
        NotFound, match=r"no dataset id starts with 'ff'; datasets: one \(abc1\), two \(abc2\)"
    ):
        decide(Intent("x", snapshot_of="ff"), "n1", [a, b], IDS, 0)
    with pytest.raises(BadRequest, match=r"ambiguous: it matches one \(abc1\), two \(abc2\)"):
        decide(Intent("x", snapshot_of="abc"), "n1", [a, b], IDS, 0)


def test_removal_is_refused_while_mounted_or_with_children():
    a = Dataset("a", "one", "gold", "n1")
    s = Dataset("s", "", "gold", "n1", parent="a", kind="snapshot")
    with pytest.raises(Conflict, match="mounted by 2 container"):
        check_remove(a, [a], 2)
    with pytest.raises(Conflict, match="has snapshot s made from it"):
        check_remove(a, [a, s], 0)
    check_remove(s, [a, s], 0)
