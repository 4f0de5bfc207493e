"""What the benchmarks share: percentiles, and a dev cluster of their own that goes away afterwards.

A benchmark runs as a user of its cluster: `bench_cluster` puts the cluster's `dev env` into this process's
environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, CONSUL_HTTP_ADDR, CONSUL_CACERT...), so the
docker CLI it runs, docker-py and Consul's clients all speak mutual TLS to it as they would for a user.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.dev import cluster, tls
from shoal.dev.layout import ClusterLayout, ClusterSpec, plan_layout

ROOT = Path("/var/lib/shoal/bench")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _apply_env(lines: list[str]) -> dict[str, str | None]:
    """`export K=V` / `unset K...` lines applied to os.environ; returns what they replaced."""
    before: dict[str, str | None] = {}
    for line in lines:
        verb, *rest = shlex.split(line)
        if verb == "export":
            k, _, v = rest[0].partition("=")
            before.setdefault(k, os.environ.get(k))
            os.environ[k] = v
        elif verb == "unset":
            for k in rest:
                before.setdefault(k, os.environ.get(k))
                os.environ.pop(k, None)
    return before


@contextlib.contextmanager
def bench_cluster(spec: ClusterSpec) -> Iterator[ClusterLayout]:
    """`spec` brought up from nothing (a leftover of an earlier run is removed first), and down at the end;
    the cluster's environment is this process's while it is up."""
    cluster.down(spec.name, spec.root, out=lambda _: None)
    cluster.up(spec, out=lambda _: None)
    before: dict[str, str | None] = {}
    try:
        before = _apply_env(cluster.env_lines(spec.name, spec.root))
        yield plan_layout(spec)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cluster.down(spec.name, spec.root, out=lambda _: None)


def docker_py(url: str | None = None) -> Any:
    """docker-py as `docker.from_env()` builds it from the cluster's environment, at `url` if given (an
    engine: the admin certificate gets into engines too)."""
    import docker

    env = dict(os.environ)
    if url:
        env["DOCKER_HOST"] = url
    client = docker.from_env(environment=env, version="1.41")
    client.api.trust_env = False  # else REQUESTS_CA_BUNDLE replaces DOCKER_CERT_PATH's CA (requests #3829)
    return client


def consul_py() -> Any:
    """py-consul from CONSUL_HTTP_ADDR and CONSUL_CACERT, as a user's script builds it."""
    import consul

    addr = os.environ["CONSUL_HTTP_ADDR"]
    scheme, _, hostport = addr.rpartition("://")
    host, _, port = hostport.rpartition(":")
    verify: bool | str = os.environ.get("CONSUL_CACERT") or True
    return consul.Consul(host=host, port=int(port), scheme=scheme or "http", verify=verify)


def requests_session(layout: ClusterLayout) -> Any:
    """A requests session holding the admin certificate (the manager's and engines' HTTP API)."""
    import requests

    s = requests.Session()
    s.trust_env = False
    if layout.secure:
        admin = tls.admin(layout)
        s.cert = (str(admin.cert), str(admin.key))
        s.verify = str(admin.ca)
    return s


def join_token(ttl: float = 3600) -> str:
    """A fresh join token from the cluster's manager (`shoal token create -q`)."""
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "token", "create", "-q", "--ttl", f"{ttl:g}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()
