"""`shoal dev up --managers 3|5`: where each manager lives and what it is started with, from the layout alone.

One manager (the default) must be exactly what it was: the single-manager argv, state file and env are
compared with literal values below.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from shoal.dev import state, tls
from shoal.dev.cluster import env_lines, managers_covering
from shoal.dev.layout import ClusterSpec, plan_layout
from shoal.dev.node import cluster_services, manager_processes, node_services
from shoal.dev.preflight import HostFacts, check
from shoal.errors import BadRequest

PY = sys.executable
SPEC = ClusterSpec(name="ha", nodes=2, subnet="10.99.23.0/24", root=Path("/r"), managers=3)


def test_one_manager_is_the_default_and_lays_out_no_manager_namespace():
    layout = plan_layout(ClusterSpec(name="ha", nodes=2, subnet="10.99.23.0/24", root=Path("/r")))
    assert layout.managers == ()
    assert layout.docker_host == "tcp://10.99.23.1:2376"
    assert layout.registry_url == "https://10.99.23.1:8501"
    assert layout.join_url == "https://10.99.23.1:2377"
    assert layout.join_urls == ("https://10.99.23.1:2377",)
    assert layout.dns_addrs == ("10.99.23.1:8600",)


@pytest.mark.parametrize("count", [3, 5])
def test_each_manager_gets_its_own_namespace_and_an_address_below_the_first_node(count):
    layout = plan_layout(replace(SPEC, managers=count))
    assert [(m.name, m.netns, m.veth, m.address, m.dir) for m in layout.managers] == [
        (f"manager{i}", f"ha-mgr{i}", f"ha-mgr{i}", f"10.99.23.{1 + i}", Path(f"/r/ha/manager{i}"))
        for i in range(1, count + 1)
    ]
    nodes = {n.address for n in layout.nodes}
    assert nodes == {"10.99.23.11", "10.99.23.12"}
    assert nodes.isdisjoint(m.address for m in layout.managers)
    assert layout.gateway not in {m.address for m in layout.managers}
    # the cluster's Docker API, Consul API and join listener are manager1's; the lists name every one
    assert layout.docker_host == "tcp://10.99.23.2:2376"
    assert layout.registry_url == "https://10.99.23.2:8501"
    assert layout.join_url == "https://10.99.23.2:2377"
    assert layout.dashboard_url == "https://10.99.23.2:2376/dashboard"
    assert layout.manager_hosts == tuple(f"tcp://10.99.23.{1 + i}:2376" for i in range(1, count + 1))
    assert layout.etcd_store == "etcd://" + ",".join(f"10.99.23.{1 + i}:2379" for i in range(1, count + 1))


def test_manager_interface_names_fit_linux_limit_with_the_longest_cluster_name():
    layout = plan_layout(ClusterSpec(name="abcdefgh", nodes=1, managers=5))
    assert [m.veth for m in layout.managers][-1] == "abcdefgh-mgr5"
    assert all(len(m.veth.encode()) <= 15 and len(m.netns.encode()) <= 15 for m in layout.managers)


def test_managers_fit_the_smallest_subnet_beside_its_nodes():
    layout = plan_layout(ClusterSpec(name="s", nodes=4, subnet="10.99.0.0/28", managers=5))
    assert [m.address for m in layout.managers] == [f"10.99.0.{i}" for i in range(2, 7)]
    assert [n.address for n in layout.nodes] == [f"10.99.0.{i}" for i in range(11, 15)]


@pytest.mark.parametrize(("count", "instead"), [(2, "1 or 3"), (4, "3 or 5"), (6, "5")])
def test_an_even_number_of_managers_is_refused_naming_quorum(count, instead):
    with pytest.raises(BadRequest, match=rf"--managers {count}: etcd needs a quorum") as e:
        plan_layout(replace(SPEC, managers=count))
    assert f"use --managers {instead}" in str(e.value)


@pytest.mark.parametrize("count", [0, -1, 7])
def test_other_manager_counts_are_refused_with_the_ones_allowed(count):
    with pytest.raises(BadRequest, match=rf"--managers {count}: a dev cluster has 1, 3 or 5 managers"):
        plan_layout(replace(SPEC, managers=count))


def test_several_managers_without_tls_are_refused():
    with pytest.raises(BadRequest, match=r"--managers 3 needs TLS .* drop --insecure"):
        plan_layout(replace(SPEC, secure=False))


def test_asking_a_single_manager_cluster_for_manager_2_names_the_way_out():
    layout = plan_layout(replace(SPEC, managers=1))
    with pytest.raises(BadRequest, match="has a single manager.*--managers 3"):
        layout.manager(2)
    with pytest.raises(BadRequest, match=r"no manager 4 .*managers are 1\.\.3"):
        plan_layout(SPEC).manager(4)


# --- what each manager is started with -----------------------------------------------------------------


def test_each_manager_runs_its_etcd_member_then_a_manager_serving_every_api_on_its_own_address():
    layout = plan_layout(SPEC)
    tlsd = "/r/ha/tls"
    for m in layout.managers:
        etcd, manager = manager_processes(layout, m)
        a = m.address
        assert (etcd.name, etcd.tier, etcd.netns) == ("etcd", 0, f"ha-mgr{m.index}")
        assert etcd.argv == (
            "etcd", "--name", m.name, "--data-dir", f"/r/ha/manager{m.index}/etcd",
            "--listen-client-urls", f"http://{a}:2379", "--advertise-client-urls", f"http://{a}:2379",
            "--listen-peer-urls", f"http://{a}:2380", "--initial-advertise-peer-urls", f"http://{a}:2380",
            "--initial-cluster",
            "manager1=http://10.99.23.2:2380,manager2=http://10.99.23.3:2380,manager3=http://10.99.23.4:2380",
            "--initial-cluster-token", "shoal-dev-ha", "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        )  # fmt: skip
        assert etcd.ready_url == f"http://{a}:2379/health"
        assert (manager.name, manager.tier, manager.netns) == ("manager", 1, f"ha-mgr{m.index}")
        assert manager.argv == (
            PY, "-m", "shoal", "manager",
            "--store", "etcd://10.99.23.2:2379,10.99.23.3:2379,10.99.23.4:2379",
            "--registry-https", f"{a}:8501",
            "--registry-tlscert", f"{tlsd}/registry/cert.pem",
            "--registry-tlskey", f"{tlsd}/registry/key.pem",
            "--registry-cacert", f"{tlsd}/node-ca.pem",
            "--dns", f"{a}:8600",
            "--node", m.name, "--advertise", a,
            "--acl", "--acl-default-policy", "deny",
            "--listen", f"{a}:2376",
            "--tlsverify", "--tlscacert", f"{tlsd}/manager/ca.pem",
            "--tlscert", f"{tlsd}/manager/cert.pem", "--tlskey", f"{tlsd}/manager/key.pem",
            "--join-listen", f"{a}:2377",
            "--join-cert", f"{tlsd}/join/cert.pem", "--join-key", f"{tlsd}/join/key.pem",
            "--node-ca", f"{tlsd}/node-ca.pem", "--node-ca-key", f"{tlsd}/node-ca-key.pem",
            "--advertise-registry", "https://10.99.23.2:8501,https://10.99.23.3:8501,https://10.99.23.4:8501",
            "--unix", f"/r/ha/manager{m.index}/manager.sock",
            "--strategy", "spread",
        )  # fmt: skip
        assert manager.ready_url == f"https://{a}:2376/_ping"
        token = f"{tlsd}/management-token"
        assert manager.env_files == (("CONSUL_HTTP_TOKEN", token), ("CONSUL_ACL_INITIAL_MANAGEMENT", token))


def test_with_several_managers_no_standalone_registry_or_manager_runs_on_the_host():
    assert [s.name for s in cluster_services(plan_layout(SPEC))] == ["image-registry"]


def test_agents_get_every_managers_join_url():
    layout = plan_layout(SPEC)
    [agent] = node_services(layout, layout.nodes[0])
    i = agent.argv.index("--manager")
    assert agent.argv[i + 1] == "https://10.99.23.2:2377,https://10.99.23.3:2377,https://10.99.23.4:2377"
    assert agent.ready_url.startswith("https://10.99.23.2:8501/v1/kv/")


def test_one_manager_starts_exactly_what_it_did_before():
    layout = plan_layout(replace(SPEC, managers=1))
    tlsd = "/r/ha/tls"
    registry, manager, _ = cluster_services(layout)
    assert registry.argv == (
        PY, "-m", "shoal", "registry", "--store", "sqlite:///r/ha/registry.db",
        "--http", "", "--https", "10.99.23.1:8501",
        "--tlscert", f"{tlsd}/registry/cert.pem", "--tlskey", f"{tlsd}/registry/key.pem",
        "--dns", "10.99.23.1:8600", "--node", "manager", "--advertise", "10.99.23.1",
        "--acl", "--acl-default-policy", "deny",
    )  # fmt: skip
    assert manager.argv == (
        PY, "-m", "shoal", "manager",
        "--registry", "https://10.99.23.1:8501", "--registry-cacert", f"{tlsd}/node-ca.pem",
        "--listen", "10.99.23.1:2376",
        "--tlsverify", "--tlscacert", f"{tlsd}/manager/ca.pem",
        "--tlscert", f"{tlsd}/manager/cert.pem", "--tlskey", f"{tlsd}/manager/key.pem",
        "--join-listen", "10.99.23.1:2377",
        "--join-cert", f"{tlsd}/join/cert.pem", "--join-key", f"{tlsd}/join/key.pem",
        "--node-ca", f"{tlsd}/node-ca.pem", "--node-ca-key", f"{tlsd}/node-ca-key.pem",
        "--unix", "/r/ha/manager.sock", "--strategy", "spread",
    )  # fmt: skip
    assert (registry.netns, manager.netns) == ("", "")
    assert manager.env_files == (("CONSUL_HTTP_TOKEN", f"{tlsd}/management-token"),)
    [agent] = node_services(layout, layout.nodes[0])
    assert agent.argv[agent.argv.index("--manager") + 1] == "https://10.99.23.1:2377"


# --- state, down, preflight, certificates, env ---------------------------------------------------------


def test_state_round_trips_the_manager_count():
    st = state.State(spec=SPEC, phase="up", created=1.0, pids={"manager2": {"etcd": 10, "manager": 11}})
    back = state.State.from_json(st.to_json())
    assert back == st and back.spec.managers == 3


def test_a_state_file_from_before_managers_reads_as_one_and_one_writes_none():
    one = state.State(spec=replace(SPEC, managers=1), phase="up", created=1.0)
    d = json.loads(one.to_json())
    assert "managers" not in d["spec"]  # byte for byte what a single-manager cluster wrote before
    assert state.State.from_json(one.to_json()).spec.managers == 1


@pytest.mark.parametrize(("found", "count"), [(set(), 1), ({1}, 3), ({2}, 3), ({1, 2, 3}, 3), ({4}, 5)])
def test_down_without_a_state_file_covers_every_manager_namespace_it_finds(found, count):
    assert managers_covering(found) == count


HOST = HostFacts(
    platform="linux",
    euid=0,
    missing_tools=(),
    mem_available_mb=24_000,
    netns=frozenset(),
    links=frozenset({"lo", "eth0"}),
    networks=("127.0.0.1/8",),
)


def test_preflight_wants_etcd_only_for_several_managers():
    no_etcd = replace(HOST, missing_tools=("etcd",))
    [msg] = check(plan_layout(SPEC), no_etcd)
    assert msg.startswith("etcd not found on PATH") and "apt-get install etcd-server" in msg
    assert check(plan_layout(replace(SPEC, managers=1)), no_etcd) == []


def test_preflight_refuses_a_manager_namespace_that_exists_already():
    problems = check(plan_layout(SPEC), replace(HOST, netns=frozenset({"ha-mgr2"})))
    assert any("network namespace ha-mgr2 already exists" in p for p in problems)


def test_certificates_name_every_manager_address(tmp_path):
    layout = plan_layout(replace(SPEC, root=tmp_path))
    layout.root.mkdir(parents=True)
    tls.make_certs(layout)
    for files in (tls.manager(layout), tls.registry(layout), tls.join(layout)):
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        assert {"10.99.23.1", "10.99.23.2", "10.99.23.3", "10.99.23.4"} <= ips


def test_env_names_every_manager_with_manager1_as_the_default(tmp_path):
    layout = plan_layout(replace(SPEC, root=tmp_path))
    layout.root.mkdir(parents=True)
    tls.make_certs(layout)
    state.write(layout.state_file, state.State(spec=replace(SPEC, root=tmp_path), phase="up"))
    lines = env_lines("ha", tmp_path)
    assert "export DOCKER_HOST=tcp://10.99.23.2:2376" in lines
    assert "export CONSUL_HTTP_ADDR=https://10.99.23.2:8501" in lines
    assert "export SHOAL_MANAGERS=tcp://10.99.23.2:2376,tcp://10.99.23.3:2376,tcp://10.99.23.4:2376" in lines
    assert [ln for ln in lines if ln.startswith("export SHOAL_MANAGER_")] == [
        f"export SHOAL_MANAGER_{i}=tcp://10.99.23.{1 + i}:2376" for i in (1, 2, 3)
    ]
    assert "export SHOAL_DNS=10.99.23.2:8600,10.99.23.3:8600,10.99.23.4:8600" in lines


def test_env_of_a_single_manager_cluster_names_no_list(tmp_path):
    spec = replace(SPEC, root=tmp_path, managers=1)
    layout = plan_layout(spec)
    layout.root.mkdir(parents=True)
    tls.make_certs(layout)
    state.write(layout.state_file, state.State(spec=spec, phase="up"))
    lines = env_lines("ha", tmp_path)
    assert "export DOCKER_HOST=tcp://10.99.23.1:2376" in lines
    assert not [ln for ln in lines if "SHOAL_MANAGER" in ln or "SHOAL_DNS" in ln]
