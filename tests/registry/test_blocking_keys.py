"""Blocking queries keyed on what they read (issue 18), for the views beyond health/service and KV that
test_fidelity.py covers: each query is held by the registry, then a change it does not read happens and
it stays blocked until its wait ends, answering the index it was asked with; then a change it reads
happens and it answers with a new index and the new content. Against `shoal registry` on SQLite and on
etcd, each request as py-consul sends it.

The reference is Consul's state store (agent/consul/state/catalog.go): catalog/services keys on the
services table (and with node-meta on max(services, nodes), ServicesByNodeMeta), catalog/nodes on the
nodes table, catalog/service/<name> and health/service/<name> on the service's own index, which a change
to a node bumps for every service on it (updateAllServiceIndexesOfNode).

No assertion here is on time: a query that missed a change answers at the end of its wait with the index
it was asked with, and one woken by a change it should not see answers a new one.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import consul
import pytest
import requests

from tests.registry.conftest import RegistryProc

STAY = "3s"  # the wait of a query that must stay blocked: it answers when this ends
WAKE = "30s"  # the wait of a query that must wake: it answers long before, or the test fails


def _held(reg: RegistryProc) -> float:
    """The blocking queries the registry holds now (its /metrics gauge)."""
    text = requests.get(f"{reg.url}/metrics", timeout=10).text
    found = re.search(r"^shoal_registry_blocking_queries (\S+)$", text, re.M)
    assert found, "no blocking_queries gauge in /metrics"
    return float(found.group(1))


def _while_held(reg: RegistryProc, query: Callable[[], Any], change: Callable[[], None]) -> Any:
    """Sends `query` (a blocking one) and, once the registry holds it, makes `change`; its answer."""
    before = _held(reg)
    got: dict[str, Any] = {}

    def send() -> None:
        try:
            got["answer"] = query()
        except BaseException as e:  # re-raised by the test's thread
            got["error"] = e

    t = threading.Thread(target=send)
    t.start()
    deadline = time.monotonic() + 30
    while _held(reg) <= before and t.is_alive():
        assert time.monotonic() < deadline, "the registry never held the query"
        time.sleep(0.02)
    time.sleep(0.2)  # past its first read: waiting on what it read
    change()
    t.join(90)
    assert not t.is_alive(), "the query never answered"
    if "error" in got:
        raise got["error"]
    return got["answer"]


@dataclass
class Fleet:
    """Three nodes, each with one service and that service's check: a and b passing, c critical."""

    c: consul.Consul
    u: str

    def node(self, x: str) -> str:
        return f"{x}{self.u}"

    def svc(self, x: str) -> str:
        return f"s{x}{self.u}"

    def rack(self, x: str) -> str:
        return f"r{x}{self.u}"

    def register(
        self,
        x: str,
        *,
        address: str | None = None,
        rack: str | None = None,
        status: str | None = None,
        output: str = "",
        tags: tuple[str, ...] = (),
        with_service: bool = True,
    ) -> None:
        """Node x (and its service and check) as py-consul's Catalog.register sends it."""
        check = {
            "Node": self.node(x),
            "CheckID": f"{self.svc(x)}-alive",
            "Name": "alive",
            "ServiceID": self.svc(x),
            "Status": status or ("critical" if x == "c" else "passing"),
            "Output": output,
        }
        service = {"ID": self.svc(x), "Service": self.svc(x), "Port": 8000, "Tags": list(tags)}
        assert self.c.catalog.register(
            self.node(x),
            address or {"a": "127.0.4.1", "b": "127.0.4.2", "c": "127.0.4.3"}[x],
            service=service if with_service else None,
            check=check,
            node_meta={"rack": rack or self.rack(x)},
        )

    def move(self, x: str, *, address: str | None = None, rack: str | None = None) -> None:
        """Node x's own record changes (its services and checks as they were)."""
        addr = address or {"a": "127.0.4.1", "b": "127.0.4.2", "c": "127.0.4.3"}[x]
        assert self.c.catalog.register(self.node(x), addr, node_meta={"rack": rack or self.rack(x)})

    def kv(self) -> None:
        assert self.c.kv.put(f"blocking-keys/{self.u}", uuid.uuid4().hex)


@pytest.fixture
def fleet(reg) -> Fleet:
    f = Fleet(reg.client(), uuid.uuid4().hex[:8])
    for x in "abc":
        f.register(x)
    return f


