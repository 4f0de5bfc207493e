"""Real etcd for the tests: one member on loopback, or three in the project's own network namespaces."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass
class LocalEtcd:
    """A one-member etcd on 127.0.0.1 that a test can kill -9 and start again on the same data."""

    member: EtcdMember
    token: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return self.member.endpoint

    def start(self) -> None:
        self.proc = etcd_server.start(self.member, [self.member], token=self.token)
        etcd_server.wait_healthy(self.member, self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            etcd_server.stop(self.proc)  # SIGKILL to its process group, then wait
            self.proc = None


@contextmanager
def local_etcd() -> Iterator[LocalEtcd]:
    d = Path(tempfile.mkdtemp(prefix="shoal-etcd-"))
    m = EtcdMember("e0", "127.0.0.1", etcd_server.free_port(), etcd_server.free_port(), d / "e0")
    etcd = LocalEtcd(m, uuid.uuid4().hex)
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.kill()
        subprocess.run(["rm", "-rf", str(d)], check=False)
