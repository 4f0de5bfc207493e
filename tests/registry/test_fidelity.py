"""What Consul clients that shoal did not write rely on (issue 18), against `shoal registry` on SQLite and
on etcd, each request sent as py-consul sends it or, where py-consul has no such call, as Consul's Go
client (hashicorp/consul/api) would: session TTLs kept 2x as Consul keeps them, blocking queries that
wake only for what they read, filters, and the smaller answers clients branch on."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import aiohttp
import consul
import pytest
import requests

from tests.registry.conftest import RegistryProc, on_each_store, start_registry, stop_registry


def _u() -> str:
    return uuid.uuid4().hex[:8]


def _index(r: requests.Response) -> int:
    return int(r.headers["X-Consul-Index"])


# --- 1. sessions: invalidated 2x their TTL after the last renewal, as Consul does ------------------


def test_a_lock_on_a_10s_session_is_held_at_15s_and_released_by_20s_after_renewals_stop(registries):
    """Consul's SessionTTLMultiplier (agent/consul/session_ttl.go): clients renew at TTL/2 and count on
    the lock for the TTL; Consul ends the session only 2x TTL after the last renewal. Both stores at
    once: this is the one slow test (about 20 s)."""

    def run(r: RegistryProc) -> float:
        holder, rival = r.client(), r.client()
        k = f"leader/{_u()}"
        sid = holder.session.create(name="leader", ttl=10, lock_delay=0)
        other = rival.session.create(name="replica", lock_delay=0)
        assert holder.kv.put(k, "primary", acquire=sid) is True
        renewed = holder.session.renew(sid)  # the last renewal: the clock starts here
        last = time.monotonic()
        assert renewed["ID"] == sid and renewed["TTL"] == "10s"  # the TTL as given, not doubled
        time.sleep(max(0.0, 15 - (time.monotonic() - last)))
        assert rival.kv.get(k)[1]["Session"] == sid, "released before 1.5x TTL"
        assert rival.kv.put(k, "replica", acquire=other) is False
        while not rival.kv.put(k, "replica", acquire=other):
            assert time.monotonic() - last < 23, "still held 2x TTL + 3 s after the last renewal"
            time.sleep(0.2)
        took = time.monotonic() - last
        with pytest.raises(consul.NotFound):
            holder.session.renew(sid)
        rival.session.destroy(other)
        return took

    outcome = on_each_store(registries, run, 60)
    assert all(15 <= t < 23 for t in outcome.values()), outcome


def test_renew_answers_the_ttl_as_the_client_wrote_it(reg):
    # hashicorp/consul/api sends SessionEntry.TTL as the string it was given
    r = requests.put(f"{reg.url}/v1/session/create", data=json.dumps({"TTL": "1m", "LockDelay": "0s"}))
    sid = r.json()["ID"]
    [renewed] = requests.put(f"{reg.url}/v1/session/renew/{sid}").json()
    assert renewed["TTL"] == "1m"
    [info] = requests.get(f"{reg.url}/v1/session/info/{sid}").json()
    assert info["TTL"] == "1m"
    requests.put(f"{reg.url}/v1/session/destroy/{sid}")


def test_a_session_ttl_out_of_bounds_is_consuls_500_in_its_words(reg):
    # hashicorp/consul/api's Session().Create sends the TTL string as given (py-consul refuses such TTLs
    # before sending); clients match Consul's words to adjust their TTL
    for ttl, shown in (("5s", "5000000000"), ("86401s", "86401000000000"), ("-1s", "-1000000000")):
        r = requests.put(
            f"{reg.url}/v1/session/create", data=json.dumps({"Name": "x", "TTL": ttl}), timeout=5
        )
        assert (r.status_code, r.text) == (
            500,
            f"Invalid Session TTL '{shown}', must be between [10s=24h0m0s]",
        )
    name = f"bad{_u()}"
    for ttl, why in (("15", "missing unit in duration"), ("ten", "invalid duration")):  # Go's ParseDuration
        r = requests.put(
            f"{reg.url}/v1/session/create", data=json.dumps({"Name": name, "TTL": ttl}), timeout=5
        )
        assert (r.status_code, r.text) == (500, f"Session TTL '{ttl}' invalid: time: {why} \"{ttl}\"")
    sessions = requests.get(f"{reg.url}/v1/session/list", timeout=5).json()
    assert [s for s in sessions if s["Name"] == name] == []  # a refused session leaves nothing
    c = reg.client()
    for ttl in (10, 86400):  # the bounds themselves are allowed
        c.session.destroy(c.session.create(ttl=ttl))


# --- 2. blocking queries wake only when what they read changed ------------------------------------


def _register_node(url: str, node: str, services: list[dict], output: str = "ok") -> None:
    """What a shoal agent sends every interval (shoal/agent/publish.py), plus services of its own (the
    node's fields the same in every body, so the node itself does not change)."""
    the_node = {
        "Node": node,
        "Address": "127.0.0.3",
        "NodeMeta": {"rack": "r1", "engine": "tcp://127.0.0.3:2375"},
    }
    body = {
        **the_node,
        "Service": {"ID": "shoal-agent", "Service": "shoal-agent", "Port": 0},
        "Check": {
            "CheckID": "shoal-agent",
            "Name": "shoal agent publishing facts",
            "ServiceID": "shoal-agent",
            "Status": "passing",
            "Output": output,
            "Definition": {"TTL": "30s"},
        },
    }
    assert requests.put(f"{url}/v1/catalog/register", data=json.dumps(body), timeout=10).json() is True
    for svc in services:
        r = requests.put(
            f"{url}/v1/catalog/register", data=json.dumps({**the_node, "Service": svc}), timeout=10
        )
        assert r.json() is True


def test_200_watchers_of_20_services_only_the_changed_services_watchers_return(reg):
    u = _u()
    names = [f"w{u}-{i}" for i in range(20)]
    for i, name in enumerate(names):
        _register_node(reg.url, f"n{u}-{i}", [{"ID": name, "Service": name, "Port": 8000 + i}])
    start = {n: _index(requests.get(f"{reg.url}/v1/health/service/{n}", timeout=10)) for n in names}
    wait = 4.0
    changed = names[7]

    async def watch(s: aiohttp.ClientSession, name: str) -> tuple[str, int, float, list]:
        t0 = time.monotonic()
        async with s.get(
            f"{reg.url}/v1/health/service/{name}", params={"index": start[name], "wait": f"{wait:g}s"}
        ) as r:
            assert r.status == 200
            return name, int(r.headers["X-Consul-Index"]), time.monotonic() - t0, await r.json()

    async def scenario() -> None:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
            tasks = [asyncio.create_task(watch(s, n)) for n in names for _ in range(10)]
            await asyncio.sleep(1.0)  # all parked
            # a node's fact publish, as shoal's agents do it: facts in KV, then the catalog entry whose
            # TTL check it renews (new Output) — it wakes no health watcher of another service
            async with s.put(f"{reg.url}/v1/kv/shoal/nodes/n{u}-3/facts", data=b'{"cpus": 4}') as r:
                assert await r.json() is True
            await asyncio.to_thread(_register_node, reg.url, f"n{u}-3", [], "12 facts gathered in 3 ms")
            await asyncio.sleep(0.5)
            assert not any(t.done() for t in tasks), "a fact publish woke a watcher"
            # one real change: the instance of one service gets a tag
            await asyncio.to_thread(
                _register_node, reg.url, f"n{u}-7", [{"ID": changed, "Service": changed, "Tags": ["v2"]}]
            )
            deadline = time.monotonic() + wait - 1.0
            while time.monotonic() < deadline and sum(t.done() for t in tasks) < 10:
                await asyncio.sleep(0.02)
            woken = [t for t in tasks if t.done()]
            assert len(woken) == 10
            still = [t for t in tasks if not t.done()]
            assert len(still) == 190  # the others stay blocked...
            for name, index, _, body in [t.result() for t in woken]:
                assert name == changed and index > start[name]
                assert body[0]["Service"]["Tags"] == ["v2"]
            for name, index, took, _ in await asyncio.gather(*still):
                # ...until their wait ends, answering with the index they asked with
                assert name != changed and index == start[name] and took >= wait - 0.05

    asyncio.run(scenario())


def test_a_service_on_many_nodes_reads_the_same_as_one_on_few(reg):
    """Past views.SPREAD nodes the registry reads whole prefixes instead of key by key: same answer."""
    u = _u()
    name = f"many{u}"
    for i in range(40):
        body = {
            "Node": f"m{u}-{i:02}",
            "Address": "127.0.2.1",
            "Service": {"ID": f"{name}-{i}", "Service": name, "Tags": ["odd"] if i % 2 else []},
            "Check": {
                "CheckID": f"alive-{i}",
                "Name": "alive",
                "ServiceID": f"{name}-{i}",
                "Status": "passing",
            },
        }
        assert requests.put(f"{reg.url}/v1/catalog/register", data=json.dumps(body), timeout=10).json()
    c = reg.client()
    entries = c.health.service(name)[1]
    assert [e["Node"]["Node"] for e in entries] == [f"m{u}-{i:02}" for i in range(40)]
    assert all(
        [ch["CheckID"] for ch in e["Checks"]] == [f"alive-{int(e['Node']['Node'][-2:])}"] for e in entries
    )
    assert len(c.health.service(name, tag="odd")[1]) == len(c.catalog.service(name, tag="odd")[1]) == 20


def test_a_kv_watch_on_one_key_does_not_wake_for_another(reg):
    c = reg.client()
    a, b = f"fid/{_u()}/a", f"fid/{_u()}/b"
    c.kv.put(a, "1")
    index, entry = c.kv.get(a)
    assert int(index) == entry["ModifyIndex"]  # a single key answers its own ModifyIndex
    got: dict[str, object] = {}

    def block() -> None:
        t0 = time.monotonic()
        got["result"] = c.kv.get(a, index=index, wait="1500ms")
        got["took"] = time.monotonic() - t0

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.3)
    for i in range(5):
        c.kv.put(b, str(i))  # another key: the watch on a stays put
    t.join(10)
    again, same = got["result"]  # type: ignore[misc]
    assert again == index and same["Value"] == b"1" and got["took"] >= 1.45  # type: ignore[operator]
    assert int(c.kv.get(b)[0]) > int(index)  # b's own index moved
    threading.Timer(0.3, lambda: c.kv.put(a, "2")).start()
    new, entry = c.kv.get(a, index=index, wait="10s")
    assert entry["Value"] == b"2" and int(new) == entry["ModifyIndex"] > int(index)