def _stays(reg: RegistryProc, read: Callable[..., tuple[str, Any]], *unrelated: Callable[[], None]) -> None:
    """`read(index=, wait=)` held across `unrelated` changes answers at the end of its wait, as it was."""
    index, body = read()
    again, same = _while_held(reg, lambda: read(index=index, wait=STAY), lambda: [f() for f in unrelated])
    assert (again, same) == (index, body), "woken by a change it does not read"


def _wakes(reg: RegistryProc, read: Callable[..., tuple[str, Any]], change: Callable[[], None]) -> Any:
    """`read(index=, wait=)` held across `change` answers a newer index; its new body."""
    index, _ = read()
    new, body = _while_held(reg, lambda: read(index=index, wait=WAKE), change)
    assert int(new) > int(index), "not woken by a change it reads"
    return body


# --- /v1/catalog/services ----------------------------------------------------------------------------


def test_catalog_services_stays_blocked_on_checks_nodes_and_kv(reg, fleet):
    read = fleet.c.catalog.services
    _stays(
        reg,
        read,
        lambda: fleet.register("a", status="critical"),  # a check's status
        lambda: fleet.move("b", address="127.0.5.2"),  # a node's address
        lambda: fleet.move("c", rack="elsewhere"),  # a node's meta
        fleet.kv,
    )


def test_catalog_services_wakes_on_a_service_tag(reg, fleet):
    body = _wakes(reg, fleet.c.catalog.services, lambda: fleet.register("b", tags=("v2",)))
    assert body[fleet.svc("b")] == ["v2"]


# --- /v1/catalog/services?node-meta= (Consul's ServicesByNodeMeta) -----------------------------------


def _by_rack(fleet: Fleet) -> Callable[..., tuple[str, Any]]:
    return lambda **kw: fleet.c.catalog.services(node_meta={"rack": fleet.rack("a")}, **kw)


def test_catalog_services_by_node_meta_stays_blocked_on_checks_and_kv(reg, fleet):
    _stays(
        reg,
        _by_rack(fleet),
        lambda: fleet.register("a", status="critical"),
        lambda: fleet.register("b", output="still fine"),
        fleet.kv,
    )


def test_catalog_services_by_node_meta_wakes_when_a_node_moves_into_the_meta(reg, fleet):
    read = _by_rack(fleet)
    assert set(read()[1]) == {fleet.svc("a")}
    body = _wakes(reg, read, lambda: fleet.move("b", rack=fleet.rack("a")))
    assert set(body) == {fleet.svc("a"), fleet.svc("b")}


def test_catalog_services_by_node_meta_wakes_when_a_node_moves_out_of_it(reg, fleet):
    body = _wakes(reg, _by_rack(fleet), lambda: fleet.move("a", rack="elsewhere"))
    assert fleet.svc("a") not in body


def test_catalog_services_filtered_on_node_fields_wakes_on_a_node_address(reg, fleet):
    def read(**kw: Any) -> tuple[str, Any]:
        return fleet.c.catalog.services(filter_expr='Address == "127.0.6.1"', **kw)

    assert fleet.svc("a") not in read()[1]
    body = _wakes(reg, read, lambda: fleet.move("a", address="127.0.6.1"))
    assert fleet.svc("a") in body


def test_catalog_services_filtered_on_service_fields_stays_blocked_on_a_node(reg, fleet):
    """A filter naming only the service's fields reads no node: the services' index, as Consul's."""

    def read(**kw: Any) -> tuple[str, Any]:
        return fleet.c.catalog.services(filter_expr=f'ServiceName == "{fleet.svc("a")}"', **kw)

    assert read()[1] == {fleet.svc("a"): []}
    _stays(reg, read, lambda: fleet.move("a", address="127.0.6.9", rack="elsewhere"))


# --- /v1/catalog/nodes -------------------------------------------------------------------------------


def test_catalog_nodes_stays_blocked_on_services_checks_and_kv(reg, fleet):
    _stays(
        reg,
        fleet.c.catalog.nodes,
        lambda: fleet.register("a", tags=("v2",)),  # a service on a node
        lambda: fleet.register("b", status="critical"),  # a check on one
        fleet.kv,
    )


def test_catalog_nodes_wakes_on_a_node_address(reg, fleet):
    body = _wakes(reg, fleet.c.catalog.nodes, lambda: fleet.move("b", address="127.0.5.2"))
    [b] = [n for n in body if n["Node"] == fleet.node("b")]
    assert b["Address"] == "127.0.5.2"


