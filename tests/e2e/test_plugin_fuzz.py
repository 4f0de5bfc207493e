"""The volume plugin socket answers every malformed call in the protocol's own form and changes nothing.

hypothesis sends each /VolumeDriver.* endpoint of a node's real plugin socket (the unix socket dockerd
calls) malformed bodies: not JSON, JSON of every wrong shape, Names that try to leave the pool (`..`, `/`,
NUL, 4 KB), Opts of the wrong types, unknown profiles, mount IDs of every kind. Every answer must be HTTP
200 with a JSON object (the protocol's errors are `{"Err": "..."}` with 200), and the datasets in the
registry and on every node's pool are the same after as before."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e
EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
ENDPOINTS = ("Create", "Remove", "Mount", "Unmount", "Path", "Get", "List", "Capabilities")
TRIED: dict[str, int] = {}

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
BAD_NAMES = st.one_of(
    st.sampled_from(["../../etc", "/etc/passwd", "a/b", "..", ".", "a\0b", "x" * 4096, "", "@gold", "x@"]),
    st.builds(lambda a, b: f"{a}..{b}", st.text(max_size=5), st.text(max_size=5)),
    st.builds(lambda a: f"{a}@nosuchprofile", st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)),
    st.builds(lambda a: f"{a}@snapshot-zzzz", st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)),
)


def _call(sock: str, endpoint: str, body: bytes) -> tuple[int, bytes]:
    """One plugin call, as dockerd makes it (HTTP over the unix socket)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock)
    s.sendall(
        f"POST /VolumeDriver.{endpoint} HTTP/1.0\r\nHost: plugin\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def _state(dev_cluster) -> dict[str, Any]:
    c = dev_cluster.consul()
    pools = {n: sorted(os.listdir(dev_cluster.node_dir(n) / "pool" / "datasets")) for n in dev_cluster.nodes}
    return {
        "datasets": c.kv.get("shoal/datasets/", keys=True)[1] or [],
        "names": c.kv.get("shoal/dataset-names/", keys=True)[1] or [],
        "pools": pools,
    }


@pytest.fixture(scope="module")
def plugin(dev_cluster):
    before = _state(dev_cluster)
    yield str(dev_cluster.node_dir("node2") / "plugins" / "shoal.sock")
    if report := os.environ.get("SHOAL_FUZZ_REPORT_PLUGIN"):
        with open(report, "w") as f:
            json.dump(TRIED, f)
    assert _state(dev_cluster) == before, "a malformed plugin call changed the datasets"


def _check(endpoint: str, status: int, payload: bytes) -> None:
    TRIED[endpoint] = TRIED.get(endpoint, 0) + 1
    assert status == 200, (endpoint, status, payload[:200])
    reply = json.loads(payload)
    assert isinstance(reply, dict), payload[:200]
    if reply.get("Err"):
        assert isinstance(reply["Err"], str)


@SETTINGS
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    raw=st.binary(max_size=64) | junk.map(lambda v: json.dumps(v).encode()),
)
def test_any_body_is_answered_in_the_protocols_form(plugin, endpoint, raw):
    if endpoint == "Create":  # keep creates malformed: a valid one makes a dataset
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("Name"), str):
            raw = json.dumps({**body, "Name": body["Name"] + "/.."}).encode()
    _check(endpoint, *_call(plugin, endpoint, raw))


@SETTINGS
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    name=BAD_NAMES,
    opts=st.one_of(
        st.none(), junk, st.dictionaries(st.sampled_from(["size", "profile", "x"]), junk, max_size=2)
    ),
    mount_id=st.one_of(st.none(), junk, st.text(min_size=300, max_size=400)),
)
def test_names_that_leave_the_pool_and_wrong_types_are_refused(plugin, endpoint, name, opts, mount_id):
    body = json.dumps({"Name": name, "Opts": opts, "ID": mount_id}).encode()
    status, payload = _call(plugin, endpoint, body)
    _check(endpoint, status, payload)
    if endpoint in ("Create", "Remove", "Mount", "Unmount", "Path", "Get"):
        assert json.loads(payload).get("Err"), (endpoint, name, payload[:200])


def test_an_oversized_body_is_refused(plugin):
    status, payload = _call(plugin, "Create", b'{"Name": "' + b"x" * (2 << 20) + b'"}')
    assert status in (200, 413)
    if status == 200:
        assert json.loads(payload)["Err"]