def test_a_prefix_index_is_its_highest_and_never_goes_back_when_a_key_is_deleted(reg):
    c = reg.client()
    p = f"fid/{_u()}/"
    c.kv.put(p + "a", "1")
    c.kv.put(p + "b", "2")
    i1, entries = c.kv.get(p, recurse=True)
    assert int(i1) == max(e["ModifyIndex"] for e in entries)
    c.kv.put(f"fid/{_u()}/elsewhere", "x")
    assert c.kv.get(p, recurse=True)[0] == i1  # a write outside the prefix leaves its index alone
    c.kv.delete(p + "b")  # the newest key goes: the index moves on (a tombstone), not back
    i2, entries = c.kv.get(p, recurse=True)
    assert int(i2) > int(i1) and [e["Key"] for e in entries] == [p + "a"]
    threading.Timer(0.3, lambda: c.kv.delete(p + "a")).start()
    i3, entries = c.kv.get(p, recurse=True, index=i2, wait="10s")  # woken by the delete
    assert entries is None and int(i3) > int(i2)
    keys_index = requests.get(f"{reg.url}/v1/kv/{p}?keys", timeout=5)
    assert keys_index.status_code == 404 and _index(keys_index) > 0


def test_a_service_index_is_never_0_and_only_moves_forward(reg):
    c = reg.client()
    name = f"mono{_u()}"
    seen = [int(c.health.service(name)[0])]  # a service that does not exist yet
    c.agent.service.register(name, service_id=f"{name}-1", check=consul.Check.ttl("30s"))
    seen.append(int(c.health.service(name)[0]))
    c.agent.check.ttl_pass(f"service:{name}-1")
    seen.append(int(c.health.service(name)[0]))
    c.agent.service.register(f"other{_u()}")  # another service: no change here
    seen.append(int(c.health.service(name)[0]))
    c.agent.service.deregister(f"{name}-1")
    seen.append(int(c.health.service(name)[0]))
    assert seen[0] > 0 and seen[1] > seen[0] and seen[2] > seen[1] and seen[3] == seen[2] < seen[4]
    for view in (c.catalog.service, c.health.checks):
        assert int(view(name)[0]) == seen[4]


