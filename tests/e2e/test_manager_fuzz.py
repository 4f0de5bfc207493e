"""Every bad input to the manager's Docker API gets a 4xx in Docker's error form and changes nothing.

hypothesis drives the real manager of the session cluster with malformed create bodies (every field the
manager reads given the wrong type, huge numbers, NaN/Infinity, deep nesting, unicode), malformed volume
and network bodies, query strings, and path parameters carrying `..%2F` and friends; each answer must be
< 500 and, when >= 400, a JSON object with a `message`; and the containers, volumes and networks on every
engine (asked directly, not through the manager) and the datasets in the registry are the same after as
before. `SHOAL_FUZZ_EXAMPLES` raises the count (benchmarks/safety.py does)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e
EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False
)
TRIED: dict[str, int] = {}  # endpoint group -> inputs sent (printed by benchmarks/safety.py)

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# what the manager reads from a create, each to be given a value of the wrong kind
CREATE_FIELDS = [
    ("Image",),
    ("Env",),
    ("Labels",),
    ("HostConfig",),
    ("HostConfig", "Binds"),
    ("HostConfig", "Links"),
    ("HostConfig", "VolumesFrom"),
    ("HostConfig", "NetworkMode"),
    ("HostConfig", "PidMode"),
    ("HostConfig", "VolumeDriver"),
    ("HostConfig", "Memory"),
    ("HostConfig", "NanoCpus"),
    ("HostConfig", "CpuShares"),
    ("HostConfig", "PortBindings"),
    ("HostConfig", "Mounts"),
    ("NetworkingConfig",),
]


def _dumps(body: Any) -> bytes:
    """JSON as a client could send it (NaN/Infinity included: Python's encoder writes them)."""
    return json.dumps(body, allow_nan=True).encode()


HTTP = requests.Session()  # the operator's client: the admin certificate on a secure cluster


def _snapshot(dev_cluster) -> dict[str, Any]:
    """What the engines hold (asked directly) and the dataset records: what a bad request must not touch."""
    out: dict[str, Any] = {}
    scheme = "https" if dev_cluster.secure else "http"
    for node, url in dev_cluster.nodes.items():
        base = url.replace("tcp://", f"{scheme}://")

        def get(path: str, base: str = base) -> Any:
            return HTTP.get(f"{base}{path}", timeout=10).json()

        out[node] = {
            "images": sorted(i["Id"] for i in get("/images/json")),
            "containers": sorted(c["Id"] for c in get("/containers/json?all=1")),
            "volumes": sorted(v["Name"] for v in get("/volumes")["Volumes"] or []),
            "networks": sorted(n["Id"] for n in get("/networks")),
        }
    _, keys = dev_cluster.consul().kv.get("shoal/datasets/", keys=True)
    out["datasets"] = keys or []
    return out


@pytest.fixture(scope="module")
def manager(dev_cluster):
    if dev_cluster.secure:
        HTTP.cert = (str(dev_cluster.certs / "cert.pem"), str(dev_cluster.certs / "key.pem"))
        HTTP.verify = str(dev_cluster.certs / "ca.pem")
        HTTP.trust_env = False  # else REQUESTS_CA_BUNDLE replaces the cluster CA (requests #3829)
    before = _snapshot(dev_cluster)
    yield dev_cluster.manager.replace("tcp://", "https://" if dev_cluster.secure else "http://")
    if report := os.environ.get("SHOAL_FUZZ_REPORT"):
        with open(report, "w") as f:
            json.dump(TRIED, f)
    after = _snapshot(dev_cluster)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"a malformed request changed the cluster: {changed}"


def _check(group: str, r: requests.Response, body: bool = True) -> None:
    TRIED[group] = TRIED.get(group, 0) + 1
    assert r.status_code < 500, f"{group}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400 and body:
        body = r.json()
        assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], r.text


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    d = out
    for k in path[:-1]:
        d = d.setdefault(k, {}) if isinstance(d.get(k), dict) or k not in d else d[k]
    d[path[-1]] = value
    return out


KINDS = {  # the kind of value each field must have; the fuzzer gives it anything else
    "Image": str, "Env": list, "Labels": dict, "HostConfig": dict, "Binds": list, "Links": list,
    "VolumesFrom": list, "NetworkMode": str, "PidMode": str, "VolumeDriver": str, "Memory": int,
    "NanoCpus": int, "CpuShares": int, "PortBindings": dict, "Mounts": list, "NetworkingConfig": dict,
}  # fmt: skip


def _wrong(kind: type) -> st.SearchStrategy[Any]:
    def is_wrong(v: Any) -> bool:
        if v is None:
            return False
        if kind is int:
            return isinstance(v, bool) or not isinstance(v, int) or v < 0
        return not isinstance(v, kind)

    return junk.filter(is_wrong)


