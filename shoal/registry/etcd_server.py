"""Starting real etcd members (Debian's etcd-server), for the dev cluster and the tests.

A member runs either on loopback or inside one of the project's own network namespaces; it is
plain data (`EtcdMember`) plus a process, and `stop` kills it and waits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import HostNotReady, ShoalError


@dataclass(frozen=True, slots=True)
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    netns: str = ""

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def argv(member: EtcdMember, cluster: list[EtcdMember], token: str, etcd: str = "etcd") -> list[str]:
    """The member's command line (without any namespace entry). The same one starts it again on its data:
    etcd ignores the `--initial-cluster*` flags once its data directory holds a member. Heartbeat 50 ms and
    election 500 ms so a dead leader member is replaced within about a second."""
    return [
        etcd, "--name", member.name, "--data-dir", str(member.data_dir),
        "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in cluster),
        "--initial-cluster-token", token, "--initial-cluster-state", "new",
        "--heartbeat-interval", "50", "--election-timeout", "500",
    ]  # fmt: skip


def start(member: EtcdMember, cluster: list[EtcdMember], token: str) -> subprocess.Popen[bytes]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise HostNotReady("etcd not found; install it with: apt-get install etcd-server")
    member.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = argv(member, cluster, token, etcd)
    if member.netns:
        cmd = ["nsenter", f"--net=/run/netns/{member.netns}", *cmd]
    log = open(member.data_dir.parent / f"{member.name}.log", "ab")  # noqa: SIM115 - the child keeps it
    env = {**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")}
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )


def wait_healthy(member: EtcdMember, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ShoalError(
                f"etcd {member.name} exited with {proc.returncode}; see {member.data_dir.parent}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{member.client_url}/health", timeout=1) as r,
        ):
            if b'"true"' in r.read():
                return
        time.sleep(0.05)
    raise ShoalError(f"etcd {member.name} not healthy within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