def test_watchers_never_see_a_service_without_its_checks(reg):
    """The registrations are atomic (the safety issue); this is what a watcher sees of it."""
    c = reg.client()
    name = f"whole{_u()}"
    seen: list[list] = []
    stop = threading.Event()

    def watch() -> None:
        w = reg.client()
        index = w.health.service(name)[0]
        while not stop.is_set():
            index, entries = w.health.service(name, index=index, wait="2s")
            seen.append(entries)

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.2)
    for _ in range(5):
        c.agent.service.register(
            name, check=consul.Check.ttl("30s"), extra_checks=[consul.Check.ttl("60s")], port=1
        )
        time.sleep(0.05)
        c.agent.service.deregister(name)
        time.sleep(0.05)
    stop.set()
    t.join(10)
    instances = [e for entries in seen for e in entries]
    assert instances, "the watcher saw no registration"
    for e in instances:
        ids = {ch["CheckID"] for ch in e["Checks"]}
        assert {f"service:{name}:1", f"service:{name}:2"} <= ids, ids
        assert e["Checks"] and all(ch["Status"] for ch in e["Checks"])


# --- 3. filters ----------------------------------------------------------------------------------


@pytest.fixture
def fleet(reg) -> tuple[RegistryProc, str]:
    """Three instances of one service on three nodes with their own tags, meta and health."""
    u = _u()
    name = f"api{u}"
    for i, (tags, rack, env, status) in enumerate(
        [
            (["metrics", "prod"], "r1", "prod", "passing"),
            (["metrics"], "r1", "dev", "passing"),
            (["prod", "Metrics2"], "r2", "prod", "critical"),
        ]
    ):
        body = {
            "Node": f"f{u}-{i}",
            "Address": f"127.0.1.{i + 1}",
            "NodeMeta": {"rack": rack},
            "Service": {"ID": f"{name}-{i}", "Service": name, "Tags": tags, "Meta": {"env": env}, "Port": 80},
            "Check": {
                "CheckID": f"{name}-{i}-alive",
                "Name": "alive",
                "ServiceID": f"{name}-{i}",
                "Status": status,
            },
        }
        assert requests.put(f"{reg.url}/v1/catalog/register", data=json.dumps(body), timeout=10).json()
    return reg, name