BAD_PORTS = st.one_of(
    st.just({"80/tcp": [{"HostPort": "abc"}]}),
    st.builds(lambda p: {"80/tcp": [{"HostPort": str(p)}]}, st.integers(65536, 10**30)),
    st.builds(lambda v: {"80/tcp": v}, _wrong(list)),
    st.builds(lambda v: {"80/tcp": [{"HostPort": v}]}, _wrong(str)),
    st.builds(lambda v: {"80/tcp": [v]}, _wrong(dict)),
)


@st.composite
def bad_create(draw) -> dict[str, Any]:
    """A valid create with one field the manager reads made wrong: it must be refused, never made."""
    path = draw(st.sampled_from(CREATE_FIELDS))
    field = path[-1]
    value = draw(
        st.one_of(_wrong(KINDS[field]), BAD_PORTS) if field == "PortBindings" else _wrong(KINDS[field])
    )
    return _set({"Image": "busybox", "Cmd": ["true"], "HostConfig": {}}, path, value)


@SETTINGS
@given(body=bad_create())
def test_malformed_creates_are_refused_and_make_nothing(manager, body):
    r = HTTP.post(f"{manager}/v1.41/containers/create", data=_dumps(body), timeout=30)
    _check("containers/create", r)
    assert r.status_code >= 400, body


@SETTINGS
@given(body=junk, name=st.text(max_size=30))
def test_any_json_at_create_is_answered_without_a_server_error(manager, body, name):
    if isinstance(body, dict) and body.get("Image") in ("busybox", "redis", "todolist"):
        body["Image"] = 5  # never a valid create: this test is about bad ones
    r = HTTP.post(f"{manager}/v1.41/containers/create", params={"name": name}, data=_dumps(body), timeout=30)
    _check("containers/create", r)


def test_deep_nesting_and_huge_bodies_are_refused(manager):
    deep = b"[" * 200_000 + b"]" * 200_000
    _check("containers/create", r := HTTP.post(f"{manager}/containers/create", data=deep, timeout=30))
    assert r.status_code in (400, 413)
    huge = _dumps({"Image": "busybox", "Labels": {"x": "y" * (2 << 20)}})
    _check("containers/create", r := HTTP.post(f"{manager}/containers/create", data=huge, timeout=30))
    assert r.status_code == 413
    for literal in (b'{"Image": NaN}', b'{"Image": "busybox", "HostConfig": {"Memory": Infinity}}'):
        _check("containers/create", r := HTTP.post(f"{manager}/containers/create", data=literal, timeout=30))
        assert r.status_code == 400 and "not valid JSON" in r.json()["message"]


