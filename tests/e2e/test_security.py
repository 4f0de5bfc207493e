"""Secure by default (issue 13), seen from where an attacker would stand: a container on the cluster, a
node holding only its own certificate, and the logs an operator ships elsewhere."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.manager.node_records import OPS as NODE_RECORD_OPS
from shoal.registry.acl import DERIVED_NODE

pytestmark = pytest.mark.usefixtures("secure_only")


@pytest.fixture
def secure_only(dev_cluster):
    if not dev_cluster.secure:
        pytest.skip("the cluster was brought up with --insecure")


# the host's docker CLI, run inside a busybox container (it needs only libc and the loader)
CLI_MOUNTS = [
    "-v", "/usr/bin/docker:/docker:ro",
    "-v", "/lib/x86_64-linux-gnu/libc.so.6:/lib/x86_64-linux-gnu/libc.so.6:ro",
    "-v", "/lib64/ld-linux-x86-64.so.2:/lib64/ld-linux-x86-64.so.2:ro",
]  # fmt: skip
# TLS, trusting the cluster's (public) control CA, holding no certificate of its own
NO_CERT = ["--tlsverify", "--tlscacert", "/certs/ca.pem"]
CANNOT_CONNECT = "Cannot connect to the Docker daemon"


@pytest.fixture
def public_ca(dev_cluster, tmp_path):
    """A directory holding only the control CA's certificate (public: every engine presents it)."""
    (tmp_path / "ca.pem").write_bytes((dev_cluster.tls / "control-ca.pem").read_bytes())
    return tmp_path


def _in_container(dev_cluster, certs, *argv: str) -> subprocess.CompletedProcess[str]:
    """`argv` run in a throwaway container placed by the manager, as any user's container would be."""
    return dev_cluster.cli(
        "run", "--rm", "-e", "DOCKER_CONFIG=/tmp", *CLI_MOUNTS, "-v", f"{certs}:/certs:ro", "busybox", *argv,
        check=False, timeout=90,
    )  # fmt: skip


def test_a_container_without_a_certificate_gets_into_no_engine(dev_cluster, public_ca):
    for node in dev_cluster.nodes:
        addr = dev_cluster.address(node)
        plain = _in_container(dev_cluster, public_ca, "/docker", "-H", f"tcp://{addr}:2376", "ps")
        assert plain.returncode != 0, plain.stdout
        assert "HTTPS server" in plain.stderr or "tls" in plain.stderr.lower(), plain.stderr
        # speaking TLS but holding no certificate: refused at the handshake
        tls = _in_container(dev_cluster, public_ca, "/docker", "-H", f"tcp://{addr}:2376", *NO_CERT, "ps")
        assert tls.returncode != 0, tls.stdout
        assert "tls: bad certificate" in tls.stderr, tls.stderr
        # and nothing answers on the old plain port
        old = _in_container(dev_cluster, public_ca, "/docker", "-H", f"tcp://{addr}:2375", "ps")
        assert old.returncode != 0 and CANNOT_CONNECT in old.stderr, old.stderr
    # nor the manager, nor the registry's plain Consul port
    gw = dev_cluster.gateway
    mgr = _in_container(dev_cluster, public_ca, "/docker", "-H", f"tcp://{gw}:2376", *NO_CERT, "ps")
    # the manager says so too (TLS 1.3's alert for it), not a bare EOF
    assert mgr.returncode != 0 and "tls: certificate required" in mgr.stderr, mgr.stderr
    for port in (2375, 8500):
        closed = _in_container(dev_cluster, public_ca, "/docker", "-H", f"tcp://{gw}:{port}", "ps")
        assert closed.returncode != 0 and CANNOT_CONNECT in closed.stderr, (port, closed.stderr)


def test_the_admin_certificate_gets_in_where_a_node_certificate_does_not(dev_cluster):
    """The operator's certificate (control CA) reaches an engine directly; an agent's node certificate
    (node CA), which every node holds, gets into no engine and not into the manager's Docker API."""
    node = "node2"
    ok = dev_cluster.cli("ps", "-q", host=dev_cluster.nodes[node])
    assert ok.returncode == 0
    state = dev_cluster.node_dir(node) / "agent"
    node_cert = (str(state / "cert.pem"), str(state / "key.pem"))
    admin = (str(dev_cluster.certs / "cert.pem"), str(dev_cluster.certs / "key.pem"))
    for url in (dev_cluster.nodes[node], dev_cluster.manager):
        base = url.replace("tcp://", "https://")
        ping = requests.get(f"{base}/_ping", cert=admin, verify=str(dev_cluster.certs / "ca.pem"), timeout=10)
        assert ping.text == "OK"
        # refused at the handshake (TLS 1.3 says so on the first read: a reset, not an alert, may be seen)
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"{base}/_ping", cert=node_cert, verify=False, timeout=10)


