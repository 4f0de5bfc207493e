from dataclasses import replace

from shoal.dev.layout import ClusterSpec, plan_layout
from shoal.dev.preflight import NODE_MEMORY_MB, HostFacts, check

LAYOUT = plan_layout(ClusterSpec(name="shoal", nodes=3, subnet="10.99.0.0/24"))
HOST = HostFacts(
    platform="linux",
    euid=0,
    missing_tools=(),
    mem_available_mb=24_000,
    netns=frozenset(),
    links=frozenset({"lo", "eth0"}),
    networks=("127.0.0.1/8", "192.0.2.2/24", "192.0.2.0/24"),
)


def _replace(**kw) -> HostFacts:
    return replace(HOST, **kw)


def test_a_ready_host_passes():
    assert check(LAYOUT, HOST) == []


def test_not_linux_says_so_and_where_to_run_it():
    [msg] = check(LAYOUT, _replace(platform="darwin"))
    assert "needs Linux" in msg and "darwin" in msg and "Debian or Ubuntu" in msg


def test_not_root_says_to_use_sudo():
    [msg] = check(LAYOUT, _replace(euid=1000))
    assert msg.startswith("shoal dev must run as root") and "sudo" in msg


def test_missing_dockerd_names_the_package():
    [msg] = check(LAYOUT, _replace(missing_tools=("dockerd", "mkfs.btrfs")))
    assert "dockerd, mkfs.btrfs not found" in msg
    assert "apt-get install btrfs-progs docker.io" in msg


def test_too_many_nodes_for_memory_names_the_most_that_fit():
    layout = plan_layout(ClusterSpec(nodes=50))
    [msg] = check(layout, _replace(mem_available_mb=NODE_MEMORY_MB * 10 + 5))
    assert "--nodes 50 is more than this host can hold" in msg
    assert "use --nodes 10 or fewer" in msg


def test_existing_netns_of_the_same_name_clashes():
    [msg] = check(LAYOUT, _replace(netns=frozenset({"shoal-node2"})))
    assert "network namespace shoal-node2 already exists" in msg and "ip netns del shoal-node2" in msg


def test_existing_bridge_of_the_same_name_clashes():
    [msg] = check(LAYOUT, _replace(links=frozenset({"shoal-br"})))
    assert "'shoal-br' already exists" in msg and "--name" in msg


def test_subnet_overlapping_a_host_network_clashes():
    [msg] = check(LAYOUT, _replace(networks=("10.99.0.0/16",)))
    assert "--subnet 10.99.0.0/24 clashes with 10.99.0.0/16" in msg


def test_default_route_does_not_count_as_a_clash():
    assert check(LAYOUT, _replace(networks=("0.0.0.0/0",))) == []