def _ids(entries: list) -> list[str]:
    return [e["Service"]["ID"] if "Service" in e else e["ServiceID"] for e in entries]


def test_repeated_tags_are_all_required_in_health_and_catalog(fleet):
    reg, name = fleet
    c = reg.client()
    assert _ids(c.health.service(name, tag=["metrics", "prod"])[1]) == [f"{name}-0"]
    assert _ids(c.health.service(name, tag=["METRICS"])[1]) == [f"{name}-0", f"{name}-1"]  # any case
    # hashicorp/consul/api's Catalog().ServiceMultipleTags sends ?tag= once per tag
    r = requests.get(f"{reg.url}/v1/catalog/service/{name}?tag=prod&tag=metrics", timeout=5)
    assert _ids(r.json()) == [f"{name}-0"]


def test_node_meta_filters_health_and_catalog_reads(fleet):
    reg, name = fleet
    c = reg.client()
    assert _ids(c.health.service(name, node_meta={"rack": "r1"})[1]) == [f"{name}-0", f"{name}-1"]
    assert _ids(c.catalog.service(name, node_meta={"rack": "r2"})[1]) == [f"{name}-2"]
    nodes = [n["Node"] for n in c.catalog.nodes(node_meta={"rack": "r2"})[1]]
    assert [n for n in nodes if n.startswith(f"f{name[3:]}-")] == [f"f{name[3:]}-2"]
    both = requests.get(f"{reg.url}/v1/health/service/{name}?node-meta=rack:r1&node-meta=rack:r2", timeout=5)
    assert _ids(both.json()) == [f"{name}-2"]  # one key given twice: the last wins (Consul's map)
    critical = c.health.state("critical", node_meta={"rack": "r2"})[1]
    assert [ch["CheckID"] for ch in critical if ch["ServiceName"] == name] == [f"{name}-2-alive"]
    assert name in c.catalog.services(node_meta={"rack": "r1"})[1]


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ('Service.Tags contains "prod"', [0, 2]),
        ('"metrics" in Service.Tags', [0, 1]),
        ('Service.Meta.env == "prod"', [0, 2]),
        ('Service.Meta["env"] != "prod"', [1]),
        ('Node.Meta.rack == "r1" and Service.Meta.env == "prod"', [0]),
        (
            'Checks.Status == "critical" or Service.Tags contains "metrics" and not (Node.Meta.rack == "r1")',
            [2],
        ),
        ('not Service.Tags contains "prod"', [1]),
        ("Service.Meta.missing is empty", [0, 1, 2]),
        ('Service.Meta.missing == "x"', []),
        ('Service.Port == 80 and Service.Tags not contains "metrics"', [2]),
        ('Service.ID matches "-[12]$"', [1, 2]),
    ],
)
def test_filter_expressions_in_the_forms_clients_send(fleet, expr, want):
    reg, name = fleet
    got = reg.client().health.service(name, filter_expr=expr)[1]
    assert _ids(got) == [f"{name}-{i}" for i in want]