TRAVERSAL = st.sampled_from(
    ["..%2F..%2Fbuild", "..%2Fcontainers%2FX", "%2e%2e%2f", "..", ".", "%00", "a%2Fb", "%2F"]
)
# a segment that names no object: text with one traversal or control piece in it (plain text could be a
# valid id prefix, and DELETE /images/<prefix> is a real removal, as on one engine)
NAMES_NOTHING = st.builds(
    lambda head, bad, tail: requests.utils.quote(head, safe="") + bad + requests.utils.quote(tail, safe=""),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
    st.sampled_from(["..%2F", "%2F..", "%00", "%0A", "%2F%2E%2E%2F"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
SEGMENT = st.one_of(TRAVERSAL, NAMES_NOTHING)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).map(
    lambda s: requests.utils.quote(s, safe="")
)
PATHS = (
    "/containers/{seg}/{action}",
    "/containers/{seg}",
    "/volumes/{seg}",
    "/networks/{seg}",
    "/networks/{seg}/connect",
    "/images/{seg}/json",
    "/images/{seg}",
    "/exec/{seg}/start",
)


@SETTINGS
@given(seg=SEGMENT, action=st.one_of(SEGMENT, ANY_TEXT), method=st.sampled_from(["POST", "DELETE", "PUT"]))
def test_path_parameters_never_reach_another_endpoint(manager, seg, action, method):
    """Writes with path parameters that name nothing: refused, never relayed to another endpoint."""
    for path in PATHS:
        url = f"{manager}/v1.41{path.format(seg=seg, action=action)}"
        r = HTTP.request(method, url, data=b"{}", timeout=30, allow_redirects=False)
        _check("paths", r)
        assert 400 <= r.status_code < 500, (url, r.status_code)


@SETTINGS
@given(
    seg=st.one_of(SEGMENT, ANY_TEXT),
    action=st.one_of(SEGMENT, ANY_TEXT),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_reads_with_any_path_parameter(manager, seg, action, method):
    for path in PATHS:
        url = f"{manager}/v1.41{path.format(seg=seg, action=action)}"
        r = HTTP.request(method, url, timeout=30, allow_redirects=False)
        _check("paths", r, body=method != "HEAD")
        assert r.status_code != 301, url


@SETTINGS
@given(body=junk)
def test_malformed_volume_and_network_creates(manager, body):
    for what in ("volumes", "networks"):
        sent = body
        if isinstance(body, dict):
            # a create that happens to be valid would make an object (an unnamed volume is valid, and
            # makes one): keep every one malformed, a driver of the wrong type or one not served here
            sent = {**body, "Driver": 5 if what == "volumes" else "overlay"}
        r = HTTP.post(f"{manager}/v1.41/{what}/create", data=_dumps(sent), timeout=30)
        _check(f"{what}/create", r)


@SETTINGS
@given(
    params=st.dictionaries(
        st.sampled_from(["all", "limit", "filters", "size", "before", "since", "name", "force", "v"]),
        st.one_of(st.text(max_size=20), st.just("{bad json"), st.just('{"status":["nope"]}'), st.just("-1")),
        max_size=4,
    )
)
def test_malformed_query_strings(manager, params):
    _check("queries", HTTP.get(f"{manager}/v1.41/containers/json", params=params, timeout=30))
    _check("queries", HTTP.get(f"{manager}/v1.41/images/json", params=params, timeout=30))
    _check("queries", HTTP.get(f"{manager}/v1.41/volumes", params=params, timeout=30))
    _check("queries", HTTP.get(f"{manager}/v1.41/networks", params=params, timeout=30))


@SETTINGS
@given(
    params=st.dictionaries(
        st.sampled_from(["page", "per_page", "q"]),
        st.one_of(
            st.text(max_size=12),
            st.integers(-(2**70), 2**70).map(str),
            st.just("1e3"),
            st.just(" 2 "),
            st.text(min_size=257, max_size=300),
        ),
        max_size=3,
    )
)
def test_malformed_overview_pages(manager, params):
    """The dashboard's paging: a bad page, per_page or q is a 400 naming the parameter; any other answer
    is one page of at most per_page cards, the page number within the pages there are."""
    r = HTTP.get(f"{manager}/shoal/v1/overview", params=params, timeout=30)
    _check("overview", r)
    if r.status_code >= 400:
        assert r.status_code == 400, r.text
        assert any(f"invalid {k}" in r.json()["message"] for k in params), r.text
        return
    doc = r.json()
    assert 1 <= doc["page"] <= max(1, doc["pages"]) and len(doc["nodes"]) <= doc["per_page"] <= 200


def _not_string_map(v: Any) -> bool:
    return not isinstance(v, dict) or any(not isinstance(x, str | None) for x in v.values())


NOT_ARGS = st.one_of(  # never a JSON object of strings (nor "": no args), what `buildargs` must be
    st.text(min_size=1, max_size=20).filter(lambda s: not s.strip().startswith("{")),
    junk.filter(_not_string_map).map(lambda v: json.dumps(v, allow_nan=True)),
)
# prune filters that no engine takes (an unknown key, or not JSON at all): nothing may be pruned
NOT_FILTERS = st.one_of(
    st.just("{bad json"),
    st.builds(lambda k, v: json.dumps({f"x-{k}": [v]}), st.text(max_size=8), st.text(max_size=8)),
)
NOT_A_REFERENCE = st.text(max_size=12).map(lambda s: f"bad!{s}")  # `!` is no reference's: no registry asked


@SETTINGS
@given(
    args=NOT_ARGS,
    filters=NOT_FILTERS,
    seg=NAMES_NOTHING,
    image=NOT_A_REFERENCE,
    extra=st.dictionaries(
        st.sampled_from(["t", "repo", "tag", "memory", "cpushares", "q"]), ANY_TEXT, max_size=3
    ),
)
def test_the_image_and_prune_endpoints_refuse_malformed_input_and_change_nothing(
    manager, args, filters, seg, image, extra
):
    """build, commit, push, pull and the prunes (issue 14), given what no engine would take: a 4xx in
    Docker's form every time, and the module's before/after snapshot proves nothing was built, committed,
    pulled or pruned."""
    v = f"{manager}/v1.41"
    _check("build", HTTP.post(f"{v}/build", params={**extra, "buildargs": args}, data=b"", timeout=30))
    # well-formed args but no context at all: the manager's 400, not dockerd's 500
    r = HTTP.post(f"{v}/build", params={"t": "nothing:1"}, data=b"", timeout=30)
    _check("build", r)
    assert r.status_code == 400 and "needs a build context" in r.json()["message"], r.text[:200]
    _check("commit", HTTP.post(f"{v}/commit", params={**extra, "container": seg}, timeout=30))
    _check("push", HTTP.post(f"{v}/images/{seg}/push", params=extra, timeout=30))
    _check("pull", HTTP.post(f"{v}/images/create", params={**extra, "fromImage": image}, timeout=60))
    for what in ("containers", "images", "build"):
        r = HTTP.post(f"{v}/{what}/prune", params={"filters": filters}, timeout=60)
        _check("prune", r)
        assert 400 <= r.status_code < 500, (what, filters, r.status_code, r.text[:200])