def test_secrets_never_reach_a_log(dev_cluster, tmp_path):
    """Join tokens (good and wrong ones), the registry's management token and each node's token, private
    keys and X-Registry-Auth credentials pass through the cluster; none of them shows up in any log it
    wrote."""
    token = (dev_cluster.tls / "join-token").read_text().strip()
    fresh = subprocess.run(
        [sys.executable, "-m", "shoal", "token", "create", "-q"],
        capture_output=True, text=True, env=dev_cluster.client_env(), check=True,
    ).stdout.strip()  # fmt: skip
    wrong = fresh.rsplit(".", 1)[0] + ".not-the-secret-Xq7Zr2"
    got = subprocess.run(
        [sys.executable, "-m", "shoal", "agent", "--manager", f"https://{dev_cluster.gateway}:2377",
         "--join", wrong, "--node", "intruder", "--state-dir", str(tmp_path / "state"), "--interval", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode != 0 and "shoal token create" in got.stderr, got.stderr
    assert wrong.rsplit(".", 1)[1] not in got.stderr
    password = "pw-Secret-9f3a1c"
    auth = {"username": "someone", "password": password, "serveraddress": "127.0.0.1:1"}
    client = dev_cluster.docker_py()
    try:
        with pytest.raises(Exception):  # noqa: B017 - the pull fails (no such registry); the header went by
            client.images.pull("127.0.0.1:1/nothing", tag="x", auth_config=auth)
    finally:
        client.close()
    encoded = base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()
    secrets = {
        "the cluster's join token": token.rsplit(".", 1)[1],
        "a fresh join token": fresh.rsplit(".", 1)[1],
        "a wrong join secret": wrong.rsplit(".", 1)[1],
        "a registry password": password,
        "an X-Registry-Auth header": encoded[:40],
    }
    if mgmt := dev_cluster.env.get("CONSUL_HTTP_TOKEN"):
        secrets["the registry's management token"] = mgmt
    for node in dev_cluster.nodes:  # each agent's registry token, as joining gave it (its state directory)
        mac = _node_token(dev_cluster, node).removeprefix(DERIVED_NODE).partition(".")[0]
        assert len(mac) >= 32, mac
        secrets[f"{node}'s node token"] = mac
    for key in (dev_cluster.root / dev_cluster.name).rglob("key.pem"):
        body = "".join(key.read_text().splitlines()[1:-1])
        secrets[f"the private key {key}"] = body[16:56]
    logs = [p for p in (dev_cluster.root / dev_cluster.name).rglob("*.log") if p.is_file()]
    assert len(logs) >= 1 + len(dev_cluster.nodes)
    for log in logs:
        text = log.read_text(errors="replace")
        for what, secret in secrets.items():
            assert secret not in text, f"{what} is in {log}"


def _shoal(dev_cluster, *argv: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *argv],
        capture_output=True, text=True, env=dev_cluster.client_env(), **kw,
    )  # fmt: skip


def test_a_revoked_join_token_is_listed_no_more_and_joins_no_node(dev_cluster, tmp_path):
    """Rotating a join token: make a new one, revoke the old by its id; the revoked one is refused with the
    way to get a new one, and `shoal token ls` never shows a secret."""
    made = _shoal(dev_cluster, "token", "create", "-q", check=True).stdout.strip()
    token_id, secret = re.fullmatch(r"SHOAL-1-[0-9a-f]{64}-([0-9a-f]{16})\.(.+)", made).groups()
    listing = _shoal(dev_cluster, "token", "ls", check=True).stdout
    assert token_id in listing and secret not in listing
    assert _shoal(dev_cluster, "token", "rm", token_id, check=True).stdout.split() == [token_id]
    assert token_id not in _shoal(dev_cluster, "token", "ls", check=True).stdout
    again = _shoal(dev_cluster, "token", "rm", token_id)
    assert again.returncode != 0 and f"no join token {token_id}" in again.stderr, again.stderr
    got = subprocess.run(
        [sys.executable, "-m", "shoal", "agent", "--manager", f"https://{dev_cluster.gateway}:2377",
         "--join", made, "--node", "revoked", "--state-dir", str(tmp_path / "state"), "--interval", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode != 0, got.stderr
    assert "this join token is not valid (unknown, revoked or mistyped)" in got.stderr, got.stderr
    assert "shoal token create" in got.stderr


def _registry(dev_cluster, method: str, path: str, token: str = "", **kw) -> requests.Response:
    """One Consul API request as a client with `token` (none: what any container on the cluster has)."""
    s = requests.Session()
    s.trust_env = False  # this machine's REQUESTS_CA_BUNDLE would replace `verify`
    headers = {"X-Consul-Token": token} if token else {}
    return s.request(
        method, f"{dev_cluster.registry_url}{path}", headers=headers, verify=dev_cluster.env["CONSUL_CACERT"],
        timeout=30, **kw,
    )  # fmt: skip


def _node_token(dev_cluster, node: str) -> str:
    """The registry token node's agent got when it joined (kept in its state directory)."""
    creds = dev_cluster.root / dev_cluster.name / node / "agent" / "credentials.json"
    return json.loads(creds.read_text())["token"]


def test_without_a_token_the_registry_serves_discovery_and_nothing_else(dev_cluster):
    """Anonymous: KV writes and deletes are 403 (every dataset record stays), KV reads see nothing, sessions
    cannot be made; health, catalog and DNS still answer for service discovery."""
    mgmt = dev_cluster.env["CONSUL_HTTP_TOKEN"]
    before = _registry(dev_cluster, "GET", "/v1/kv/shoal/?keys", mgmt).json()
    for method, path in [
        ("PUT", "/v1/kv/shoal/intruder"),
        ("DELETE", "/v1/kv/shoal/datasets/?recurse"),
        ("DELETE", "/v1/kv/?recurse"),
        ("PUT", "/v1/session/create"),
        ("PUT", "/v1/acl/token"),
    ]:
        r = _registry(dev_cluster, method, path, data=b"{}")
        assert r.status_code == 403 and "Permission denied" in r.text, (method, path, r.status_code, r.text)
    assert _registry(dev_cluster, "GET", "/v1/kv/shoal/?recurse").status_code in (403, 404)
    assert _registry(dev_cluster, "GET", "/v1/kv/shoal/?keys", mgmt).json() == before
    r = _registry(dev_cluster, "GET", "/v1/kv/shoal/?keys", token="not-a-token")
    assert (r.status_code, r.text.strip()) == (403, "ACL not found")
    healthy = _registry(dev_cluster, "GET", "/v1/health/service/shoal-agent?passing").json()
    assert sorted(e["Node"]["Node"] for e in healthy) == sorted(dev_cluster.nodes)
    got = subprocess.run(
        ["dig", "+short", f"@{dev_cluster.gateway}", "-p", "8600", "shoal-agent.service.shoal"],
        capture_output=True, text=True, timeout=30,
    ).stdout.split()  # fmt: skip
    assert sorted(got) == sorted(dev_cluster.address(n) for n in dev_cluster.nodes)


def _host_binary_mounts(binary: str) -> list[str]:
    """`-v` flags that put this host's `binary` at /BINARY in a container, with every shared library `ldd`
    says it loads at its own path. (busybox has no HTTP client that can PUT or DELETE, nor a TLS the
    registry's HTTPS speaks: its ssl_client offers no signature algorithms, which in TLS 1.2 means SHA-1.)"""
    path = shutil.which(binary)
    assert path, f"{binary} is not installed on this host"
    libs = re.findall(r"(/\S+) \(0x", subprocess.run(["ldd", path], capture_output=True, text=True).stdout)
    mounts = ["-v", f"{path}:/{binary}:ro"]
    for lib in dict.fromkeys(libs):
        mounts += ["-v", f"{lib}:{lib}:ro"]
    return mounts


def test_from_a_container_kv_writes_and_deletes_are_refused_and_dns_still_answers(dev_cluster):
    """What any container on the cluster can do to the registry without a token: the host's curl, run in a
    busybox container placed by the manager, PUTs and DELETEs on the KV over the registry's HTTPS and gets
    403 each time (every record stays); busybox's nslookup asks the registry's DNS and gets the nodes."""
    mgmt = dev_cluster.env["CONSUL_HTTP_TOKEN"]
    before = _registry(dev_cluster, "GET", "/v1/kv/shoal/?keys", mgmt).json()
    base, gw = dev_cluster.registry_url, dev_cluster.gateway
    assert base == f"https://{gw}:8501", base
    asks = [
        ("PUT", "/v1/kv/shoal/intruder"),
        ("PUT", "/v1/kv/shoal/datasets/intruder"),
        ("DELETE", "/v1/kv/shoal/datasets/?recurse"),
        ("DELETE", "/v1/kv/?recurse"),
    ]
    curl = "/curl -sS --cacert /ca.pem -o /tmp/body -w '%{http_code}'"
    script = "".join(
        f"code=$({curl} -X {method} {'--data x' if method == 'PUT' else ''} '{base}{path}');"
        f' echo "{method} {path} $code $(cat /tmp/body)";'
        for method, path in asks
    )
    script += f" echo; nslookup shoal-agent.service.shoal {gw}:8600"
    got = dev_cluster.cli(
        "run", "--rm", *_host_binary_mounts("curl"), "-v", f"{dev_cluster.env['CONSUL_CACERT']}:/ca.pem:ro",
        "busybox", "sh", "-c", script,
        check=False, timeout=90,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    http, _, dns = got.stdout.partition("\n\n")
    answers = http.splitlines()
    assert len(answers) == len(asks), got.stdout
    for (method, path), line in zip(asks, answers, strict=True):
        assert line.startswith(f"{method} {path} 403 ") and "Permission denied" in line, got.stdout
    # nothing was written and nothing deleted (the cluster's own writes meanwhile aside: the decision the
    # manager recorded for this container, what the agents publish)
    after = _registry(dev_cluster, "GET", "/v1/kv/shoal/?keys", mgmt).json()
    assert {"shoal/intruder", "shoal/datasets/intruder"}.isdisjoint(after)
    assert {k for k in before if not k.startswith("shoal/decisions/")} <= set(after)
    # the DNS answers: every node's agent, by the name discovery gives it (the server line has its port)
    found = set(re.findall(r"^Address:\s+([0-9.]+)$", dns, re.MULTILINE))
    assert found == {dev_cluster.address(n) for n in dev_cluster.nodes}, got.stdout


def test_a_nodes_token_writes_its_own_keys_and_no_other_nodes(dev_cluster):
    """node1's agent token (got at join) writes under shoal/nodes/node1/ but not node2's keys, cannot
    delete the dataset records recursively, nor mint tokens."""
    token = _node_token(dev_cluster, "node1")
    assert token and token != dev_cluster.env["CONSUL_HTTP_TOKEN"]
    own = _registry(dev_cluster, "PUT", "/v1/kv/shoal/nodes/node1/probe", token, data=b"1")
    assert (own.status_code, own.text.strip()) == (200, "true")
    assert _registry(dev_cluster, "DELETE", "/v1/kv/shoal/nodes/node1/probe", token).status_code == 200
    for method, path in [
        ("PUT", "/v1/kv/shoal/nodes/node2/facts"),
        ("DELETE", "/v1/kv/shoal/nodes/node2/?recurse"),
        ("DELETE", "/v1/kv/shoal/datasets/?recurse"),
        ("PUT", "/v1/kv/shoal/join-tokens/0000000000000000"),
        ("PUT", "/v1/acl/token"),
    ]:
        r = _registry(dev_cluster, method, path, token, data=b"{}")
        assert r.status_code == 403 and "Permission denied" in r.text, (method, path, r.status_code, r.text)
    other = _registry(
        dev_cluster, "PUT", "/v1/catalog/register", token, json={"Node": "node2", "Address": "10.0.0.9"}
    )
    assert other.status_code == 403, other.text


def test_a_nodes_token_touches_no_dataset_record(dev_cluster):
    """Dataset records are written by the manager alone: node1's registry token can write, change or
    delete none of them, one at a time or recursively."""
    token = _node_token(dev_cluster, "node1")
    some = "00000000-0000-4000-8000-000000000001"
    for method, path in [
        ("PUT", f"/v1/kv/shoal/datasets/{some}"),
        ("PUT", "/v1/kv/shoal/dataset-names/intruder"),
        ("PUT", f"/v1/kv/shoal/deletions/{some}"),
        ("DELETE", f"/v1/kv/shoal/deletions/{some}"),
        ("PUT", f"/v1/kv/shoal/moves/{some}"),
        ("PUT", f"/v1/kv/shoal/replicas/{some}"),
        ("PUT", f"/v1/kv/shoal/replica-status/{some}/node1"),
        ("DELETE", "/v1/kv/shoal/dataset-names/?recurse"),
    ]:
        r = _registry(dev_cluster, method, path, token, data=b"{}")
        assert r.status_code == 403 and "Permission denied" in r.text, (method, path, r.status_code, r.text)


def _as_node(dev_cluster, node: str, op: str, body: dict) -> requests.Response:
    """A dataset record write sent to the manager with `node`'s own certificate, as its agent sends them
    (the body as Python's json writes it: NaN and Infinity too, which no JSON reader should take)."""
    agent = dev_cluster.node_dir(node) / "agent"
    with requests.Session() as s:
        s.trust_env = False
        return s.post(
            f"https://{dev_cluster.gateway}:2377/shoal/v1/records/{op}", data=json.dumps(body),
            headers={"Content-Type": "application/json"},
            cert=(str(agent / "cert.pem"), str(agent / "key.pem")), verify=str(agent / "ca.pem"), timeout=30,
        )  # fmt: skip


def test_a_node_cannot_ask_the_manager_to_delete_or_take_another_nodes_dataset(dev_cluster):
    """node1's certificate, asking the manager for writes about a dataset on node2: a deletion request, a
    forget, a record naming node1 or a record still naming node2 — each refused (403) and nothing changes:
    the dataset's record, name and bytes stay. Without a certificate nothing is written at all."""
    vol = f"sec-{secrets.token_hex(3)}"
    dev_cluster.cli(
        "run", "--rm", "-e", "constraint:node==node2", "-v", f"{vol}@gold:/data", "--volume-driver=shoal",
        "busybox", "sh", "-c", "echo kept > /data/f",
    )  # fmt: skip
    try:
        c = dev_cluster.consul()
        _, claim = c.kv.get(f"shoal/dataset-names/{vol}")
        dataset_id = claim["Value"].decode()
        _, got = c.kv.get(f"shoal/datasets/{dataset_id}")
        record = json.loads(got["Value"])
        assert record["node"] == "node2"
        deletion = {"id": dataset_id, "node": "node1", "name": vol, "by": "docker volume rm"}
        for op, body in [
            ("request_deletion", {"deletion": deletion}),
            ("request_deletion", {"deletion": {**deletion, "node": "node2"}}),
            ("forget", {"id": dataset_id, "name": vol}),
            ("publish", {"dataset": {**record, "node": "node1"}, "index": None}),
            ("publish", {"dataset": record, "index": None}),
            ("remove", {"dataset": {**record, "node": "node1"}}),
            ("commit", {"new": [{**record, "node": "node1"}]}),
            ("replica_status", {"id": dataset_id, "status": {"snapshot": "x", "error": ""}}),
        ]:
            r = _as_node(dev_cluster, "node1", op, body)
            assert r.status_code == 403, (op, r.status_code, r.text)
            assert "node1" in r.json()["message"], r.text
        with requests.Session() as s:
            s.trust_env = False
            anonymous = s.post(
                f"https://{dev_cluster.gateway}:2377/shoal/v1/records/forget",
                json={"id": dataset_id, "name": vol}, verify=dev_cluster.env["CONSUL_CACERT"], timeout=30,
            )  # fmt: skip
        assert anonymous.status_code == 403 and "certificate" in anonymous.json()["message"], anonymous.text
        assert json.loads(c.kv.get(f"shoal/datasets/{dataset_id}")[1]["Value"]) == record
        assert c.kv.get(f"shoal/deletions/{dataset_id}")[1] is None
        out = dev_cluster.cli(
            "run", "--rm", "-e", "constraint:node==node2", "-v", f"{vol}@gold:/data", "--volume-driver=shoal",
            "busybox", "cat", "/data/f",
        ).stdout  # fmt: skip
        assert out.strip() == "kept"
    finally:
        dev_cluster.cli("volume", "rm", vol, check=False)


def test_the_dashboard_without_a_certificate_wants_the_management_token_and_shows_no_secret(dev_cluster):
    """On the join listener (no client certificate needed) the dashboard is a login page; a wrong token or
    a node's token is refused; the management token sets a Secure, HttpOnly, SameSite=Strict cookie that
    opens the page and its overview, which holds no token or key."""
    base = f"https://{dev_cluster.gateway}:2377"
    s = requests.Session()
    s.trust_env = False
    s.verify = dev_cluster.env["CONSUL_CACERT"]  # the join listener's certificate is the node CA's
    page = s.get(f"{base}/dashboard", timeout=30)
    assert page.status_code == 200 and "<title>shoal: log in</title>" in page.text
    assert 'name="token"' in page.text
    assert s.get(f"{base}/shoal/v1/overview", timeout=30).status_code == 403
    for wrong in ("not-a-token", _node_token(dev_cluster, "node2")):
        r = s.post(f"{base}/dashboard/login", data={"token": wrong}, allow_redirects=False, timeout=30)
        assert r.status_code == 403 and "management token" in r.text and wrong not in r.text, r.text
        assert "shoal_dashboard" not in s.cookies
    mgmt = dev_cluster.env["CONSUL_HTTP_TOKEN"]
    r = s.post(f"{base}/dashboard/login", data={"token": mgmt}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    cookie = r.headers["Set-Cookie"]
    assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict")), cookie
    assert mgmt not in cookie
    doc = s.get(f"{base}/shoal/v1/overview", timeout=30)
    assert doc.status_code == 200
    assert sorted(n["name"] for n in doc.json()["nodes"]) == sorted(dev_cluster.nodes)
    text = doc.text + s.get(f"{base}/dashboard", timeout=30).text
    assert mgmt not in text and "PRIVATE KEY" not in text and "SHOAL-1-" not in text
    s.post(f"{base}/dashboard/logout", allow_redirects=False, timeout=30)
    assert s.get(f"{base}/shoal/v1/overview", timeout=30).status_code == 403


def test_a_nodes_dataset_stream_is_served_only_to_a_node_certificate(dev_cluster):
    """An agent serves its datasets' streams (`btrfs send`) over mutual TLS: plain HTTP and the operator's
    certificate (control CA) are refused; another node's certificate (node CA) is let in — a bad dataset
    id is then the agent's own 400, which says the handshake held."""
    _, got = dev_cluster.consul().kv.get("shoal/nodes/node2/transfer")
    doc = json.loads(got["Value"])
    assert doc["tls"] is True
    base = f"https://{doc['address']}"
    with requests.Session() as s:
        s.trust_env = False  # REQUESTS_CA_BUNDLE on this machine would replace the node CA below
        with pytest.raises(requests.exceptions.ConnectionError):
            s.get(f"http://{doc['address']}/v1/copies/x", timeout=10)
        admin = (str(dev_cluster.certs / "cert.pem"), str(dev_cluster.certs / "key.pem"))
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            s.get(f"{base}/v1/copies/x", cert=admin, verify=False, timeout=10)
        node1 = dev_cluster.node_dir("node1") / "agent"
        r = s.get(
            f"{base}/v1/copies/not-an-id",
            cert=(str(node1 / "cert.pem"), str(node1 / "key.pem")),
            verify=str(node1 / "ca.pem"),
            timeout=10,
        )
        assert r.status_code == 400, r.text
        assert "is not a dataset id" in r.json()["message"]


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_FIELDS = ("id", "name", "node", "profile", "kind", "parent", "size", "created", "epoch", "reason", "index")
_KEYS = ("dataset", "deletion", "new", "id", "name", "status", "index", "reason")
_records = st.dictionaries(st.sampled_from(_FIELDS), _junk, max_size=6)
_bodies = st.one_of(_junk, st.dictionaries(st.sampled_from(_KEYS), _junk | _records, max_size=4))


@settings(max_examples=int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(op=st.sampled_from([*NODE_RECORD_OPS, "nosuch", "..%2F..%2Fjoin"]), body=_bodies)
def test_a_nodes_malformed_record_writes_are_refused_in_form_and_change_nothing(dev_cluster, op, body):
    """node1's certificate sending the manager record writes of every wrong shape: each answer is a 4xx
    with Docker's {"message": ...}, and the dataset records, names and deletions are as they were."""
    c = dev_cluster.consul()
    before = [
        c.kv.get(p, keys=True)[1] for p in ("shoal/datasets/", "shoal/dataset-names/", "shoal/deletions/")
    ]
    r = _as_node(dev_cluster, "node1", op, body)
    assert 400 <= r.status_code < 500, (op, body, r.status_code, r.text)
    assert isinstance(r.json().get("message"), str) and r.json()["message"], r.text
    after = [
        c.kv.get(p, keys=True)[1] for p in ("shoal/datasets/", "shoal/dataset-names/", "shoal/deletions/")
    ]
    assert after == before