def test_filter_on_catalog_service_uses_its_own_field_names(fleet):
    reg, name = fleet
    c = reg.client()
    assert _ids(c.catalog.service(name, filter_expr='ServiceMeta.env == "dev"')[1]) == [f"{name}-1"]
    assert _ids(c.catalog.service(name, filter_expr='NodeMeta.rack == "r2"')[1]) == [f"{name}-2"]
    checks = c.health.checks(name, filter_expr='Status == "passing"')[1]
    assert sorted(ch["ServiceID"] for ch in checks) == [f"{name}-0", f"{name}-1"]


@pytest.mark.parametrize(
    ("expr", "named"),
    [
        ("Service.Port > 5", "<, <=, >, >= are not supported"),
        ('Service.Colour == "red"', "Selector 'Service.Colour' is not valid"),
        ('Service.Tags == "prod"', "Service.Tags is a list"),
        ('Service.Tags contains "prod" and', "expected a match expression"),
        ("(Service.Port == 80", "Unmatched parentheses"),
        ('"/Service/Port" == 80', "JSON pointer selectors"),
        ('Service.Port == "eighty"', "to a number"),
        ('Service.ID matches "("', "Failed to compile regular expression"),
    ],
)
def test_a_filter_that_cannot_be_used_is_a_400_naming_what(fleet, expr, named):
    reg, name = fleet
    r = requests.get(f"{reg.url}/v1/health/service/{name}", params={"filter": expr}, timeout=5)
    assert r.status_code == 400 and named in r.text, r.text
    assert r.text.startswith("Failed to create boolean expression evaluator: ")


