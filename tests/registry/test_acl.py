"""Consul ACLs on a real `shoal registry --acl`, driven by py-consul and by raw HTTP as Consul's Go client
sends it (X-Consul-Token, Authorization: Bearer, ?token=); the rule decisions themselves as pure
functions; and hypothesis over rule text and token headers (never a 500)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid

import consul
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import BadRequest
from shoal.registry import acl
from tests.registry.conftest import ACL_MANAGEMENT, RegistryProc, start_registry, stop_registry

# --- the decisions, pure -----------------------------------------------------------------------------


def _authz(*texts: str, default: str = "deny") -> acl.Authz:
    rules = [r for t in texts for r in acl.parse_rules(t)]
    return acl.compile_authz("acc-1", rules, default)


def test_longest_prefix_wins_and_exact_beats_prefix():
    a = _authz(
        'key_prefix "" { policy = "read" }\n'
        'key_prefix "app/" { policy = "write" }\n'
        'key_prefix "app/secret/" { policy = "deny" }\n'
        'key "app/secret/open" { policy = "read" }'
    )
    assert acl.allowed(a, "key", "app/x", "write").allowed
    assert not acl.allowed(a, "key", "other", "write").allowed
    assert acl.allowed(a, "key", "other", "read").allowed
    d = acl.allowed(a, "key", "app/secret/x", "read")
    assert not d.allowed and d.reason == 'key_prefix "app/secret/" is deny'
    assert acl.allowed(a, "key", "app/secret/open", "read").allowed
    assert not acl.allowed(a, "key", "app/secret/open", "write").allowed


def test_deny_beats_across_policies_and_write_beats_read():
    a = _authz('key_prefix "a/" { policy = "write" }', 'key_prefix "a/" { policy = "deny" }')
    assert not acl.allowed(a, "key", "a/b", "read").allowed
    b = _authz('service "web" { policy = "read" }', 'service "web" { policy = "write" }')
    assert acl.allowed(b, "service", "web", "write").allowed


def test_default_policy_decides_where_no_rule_matches_but_never_grants_acl():
    allow = _authz("", default="allow")
    assert acl.allowed(allow, "key", "x", "write").allowed
    assert not acl.allowed(allow, "acl", "", "write").allowed
    d = acl.allowed(_authz(""), "key", "x", "read")
    assert not d.allowed and d.reason == "no rule matches; default policy deny"
    assert (
        d.message() == "Permission denied: token with AccessorID 'acc-1' lacks permission 'key:read' on \"x\""
    )


def test_list_policy_reads_and_lists_but_does_not_write():
    a = _authz('key_prefix "l/" { policy = "list" }')
    assert acl.allowed(a, "key", "l/x", "read").allowed
    assert acl.allowed(a, "key", "l/x", "list").allowed
    assert not acl.allowed(a, "key", "l/x", "write").allowed


def test_tree_write_needs_every_rule_under_the_prefix_to_grant_it():
    a = _authz('key_prefix "t/" { policy = "write" }\nkey "t/keep" { policy = "read" }')
    assert acl.allowed(a, "key", "t/sub/", "write", tree=True).allowed
    d = acl.allowed(a, "key", "t/", "write", tree=True)
    assert not d.allowed and d.reason == 'key "t/keep" is read'


def test_json_and_hcl_rules_mean_the_same():
    hcl = 'key_prefix "x/" { policy = "write" }\nnode "n" { policy = "read" }\noperator = "read"'
    js = json.dumps(
        {"key_prefix": {"x/": {"policy": "write"}}, "node": {"n": {"policy": "read"}}, "operator": "read"}
    )
    assert set(acl.parse_rules(hcl)) == set(acl.parse_rules(js))


@pytest.mark.parametrize(
    "text, says",
    [
        ('key "x" { policy = "sudo" }', 'Invalid key policy: "sudo"'),
        ('session "x" { policy = "list" }', 'Invalid session policy: "list"'),
        ('key { policy = "read" }', "key needs one name and a block"),
        ('keys "x" { policy = "read" }', "unknown rule 'keys'"),
        ('key "x" { policy = "read"', "expected a rule name"),
        ('key "x', "string not terminated"),
        ('{"key": ', "invalid JSON"),
    ],
)
def test_bad_rules_are_refused_naming_the_problem(text, says):
    with pytest.raises(BadRequest) as e:
        acl.parse_rules(text)
    assert says in e.value.message and e.value.message.startswith("Failed to parse ACL rules")


def test_node_policy_writes_its_own_node_only():
    a = _authz(acl.node_policy("n1"))
    yes = [("key", "shoal/nodes/n1/facts"), ("key", "shoal/mounts/n1/ds1"), ("node", "n1"), ("session", "n1")]
    no = [("key", "shoal/nodes/n2/facts"), ("key", "shoal/datasets/ds1"), ("node", "n2"), ("session", "n2")]
    no += [("key", "shoal/nodes/n10/facts"), ("service", "web"), ("key", "other")]
    assert all(acl.allowed(a, r, n, "write").allowed for r, n in yes)
    assert not any(acl.allowed(a, r, n, "write").allowed for r, n in no)
    assert acl.allowed(a, "service", "web", "read").allowed and acl.allowed(a, "node", "n2", "read").allowed
    assert acl.allowed(a, "key", "shoal/datasets/ds1", "read").allowed


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=200))
def test_any_rule_text_parses_or_is_a_bad_request(text):
    try:
        rules = acl.parse_rules(text)
    except BadRequest as e:
        assert e.message.startswith("Failed to parse ACL rules")
    else:
        a = acl.compile_authz("x", rules)
        for r in rules:
            acl.allowed(a, r.resource, r.name, "read")


# --- a real registry ---------------------------------------------------------------------------------


def _c(r: RegistryProc, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=r.http_port, token=token)


def _http(r: RegistryProc, method: str, path: str, *, token: str = "", data: bytes | str | None = None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["X-Consul-Token"] = token
    return requests.request(method, r.url + path, data=data, headers=headers, timeout=10, **kw)


def _token(r: RegistryProc, rules: str = "", **create) -> str:
    m = _c(r, ACL_MANAGEMENT)
    links = {}
    if rules:
        p = m.acl.policy.create(name=f"p-{uuid.uuid4().hex[:12]}", rules=rules)
        links["policies_id"] = [p["ID"]]
    return m.acl.token.create(**links, **create)["SecretID"]


def _dig(r: RegistryProc, name: str) -> list[str]:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(r.dns_port), name, "SRV", "+short", "+tries=1", "+time=2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line for line in out.splitlines() if line)


def test_without_a_token_kv_writes_are_denied_and_discovery_reads_work(acl_registry):
    r, anon = acl_registry, _c(acl_registry)
    m = _c(r, ACL_MANAGEMENT)
    m.agent.service.register("acl-web", service_id="acl-web-1", port=8080)
    m.kv.put("acl/anon", "v")
    with pytest.raises(consul.ACLPermissionDenied, match="anonymous token lacks permission 'key:write'"):
        anon.kv.put("acl/anon", "w")
    with pytest.raises(consul.ACLPermissionDenied):
        anon.kv.delete("acl/anon")
    with pytest.raises(consul.ACLPermissionDenied):
        anon.kv.get("acl/anon")
    assert _http(r, "PUT", "/v1/session/create", data="{}").status_code == 403
    _, entries = anon.health.service("acl-web")
    assert [e["Service"]["ID"] for e in entries] == ["acl-web-1"]
    assert "acl-web" in anon.catalog.services()[1]
    assert "mgr" in [n["Node"] for n in anon.catalog.nodes()[1]]
    assert _dig(r, "acl-web.service.shoal") == ["1 1 8080 mgr.node.dc1.shoal."]  # DNS needs no token
    assert m.kv.get("acl/anon")[1]["Value"] == b"v"


def test_bootstrap_works_once():
    r = start_registry(f"sqlite://{tempfile.mkdtemp()}/registry.db", "--acl")
    try:
        c = _c(r)
        t = c.acl.bootstrap()
        assert t["ID"] == t["SecretID"] and t["Policies"][0]["Name"] == "global-management"
        with pytest.raises(consul.ACLPermissionDenied, match="ACL bootstrap no longer allowed"):
            c.acl.bootstrap()
        m = _c(r, t["SecretID"])
        assert m.kv.put("after/bootstrap", "ok")
        assert m.acl.token.read_self()["AccessorID"] == t["AccessorID"]
        assert t["SecretID"] not in r.log.read_text()
    finally:
        stop_registry(r)


def test_initial_management_token_counts_as_bootstrap(acl_registry):
    with pytest.raises(consul.ACLPermissionDenied, match="ACL bootstrap no longer allowed"):
        _c(acl_registry).acl.bootstrap()
    assert ACL_MANAGEMENT not in acl_registry.log.read_text()


def test_management_token_may_do_everything(acl_registry):
    m = _c(acl_registry, ACL_MANAGEMENT)
    assert m.kv.put("mgmt/a", "1") and m.kv.get("mgmt/a")[1]["Value"] == b"1"
    sid = m.session.create(name="mgmt", ttl=30)
    assert m.kv.put("mgmt/lock", "x", acquire=sid)
    assert m.kv.delete("mgmt/", recurse=True)
    m.session.destroy(sid)
    assert m.catalog.register("mgmt-node", "10.0.0.9", service={"Service": "mgmt-svc", "Port": 1})
    assert m.catalog.deregister("mgmt-node")
    # py-consul's agent.self() sends no token at all, so ask as Consul's Go client does
    assert (
        _http(acl_registry, "GET", "/v1/agent/self", token=ACL_MANAGEMENT).json()["Config"]["NodeName"]
        == "mgr"
    )
    assert _http(acl_registry, "GET", "/v1/agent/self").status_code == 403
    assert any(t["Description"] == "Initial Management Token" for t in m.acl.token.list())


def test_node_token_writes_only_its_own_node(acl_registry):
    r = acl_registry
    m = _c(r, ACL_MANAGEMENT)
    made = m.acl.token.create(description="agent n1", node_identities=["n1:dc1"])
    assert made["NodeIdentities"][0]["NodeName"] == "n1"
    n1 = _c(r, made["SecretID"])
    assert n1.kv.put("shoal/nodes/n1/facts", "{}")
    assert n1.kv.put("shoal/mounts/n1/ds1", "m")
    assert n1.catalog.register("n1", "10.99.0.11", service={"Service": "shoal-agent", "ID": "shoal-agent"})
    for key in ("shoal/nodes/n2/facts", "shoal/datasets/ds1", "shoal/dataset-names/x", "shoal/mounts/n2/ds1"):
        with pytest.raises(consul.ACLPermissionDenied, match=f"lacks permission 'key:write' on \"{key}\""):
            n1.kv.put(key, "x")
    m.kv.put("shoal/nodes/n2/facts", "{}")
    with pytest.raises(consul.ACLPermissionDenied):
        n1.kv.delete("shoal/nodes/n2/facts")
    with pytest.raises(consul.ACLPermissionDenied):
        n1.kv.delete("shoal/nodes/", recurse=True)
    with pytest.raises(consul.ACLPermissionDenied):
        n1.catalog.register("n2", "10.99.0.12")
    assert n1.kv.get("shoal/nodes/n2/facts")[1]["Value"] == b"{}"  # reads are fine
    txn = [{"KV": {"Verb": "set", "Key": "shoal/nodes/n1/a", "Value": ""}}]
    txn.append({"KV": {"Verb": "set", "Key": "shoal/datasets/ds1", "Value": ""}})
    resp = _http(r, "PUT", "/v1/txn", token=made["SecretID"], data=json.dumps(txn))
    assert resp.status_code == 409
    assert resp.json()["Errors"] == [{"OpIndex": 1, "What": "Permission denied"}]
    assert m.kv.get("shoal/nodes/n1/a")[1] is None  # nothing of it written


def test_listings_drop_what_the_token_may_not_read(acl_registry):
    r = acl_registry
    m = _c(r, ACL_MANAGEMENT)
    for k in ("flt/app/a", "flt/app/b", "flt/other/c"):
        m.kv.put(k, "v")
    m.agent.service.register("flt-web", port=1)
    m.agent.service.register("flt-db", port=2)
    tok = _token(
        r,
        'key_prefix "flt/app/" { policy = "read" }\nservice "flt-web" { policy = "read" }\n'
        'node_prefix "" { policy = "read" }',
    )
    resp = _http(r, "GET", "/v1/kv/flt/?recurse", token=tok)
    assert [e["Key"] for e in resp.json()] == ["flt/app/a", "flt/app/b"]
    assert resp.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    assert _http(r, "GET", "/v1/kv/flt/?keys", token=tok).json() == ["flt/app/a", "flt/app/b"]
    assert _http(r, "GET", "/v1/kv/flt/other/?recurse", token=tok).status_code == 404
    services = _c(r, tok).catalog.services()[1]
    assert "flt-web" in services and "flt-db" not in services
    assert _c(r, tok).health.service("flt-db")[1] == []
    full = _http(r, "GET", "/v1/kv/flt/?recurse", token=ACL_MANAGEMENT)
    assert len(full.json()) == 3 and "X-Consul-Results-Filtered-By-ACLs" not in full.headers


def test_token_given_by_query_bearer_header_or_environment(acl_registry, monkeypatch):
    r = acl_registry
    tok = _token(r, 'key_prefix "tok/" { policy = "write" }')
    assert _http(r, "PUT", f"/v1/kv/tok/q?token={tok}", data="1").json() is True
    bearer = {"Authorization": f"Bearer {tok}"}
    assert _http(r, "PUT", "/v1/kv/tok/b", data="1", headers=bearer).json() is True
    assert _http(r, "PUT", "/v1/kv/elsewhere", data="1", headers=bearer).status_code == 403
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", tok)
    assert consul.Consul(host="127.0.0.1", port=r.http_port).kv.put("tok/env", "1")


@pytest.mark.parametrize("where", ["header", "query", "bearer"])
def test_unknown_token_is_acl_not_found(acl_registry, where):
    bogus = str(uuid.uuid4())
    kw = {
        "header": {"headers": {"X-Consul-Token": bogus}},
        "query": {"params": {"token": bogus}},
        "bearer": {"headers": {"Authorization": f"Bearer {bogus}"}},
    }[where]
    resp = requests.get(acl_registry.url + "/v1/catalog/services", timeout=10, **kw)
    assert (resp.status_code, resp.text) == (403, "ACL not found")
    assert bogus not in acl_registry.log.read_text()


def test_acl_state_is_invisible_and_untouchable_through_kv(acl_registry):
    r = acl_registry
    m = _c(r, ACL_MANAGEMENT)
    assert _http(r, "GET", "/v1/kv/shoal/acl/bootstrap", token=ACL_MANAGEMENT).status_code == 404
    assert _http(r, "GET", "/v1/kv/shoal/acl/?recurse", token=ACL_MANAGEMENT).status_code == 404
    everything = _http(r, "GET", "/v1/kv/?recurse", token=ACL_MANAGEMENT)
    assert not [e for e in everything.json() if e["Key"].startswith("shoal/acl/")]
    keys = _http(r, "GET", "/v1/kv/shoal/?keys&separator=/", token=ACL_MANAGEMENT).json()
    assert "shoal/acl/" not in keys
    with pytest.raises(consul.ACLPermissionDenied, match="shoal/acl/"):
        m.kv.put("shoal/acl/tokens/x", "{}")
    with pytest.raises(consul.ACLPermissionDenied):
        m.kv.delete("shoal/", recurse=True)
    with pytest.raises(consul.ACLPermissionDenied):
        m.kv.delete("shoal/acl/bootstrap")
    txn = json.dumps([{"KV": {"Verb": "get", "Key": "shoal/acl/bootstrap"}}])
    assert _http(r, "PUT", "/v1/txn", token=ACL_MANAGEMENT, data=txn).status_code == 409
    assert m.acl.token.read_self()["SecretID"] == ACL_MANAGEMENT  # all still there


def test_tokens_and_policies_round_trip_through_py_consul(acl_registry):
    m = _c(acl_registry, ACL_MANAGEMENT)
    p = m.acl.policy.create(name="rt-policy", rules='key_prefix "rt/" { policy = "write" }', description="d")
    assert m.acl.policy.read(p["ID"])["Rules"] == 'key_prefix "rt/" { policy = "write" }'
    assert (
        _http(acl_registry, "GET", "/v1/acl/policy/name/rt-policy", token=ACL_MANAGEMENT).json()["ID"]
        == p["ID"]
    )
    assert "rt-policy" in [x["Name"] for x in m.acl.policy.list()]
    t = m.acl.token.create(description="rt", policies_id=[p["ID"]])
    c = _c(acl_registry, t["SecretID"])
    assert c.kv.put("rt/x", "1")
    with pytest.raises(consul.ACLPermissionDenied):
        c.kv.put("rt2/x", "1")
    m.acl.policy.update(p["ID"], "rt-policy", rules='key_prefix "rt2/" { policy = "write" }')
    assert c.kv.put("rt2/x", "1")
    assert m.acl.token.read(t["AccessorID"])["Description"] == "rt"
    m.acl.token.update(t["AccessorID"], description="renamed", policies_id=[p["ID"]])
    assert m.acl.token.read(t["AccessorID"])["Description"] == "renamed"
    assert m.acl.token.delete(t["AccessorID"])
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        c.kv.put("rt/x", "1")
    assert m.acl.token.read(t["AccessorID"]) is None
    assert m.acl.policy.delete(p["ID"])
    with pytest.raises(consul.ACLPermissionDenied):
        c.acl.token.list()


@pytest.mark.parametrize(
    "path, body, says",
    [
        ("/v1/acl/policy", {"Name": "bad", "Rules": 'key "x" { policy = "sudo" }'}, "Invalid key policy"),
        ("/v1/acl/policy", {"Name": "no spaces", "Rules": ""}, "invalid Name"),
        ("/v1/acl/policy", {"Rules": ""}, "no Name is set"),
        ("/v1/acl/policy", {"Name": "global-management"}, "already exists"),
        ("/v1/acl/token", {"Policies": [{"ID": "nope"}]}, 'No such ACL policy with ID "nope"'),
        ("/v1/acl/token", {"AccessorID": "not-a-uuid"}, "AccessorID must be a UUID"),
        ("/v1/acl/token", "[1]", "expected a JSON object"),
        ("/v1/acl/token", "{", "Token decoding failed"),
    ],
)
def test_bad_acl_input_is_a_400_naming_the_problem(acl_registry, path, body, says):
    data = body if isinstance(body, str) else json.dumps(body)
    resp = _http(acl_registry, "PUT", path, token=ACL_MANAGEMENT, data=data)
    assert resp.status_code == 400 and says in resp.text


_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=80
)


@settings(settings.get_profile("registry-fuzz"), max_examples=60)
@given(rules=st.text(max_size=120), name=st.text(max_size=20))
def test_fuzzed_policies_are_created_or_refused_never_a_500(acl_registry, rules, name):
    resp = _http(
        acl_registry,
        "PUT",
        "/v1/acl/policy",
        token=ACL_MANAGEMENT,
        data=json.dumps({"Name": name, "Rules": rules}),
    )
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 200:
        _http(acl_registry, "DELETE", f"/v1/acl/policy/{resp.json()['ID']}", token=ACL_MANAGEMENT)


@settings(settings.get_profile("registry-fuzz"), max_examples=80)
@given(where=st.sampled_from(["X-Consul-Token", "Authorization", "token"]), value=_HEADER_TEXT)
def test_fuzzed_tokens_are_refused_or_anonymous_never_a_500(acl_registry, where, value):
    if where == "token":
        resp = requests.put(acl_registry.url + "/v1/kv/fz", params={"token": value}, data="x", timeout=10)
    else:
        headers = {where: value.lstrip(" ").encode("latin-1")}  # a header value never starts with a space
        resp = requests.put(acl_registry.url + "/v1/kv/fz", headers=headers, data="x", timeout=10)
    assert resp.status_code == 403, resp.text
    assert resp.text == "ACL not found" or resp.text.startswith("Permission denied: anonymous token")


def test_default_policy_allow_lets_anonymous_write_but_not_manage_acls():
    r = start_registry(f"sqlite://{tempfile.mkdtemp()}/registry.db", "--acl", "--acl-default-policy", "allow")
    try:
        assert _c(r).kv.put("open/x", "1")
        with pytest.raises(consul.ACLPermissionDenied, match="'acl:read'"):
            _c(r).acl.token.list()
    finally:
        stop_registry(r)


def test_a_token_made_on_one_manager_works_on_another_sharing_etcd(etcd_endpoint):
    store = "etcd://" + etcd_endpoint
    first = start_registry(store, "--acl", env={"CONSUL_ACL_INITIAL_MANAGEMENT": ACL_MANAGEMENT})
    other = start_registry(store, "--acl")
    try:
        tok = _token(first, 'key_prefix "shared/" { policy = "write" }')
        assert _c(other, tok).kv.put("shared/x", "1")
        accessor = _c(first, tok).acl.token.read_self()["AccessorID"]
        assert _c(other, ACL_MANAGEMENT).acl.token.delete(accessor)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the first manager hears of it through its watch
            if _http(first, "PUT", "/v1/kv/shared/y", token=tok, data="1").status_code == 403:
                break
            time.sleep(0.05)
        assert _http(first, "PUT", "/v1/kv/shared/y", token=tok, data="1").text == "ACL not found"
    finally:
        stop_registry(other)
        stop_registry(first)
