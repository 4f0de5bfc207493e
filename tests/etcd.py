"""Real etcd for the tests: one member on loopback, or three in the project's own network namespaces."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.registry import etcd_server
from shoal.registry.etcd_server import EtcdMember


@contextmanager
def single_etcd() -> Iterator[str]:
    """A one-member etcd on 127.0.0.1; yields its endpoint."""
    d = Path(tempfile.mkdtemp(prefix="shoal-etcd-"))
    m = EtcdMember("e0", "127.0.0.1", etcd_server.free_port(), etcd_server.free_port(), d / "e0")
    proc = etcd_server.start(m, [m], token=uuid.uuid4().hex)
    try:
        etcd_server.wait_healthy(m, proc)
        yield m.endpoint
    finally:
        etcd_server.stop(proc)
        subprocess.run(["rm", "-rf", str(d)], check=False)