# --- 4. the smaller deviations, each as a client sends it ------------------------------------------


def test_deregister_takes_a_service_id_with_a_slash_and_get_there_is_405(reg):
    c = reg.client()
    sid = f"web/{_u()}"
    c.agent.service.register("web", service_id=sid, check=consul.Check.ttl("30s"))
    assert sid in c.agent.services()
    assert requests.get(f"{reg.url}/v1/agent/service/{sid}", timeout=5).json()["ID"] == sid
    got = requests.get(f"{reg.url}/v1/agent/service/deregister/{sid}", timeout=5)
    assert (got.status_code, got.text, got.headers["Allow"]) == (405, "method GET not allowed", "PUT")
    assert sid in c.agent.services()
    assert c.agent.service.deregister(sid) is True
    assert sid not in c.agent.services() and f"service:{sid}" not in c.agent.checks()


def test_release_by_a_session_that_does_not_hold_the_lock_is_false(reg):
    c = reg.client()
    k = f"lock/{_u()}"
    holder, other = c.session.create(lock_delay=0), c.session.create(lock_delay=0)
    assert c.kv.put(k, "a", acquire=holder) is True
    assert c.kv.put(k, "b", release=other) is False  # a live session that does not hold it
    assert c.kv.put(k, "c", release=str(uuid.uuid4())) is False  # one that never existed
    c.session.destroy(other)
    assert c.kv.put(k, "d", release=other) is False  # one that has ended
    entry = c.kv.get(k)[1]
    assert entry["Session"] == holder and entry["Value"] == b"a"  # nothing was written
    assert c.kv.put(k, "e", release=holder) is True
    c.session.destroy(holder)


def test_reads_in_an_unknown_datacenter_are_consuls_no_path_500(reg):
    c = reg.client()
    for call in (
        lambda: c.kv.get("x", dc="dc9"),
        lambda: c.catalog.services(dc="dc9"),
        lambda: c.catalog.nodes(dc="dc9"),
        lambda: c.health.service("x", dc="dc9"),
        lambda: c.health.state("any", dc="dc9"),
        lambda: c.session.list(dc="dc9"),
    ):
        with pytest.raises(consul.ConsulException) as err:
            call()
        assert str(err.value) == "500 No path to datacenter"
    assert c.kv.get("x", dc="dc1")[1] is None  # its own datacenter by name is fine


def test_a_check_registered_for_a_service_keeps_its_own_id(reg):
    c = reg.client()
    name = f"svc{_u()}"
    c.agent.service.register(name)
    assert c.agent.check.register("disk", check=consul.Check.ttl("10s"), service_id=name) is True
    assert c.agent.check.register(
        "mem", check=consul.Check.ttl("10s"), check_id=f"{name}:mem", service_id=name
    )
    checks = c.agent.checks()
    assert checks["disk"]["ServiceID"] == name and checks["disk"]["Name"] == "disk"
    assert checks[f"{name}:mem"]["ServiceID"] == name
    assert f"service:{name}" not in checks
    [entry] = c.health.service(name)[1]
    assert {"disk", f"{name}:mem"} <= {ch["CheckID"] for ch in entry["Checks"]}
    c.agent.service.deregister(name)
    assert "disk" not in c.agent.checks()


