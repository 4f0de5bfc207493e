from pathlib import Path

import pytest

from shoal.dev.layout import ClusterSpec, parse_node_labels, plan_layout
from shoal.errors import BadRequest


def test_three_nodes_get_addresses_after_the_gateway_and_their_own_names():
    layout = plan_layout(ClusterSpec(name="shoal", nodes=3, subnet="10.99.0.0/24", root=Path("/r")))
    assert layout.bridge == "shoal-br"
    assert layout.gateway == "10.99.0.1"
    assert [(n.name, n.netns, n.address) for n in layout.nodes] == [
        ("node1", "shoal-node1", "10.99.0.11"),
        ("node2", "shoal-node2", "10.99.0.12"),
        ("node3", "shoal-node3", "10.99.0.13"),
    ]
    assert layout.nodes[0].engine_url == "tcp://10.99.0.11:2376"  # secure by default: dockerd's TLS port
    assert layout.docker_host == "tcp://10.99.0.1:2376" and layout.registry_url == "https://10.99.0.1:8501"
    assert layout.nodes[0].dir == Path("/r/shoal/node1")
    assert layout.state_file == Path("/r/shoal/state.json")


def test_an_insecure_cluster_keeps_the_plain_ports_and_the_manager_on_loopback():
    layout = plan_layout(ClusterSpec(name="shoal", nodes=1, subnet="10.99.0.0/24", secure=False))
    assert layout.nodes[0].engine_url == "tcp://10.99.0.11:2375"
    assert layout.docker_host == "tcp://127.0.0.1:2375" and layout.registry_url == "http://10.99.0.1:8500"


def test_zero_nodes_is_refused_with_the_way_out():
    with pytest.raises(BadRequest, match=r"--nodes 0: a cluster needs at least 1 node; try --nodes 3"):
        plan_layout(ClusterSpec(nodes=0))


def test_more_nodes_than_the_subnet_holds_is_refused():
    with pytest.raises(BadRequest, match=r"does not fit in --subnet 10.99.0.0/28 \(room for 4\)"):
        plan_layout(ClusterSpec(nodes=5, subnet="10.99.0.0/28"))


@pytest.mark.parametrize("subnet", ["10.99.0.1/24", "banana", "fd00::/64", "10.0.0.0/30"])
def test_bad_subnets_are_refused(subnet):
    with pytest.raises(BadRequest, match="--subnet"):
        plan_layout(ClusterSpec(subnet=subnet))


@pytest.mark.parametrize("name", ["", "Shoal", "1abc", "toolongname", "a-b"])
def test_bad_cluster_names_are_refused(name):
    with pytest.raises(BadRequest, match="--name"):
        plan_layout(ClusterSpec(name=name))


def test_interface_names_fit_linux_limit_even_with_many_nodes():
    layout = plan_layout(ClusterSpec(name="abcdefgh", nodes=2))
    assert all(len(n.veth) <= 15 for n in layout.nodes)
    with pytest.raises(BadRequest, match="longer than 15 bytes"):
        plan_layout(ClusterSpec(name="abcdefgh", nodes=100, subnet="10.99.0.0/16"))


def test_node_labels_go_to_their_node_only():
    labels = parse_node_labels(["node1=disk=ssd", "node1=zone=a", "node2=disk=hdd"])
    layout = plan_layout(ClusterSpec(nodes=3, labels=labels))
    assert layout.nodes[0].labels == ("disk=ssd", "zone=a")
    assert layout.nodes[1].labels == ("disk=hdd",)
    assert layout.nodes[2].labels == ()


@pytest.mark.parametrize("bad", ["node1", "node1=", "=disk=ssd", "node1==x"])
def test_malformed_labels_are_refused(bad):
    with pytest.raises(BadRequest, match="NODE=KEY=VALUE"):
        parse_node_labels([bad])


def test_label_for_a_node_outside_the_cluster_is_refused():
    with pytest.raises(BadRequest, match="node9, not a node of this cluster"):
        plan_layout(ClusterSpec(nodes=3, labels=parse_node_labels(["node9=disk=ssd"])))


def test_the_image_registry_is_on_the_gateway_port_5000_with_its_data_under_the_cluster_root():
    from shoal.dev import registry

    layout = plan_layout(ClusterSpec(name="shoal", nodes=2, subnet="10.99.0.0/24", root=Path("/r")))
    assert layout.image_registry == "10.99.0.1:5000"
    assert layout.image_registry_url == "https://10.99.0.1:5000"
    cfg = registry.config(layout)
    assert cfg["http"]["addr"] == "10.99.0.1:5000"
    assert cfg["storage"]["filesystem"]["rootdirectory"] == "/r/shoal/image-registry/data"
    tls = cfg["http"]["tls"]  # mutual TLS: the engines' node-CA client certificates and the admin's
    assert tls["certificate"] == "/r/shoal/tls/image-registry/cert.pem"
    assert tls["clientcas"] == ["/r/shoal/tls/node-ca.pem", "/r/shoal/tls/control-ca.pem"]
    assert layout.nodes[1].etc_docker_dir == Path("/r/shoal/node2/etc-docker")


def test_an_insecure_cluster_serves_the_image_registry_in_plain_http_and_its_engines_say_so():
    from shoal.dev import registry
    from shoal.dev.node import engine_process

    layout = plan_layout(ClusterSpec(name="shoal", nodes=1, subnet="10.99.0.0/24", secure=False))
    assert "tls" not in registry.config(layout)["http"]
    assert layout.image_registry_url == "http://10.99.0.1:5000"
    argv = engine_process(layout, layout.nodes[0]).argv
    assert argv[argv.index("--insecure-registry") + 1] == "10.99.0.1:5000"


def test_the_dev_images_are_seeded_under_the_registrys_name():
    from shoal.dev import registry

    layout = plan_layout(ClusterSpec(name="shoal", nodes=1, subnet="10.99.0.0/24"))
    assert registry.registry_tags(layout, ["redis:latest", "busybox:latest", "busybox:latest"]) == {
        "busybox:latest": "10.99.0.1:5000/busybox:latest",
        "redis:latest": "10.99.0.1:5000/redis:latest",
    }