# --- /v1/health/state/<state> ------------------------------------------------------------------------


def _state(fleet: Fleet, state: str) -> Callable[..., tuple[str, Any]]:
    return lambda **kw: fleet.c.health.state(state, **kw)


def _check_ids(body: list) -> set[str]:
    return {c["CheckID"] for c in body}


def test_health_state_critical_stays_blocked_on_passing_checks_services_nodes_and_kv(reg, fleet):
    _stays(
        reg,
        _state(fleet, "critical"),
        lambda: fleet.register("a", output="passing, with a new output"),  # a passing check changes
        lambda: fleet.register("b", tags=("v2",)),  # a service
        lambda: fleet.move("a", address="127.0.5.1", rack="elsewhere"),  # a node
        fleet.kv,
    )


def test_health_state_critical_wakes_on_a_check_turning_critical_and_back(reg, fleet):
    body = _wakes(reg, _state(fleet, "critical"), lambda: fleet.register("a", status="critical"))
    assert f"{fleet.svc('a')}-alive" in _check_ids(body)
    body = _wakes(reg, _state(fleet, "critical"), lambda: fleet.register("a", status="passing"))
    assert f"{fleet.svc('a')}-alive" not in _check_ids(body)


def test_health_state_passing_stays_blocked_on_a_critical_check(reg, fleet):
    _stays(reg, _state(fleet, "passing"), lambda: fleet.register("c", output="still down"))


def test_health_state_by_node_meta_wakes_when_a_node_moves_into_the_meta(reg, fleet):
    """Consul watches the nodes it filtered on here (parseChecksByNodeMeta); shoal answers their index
    too, so the move is answered when it happens, not when the wait ends under the old index."""

    def read(**kw: Any) -> tuple[str, Any]:
        return fleet.c.health.state("passing", node_meta={"rack": fleet.rack("a")}, **kw)

    assert _check_ids(read()[1]) == {f"{fleet.svc('a')}-alive"}
    _stays(reg, read, lambda: fleet.register("c", output="still down"), fleet.kv)
    body = _wakes(reg, read, lambda: fleet.move("b", rack=fleet.rack("a")))
    assert _check_ids(body) == {f"{fleet.svc('a')}-alive", f"{fleet.svc('b')}-alive"}


# --- /v1/catalog/service/<name> and /v1/health/service/<name>: a node's change is theirs -------------


def test_catalog_service_stays_blocked_on_other_services_their_nodes_and_kv(reg, fleet):
    _stays(
        reg,
        lambda **kw: fleet.c.catalog.service(fleet.svc("a"), **kw),
        lambda: fleet.register("b", tags=("v2",)),
        lambda: fleet.register("c", status="passing"),
        lambda: fleet.move("b", address="127.0.5.2", rack="elsewhere"),
        fleet.kv,
    )


def test_catalog_service_wakes_on_its_nodes_address(reg, fleet):
    body = _wakes(
        reg,
        lambda **kw: fleet.c.catalog.service(fleet.svc("a"), **kw),
        lambda: fleet.move("a", address="127.0.5.1"),
    )
    assert [(e["ServiceID"], e["Address"]) for e in body] == [(fleet.svc("a"), "127.0.5.1")]


def test_catalog_service_wakes_on_its_tags(reg, fleet):
    body = _wakes(
        reg,
        lambda **kw: fleet.c.catalog.service(fleet.svc("a"), **kw),
        lambda: fleet.register("a", tags=("v2",)),
    )
    assert [e["ServiceTags"] for e in body] == [["v2"]]


def test_health_service_stays_blocked_on_another_node(reg, fleet):
    _stays(
        reg,
        lambda **kw: fleet.c.health.service(fleet.svc("a"), **kw),
        lambda: fleet.move("b", address="127.0.5.2", rack="elsewhere"),
    )


def test_health_service_wakes_on_its_nodes_address_and_meta(reg, fleet):
    def read(**kw: Any) -> tuple[str, Any]:
        return fleet.c.health.service(fleet.svc("a"), **kw)

    body = _wakes(reg, read, lambda: fleet.move("a", address="127.0.5.1"))
    assert [e["Node"]["Address"] for e in body] == ["127.0.5.1"]
    body = _wakes(reg, read, lambda: fleet.move("a", address="127.0.5.1", rack="moved"))
    assert [e["Node"]["Meta"] for e in body] == [{"rack": "moved"}]