def test_services_carry_tagged_addresses_in_consuls_shape(reg):
    c = reg.client()
    name = f"ta{_u()}"
    c.agent.service.register(name, address="10.1.2.3", port=8080)
    want = {
        "lan_ipv4": {"Address": "10.1.2.3", "Port": 8080},
        "wan_ipv4": {"Address": "10.1.2.3", "Port": 8080},
    }
    assert c.agent.services()[name]["TaggedAddresses"] == want
    assert c.catalog.service(name)[1][0]["ServiceTaggedAddresses"] == want
    assert c.health.service(name)[1][0]["Service"]["TaggedAddresses"] == want
    # hashicorp/consul/api's AgentServiceRegistration.TaggedAddresses: given ones are kept
    body = {
        "Name": f"{name}v6",
        "Address": "fd00::1",
        "Port": 53,
        "TaggedAddresses": {"lan": {"Address": "10.9.9.9", "Port": 5353}},
    }
    assert requests.put(f"{reg.url}/v1/agent/service/register", data=json.dumps(body), timeout=5).ok
    assert c.agent.services()[f"{name}v6"]["TaggedAddresses"] == {
        "lan": {"Address": "10.9.9.9", "Port": 5353},
        "lan_ipv6": {"Address": "fd00::1", "Port": 53},
        "wan_ipv6": {"Address": "fd00::1", "Port": 53},
    }
    c.agent.service.register(f"{name}bare")  # no address: no TaggedAddresses, as Consul omits it
    assert "TaggedAddresses" not in c.agent.services()[f"{name}bare"]
    for s in (name, f"{name}v6", f"{name}bare"):
        c.agent.service.deregister(s)


def test_a_single_key_get_carries_that_keys_modify_index(reg):
    c = reg.client()
    k1, k2 = f"mi/{_u()}", f"mi/{_u()}"
    c.kv.put(k1, "one")
    c.kv.put(k2, "two")
    r = requests.get(f"{reg.url}/v1/kv/{k1}", timeout=5)
    assert (
        _index(r)
        == r.json()[0]["ModifyIndex"]
        < requests.get(f"{reg.url}/v1/kv/{k2}").json()[0]["ModifyIndex"]
    )
    raw = requests.get(f"{reg.url}/v1/kv/{k1}?raw", timeout=5)
    assert _index(raw) == _index(r) and raw.content == b"one"


def test_a_blocking_query_past_a_restarted_empty_registrys_index_answers_at_once(tmp_path):
    """A client holding an index from before the registry came back empty (a new store, a restored
    backup) asks to wait past it: it is answered at once with the query's own lower index, so the client
    starts over from 0 as Consul's clients do when an index goes back, instead of sleeping through ?wait
    while changes happen."""
    first = start_registry(f"sqlite://{tmp_path}/old.db")
    c = first.client()
    name = f"back{_u()}"
    for i in range(30):
        c.kv.put(f"fill/{i}", str(i))
    c.agent.service.register(name, check=consul.Check.ttl("30s"))
    old_kv, _ = c.kv.get("fill/29")
    old_health, _ = c.health.service(name)
    stop_registry(first)
    again = start_registry(f"sqlite://{tmp_path}/new.db", http_port=first.http_port)
    try:
        c.agent.service.register(name, check=consul.Check.ttl("30s"))
        c.kv.put("fill/29", "again")
        t0 = time.monotonic()
        new_health, entries = c.health.service(name, index=old_health, wait="60s")
        new_kv, entry = c.kv.get("fill/29", index=old_kv, wait="60s")
        assert time.monotonic() - t0 < 30, "a future index blocked for its whole wait"
        assert 0 < int(new_health) < int(old_health) and [e["Service"]["ID"] for e in entries] == [name]
        assert 0 < int(new_kv) < int(old_kv) and entry["Value"] == b"again"
        # the client starts over from the index it was given: that blocks, and wakes on a change
        got: dict[str, object] = {}
        t = threading.Thread(target=lambda: got.update(r=c.kv.get("fill/29", index=new_kv, wait="20s")))
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "the index the registry answered did not block"
        c.kv.put("fill/29", "changed")
        t.join(20)
        index, entry = got["r"]  # type: ignore[misc]
        assert int(index) > int(new_kv) and entry["Value"] == b"changed"
    finally:
        stop_registry(again)
