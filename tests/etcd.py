"""Real etcd for the tests: one member on loopback, or three in the project's own network namespaces."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal.dev import host
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


@dataclass
class ThreeEtcd:
    """Three etcd members, each in its own network namespace on a bridge of ours, that a test can kill -9
    one by one and start again on their own data (as a manager host dies and comes back)."""

    members: list[EtcdMember]
    token: str
    procs: list[subprocess.Popen[bytes] | None]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def store_url(self) -> str:
        """What `shoal registry --store` takes for this cluster."""
        return "etcd://" + ",".join(self.endpoints)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            etcd_server.stop(p)  # SIGKILL to its process group, then wait
            self.procs[i] = None

    def start(self, i: int, *, wait: bool = True) -> None:
        """Member i again, on its data. `wait=False` when the others are down too: a member alone
        answers /health false until it has a quorum to elect with."""
        if self.procs[i] is None:
            self.procs[i] = etcd_server.start(self.members[i], self.members, self.token)
            if wait:
                etcd_server.wait_healthy(self.members[i], self.procs[i])


def _remove(ns: list[str], veths: list[str], bridge: str) -> None:
    """The members' namespaces, their veths and the bridge. Each veth is deleted by its host end, which
    takes its pair at once: a namespace deleted with its end inside is destroyed by the kernel later,
    and until then the host end lives on, so the next cluster's `ip link add` of that name failed
    (File exists)."""
    for name, veth in zip(ns, veths, strict=True):
        host.kill(host.netns_pids(name))
        host.delete_link(veth)
        host.delete_netns(name)
    host.delete_link(bridge)


@contextmanager
def three_etcd(subnet: str) -> Iterator[ThreeEtcd]:
    """A 3-member etcd on `subnet` (a /24 of the project's 10.99.x range, e.g. "10.99.20.0/24"): the
    bridge at .1, members at .11-.13, names taken from the third octet so clusters on different subnets
    can run side by side. Everything it made is removed afterwards, whatever happened."""
    octets = subnet.split("/")[0].split(".")
    net, tag = ".".join(octets[:3]), octets[2]
    bridge = f"shoale{tag}-br"
    ns = [f"shoale{tag}-m{i}" for i in range(3)]
    veths = [f"e{tag}m{i}v" for i in range(3)]
    d = Path(tempfile.mkdtemp(prefix=f"shoal-etcd3-{tag}-"))
    cluster = ThreeEtcd([], uuid.uuid4().hex, [None, None, None])
    try:
        _remove(ns, veths, bridge)  # a leftover of a run that was killed before it could clean up
        host.create_bridge(bridge, f"{net}.1", 24)
        for i, name in enumerate(ns):
            host.create_node_net(name, veths[i], bridge, f"{net}.{11 + i}", 24, f"{net}.1")
            address = f"{net}.{11 + i}"
            cluster.members.append(EtcdMember(f"m{i}", address, 2379, 2380, d / f"m{i}", netns=name))
        cluster.procs = [etcd_server.start(m, cluster.members, cluster.token) for m in cluster.members]
        for m, p in zip(cluster.members, cluster.procs, strict=True):
            assert p is not None
            etcd_server.wait_healthy(m, p)
        yield cluster
    finally:
        for i in range(len(cluster.procs)):
            cluster.kill(i)
        _remove(ns, veths, bridge)
        subprocess.run(["rm", "-rf", str(d)], check=False)
