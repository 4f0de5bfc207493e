"""One contract, two engines: every assertion runs on a simulated engine (shoal.sim.engines, in-process on
loopback) and on a real dockerd (a 1-node shoal dev cluster of this module's own), so the simulation the
scale benchmark measures the manager against cannot drift from what it stands for.

The tests compare what a client reads for meaning -- keys, types, states, names, labels, messages word for
word, the order of events -- never what differs by nature (ids, times, pids, addresses). Waits go through
the engine's own `wait` endpoint or its event stream, never through sleeps (the one poll waits for a
real redis-server to come up).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shoal.sim.engines import serve
from tests.conftest import env_of

SHOAL = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "shoal")
CE = ["--name", "ce", "--root", "/var/lib/shoal/test-ce"]
CE_UP = ["--nodes", "1", "--subnet", "10.99.53.0/24"]
DOCKERD = "https://10.99.53.11:2376"  # TLS, as every engine of a dev cluster listens
CERTS: dict[str, str] = {}  # the admin certificate, from the cluster's `dev env`
V = "/v1.41"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
RECENT = r"(Less than a second|1 second|\d+ seconds)"
SLEEP = ["sleep", "600"]

# --- the shapes dockerd 20.10 answers (read off a real one) ----------------------------------------
# fmt: off
VERSION_KEYS = set(
    "Platform Components Version ApiVersion MinAPIVersion GitCommit GoVersion Os Arch KernelVersion "
    "BuildTime"
    .split()
)
INFO_KEYS = set(
    "ID Containers ContainersRunning ContainersPaused ContainersStopped Images Driver DriverStatus "
    "Plugins MemoryLimit SwapLimit KernelMemory KernelMemoryTCP CpuCfsPeriod CpuCfsQuota CPUShares CPUSet "
    "PidsLimit IPv4Forwarding BridgeNfIptables BridgeNfIp6tables Debug NFd OomKillDisable NGoroutines "
    "SystemTime LoggingDriver CgroupDriver CgroupVersion NEventsListener KernelVersion OperatingSystem "
    "OSVersion OSType Architecture IndexServerAddress RegistryConfig NCPU MemTotal GenericResources "
    "DockerRootDir HttpProxy HttpsProxy NoProxy Name Labels ExperimentalBuild ServerVersion Runtimes "
    "DefaultRuntime Swarm LiveRestoreEnabled Isolation InitBinary ContainerdCommit RuncCommit InitCommit "
    "SecurityOptions Warnings"
    .split()
)
SUMMARY_KEYS = set(
    "Id Names Image ImageID Command Created Ports Labels State Status HostConfig NetworkSettings Mounts"
    .split()
)
ENDPOINT_KEYS = set(
    "IPAMConfig Links Aliases NetworkID EndpointID Gateway IPAddress IPPrefixLen IPv6Gateway "
    "GlobalIPv6Address GlobalIPv6PrefixLen MacAddress DriverOpts"
    .split()
)
INSPECT_KEYS = set(
    "Id Created Path Args State Image ResolvConfPath HostnamePath HostsPath LogPath Name RestartCount "
    "Driver Platform MountLabel ProcessLabel AppArmorProfile ExecIDs HostConfig GraphDriver Mounts Config "
    "NetworkSettings"
    .split()
)
STATE_TYPES = {
    "Status": str, "Running": bool, "Paused": bool, "Restarting": bool, "OOMKilled": bool, "Dead": bool,
    "Pid": int, "ExitCode": int, "Error": str, "StartedAt": str, "FinishedAt": str
}
CONFIG_KEYS = set(
    "Hostname Domainname User AttachStdin AttachStdout AttachStderr Tty OpenStdin StdinOnce Env Cmd Image "
    "Volumes WorkingDir Entrypoint OnBuild Labels"
    .split()
)
HOST_CONFIG_KEYS = set(
    "Binds ContainerIDFile LogConfig NetworkMode PortBindings RestartPolicy AutoRemove VolumeDriver "
    "VolumesFrom CapAdd CapDrop CgroupnsMode Dns DnsOptions DnsSearch ExtraHosts GroupAdd IpcMode Cgroup "
    "Links OomScoreAdj PidMode Privileged PublishAllPorts ReadonlyRootfs SecurityOpt UTSMode UsernsMode "
    "ShmSize Runtime ConsoleSize Isolation CpuShares Memory NanoCpus CgroupParent BlkioWeight "
    "BlkioWeightDevice BlkioDeviceReadBps BlkioDeviceWriteBps BlkioDeviceReadIOps BlkioDeviceWriteIOps "
    "CpuPeriod CpuQuota CpuRealtimePeriod CpuRealtimeRuntime CpusetCpus CpusetMems Devices "
    "DeviceCgroupRules DeviceRequests KernelMemory KernelMemoryTCP MemoryReservation MemorySwap "
    "MemorySwappiness OomKillDisable PidsLimit Ulimits CpuCount CpuPercent IOMaximumIOps "
    "IOMaximumBandwidth MaskedPaths ReadonlyPaths"
    .split()
)
NETWORK_SETTINGS_KEYS = set(
    "Bridge SandboxID HairpinMode LinkLocalIPv6Address LinkLocalIPv6PrefixLen Ports SandboxKey "
    "SecondaryIPAddresses SecondaryIPv6Addresses EndpointID Gateway GlobalIPv6Address GlobalIPv6PrefixLen "
    "IPAddress IPPrefixLen IPv6Gateway MacAddress Networks"
    .split()
)
IMAGE_KEYS = set(
    "Containers Created Id Labels ParentId RepoDigests RepoTags SharedSize Size VirtualSize"
    .split()
)
VOLUME_KEYS = set("CreatedAt Driver Labels Mountpoint Name Options Scope".split())
NETWORK_KEYS = set(
    "Name Id Created Scope Driver EnableIPv6 IPAM Internal Attachable Ingress ConfigFrom ConfigOnly "
    "Containers Options Labels"
    .split()
)
CONTAINER_EVENT_KEYS = set("status id from Type Action Actor scope time timeNano".split())
OTHER_EVENT_KEYS = set("Type Action Actor scope time timeNano".split())
# fmt: on


# --- the two engines ---------------------------------------------------------------------------------


def _shoal(*args: str, check: bool = True) -> str:
    proc = subprocess.run([SHOAL, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode:
        raise AssertionError(
            f"shoal {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture(scope="session")
def dockerd_url() -> Iterator[str]:
    """A real dockerd: the one node of a dev cluster of this module's own, torn down even on failure."""
    _shoal("dev", "down", *CE, check=False)  # a killed earlier run may have left one behind
    try:
        _shoal("dev", "up", *CE_UP, *CE)
        certs = Path(env_of(_shoal("dev", "env", *CE))["DOCKER_CERT_PATH"])
        CERTS.update(cert=str(certs / "cert.pem"), key=str(certs / "key.pem"), ca=str(certs / "ca.pem"))
        yield DOCKERD
    finally:
        _shoal("dev", "down", *CE, check=False)


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """One simulated engine, served from a thread of this process on a loopback port the OS picks."""
    loop = asyncio.new_event_loop()
    ready: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            sim = loop.run_until_complete(serve(1, latency=0.001))
        except BaseException as e:
            ready.set_exception(e)
            return
        ready.set_result(sim)
        loop.run_forever()
        loop.run_until_complete(sim.close())
        loop.close()

    thread = threading.Thread(target=run, name="sim-engine", daemon=True)
    thread.start()
    sim = ready.result(timeout=30)
    yield next(iter(sim.nodes.values())).replace("tcp://", "http://")
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)


@pytest.fixture(scope="session", params=["sim", "dockerd"])
def engine_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


class Engine:
    """The Engine API as a client sees it: plain HTTP, the answer's status, headers and JSON."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.real = base == DOCKERD
        if self.real:  # the operator's admin certificate, as the docker CLI would present it
            self.http.trust_env = False  # this machine's REQUESTS_CA_BUNDLE would replace `verify`
            self.http.cert = (CERTS["cert"], CERTS["key"])
            self.http.verify = CERTS["ca"]

    def redis_ready(self, port: int) -> None:
        """Wait until a redis-server published on `port` answers PING. A simulated container is ready when
        it starts; a real one on the dev node needs its moment."""
        if not self.real:
            return
        host = DOCKERD.removeprefix("https://").rsplit(":", 1)[0]
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((host, port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"redis on {host}:{port} never answered"
            time.sleep(0.1)

    def call(self, method: str, path: str, *, prefix: str = V, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.http.request(method, f"{self.base}{prefix}{path}", **kw)

    def get(self, path: str, **params: Any) -> Any:
        r = self.call("GET", path, params=params)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def ps(self, **params: Any) -> list[dict[str, Any]]:
        if "filters" in params and not isinstance(params["filters"], str):
            params["filters"] = json.dumps(params["filters"])
        return self.get("/containers/json", **params)

    def names(self, **params: Any) -> list[str]:
        return [c["Names"][0] for c in self.ps(**params)]

    def create(
        self, name: str | None = None, image: str = "busybox", cmd: list[str] | None = SLEEP, **body: Any
    ) -> str:
        """A container; `cmd=None` runs the image's own command."""
        params = {"name": name} if name else {}
        r = self.call("POST", "/containers/create", params=params, json={"Image": image, "Cmd": cmd, **body})
        assert r.status_code == 201, r.text
        return r.json()["Id"]

    def run(self, name: str | None = None, **kw: Any) -> str:
        cid = self.create(name, **kw)
        self.act(cid, "start", 204)
        return cid

    def act(self, ref: str, action: str, status: int = 204, **params: Any) -> requests.Response:
        r = self.call("POST", f"/containers/{ref}/{action}", params=params)
        assert r.status_code == status, (action, r.status_code, r.text)
        return r

    def inspect(self, ref: str) -> dict[str, Any]:
        return self.get(f"/containers/{ref}/json")

    def wait(self, ref: str, **params: Any) -> dict[str, Any]:
        r = self.call("POST", f"/containers/{ref}/wait", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, since: float, **filters: list[str]) -> list[dict[str, Any]]:
        """Every event from `since` until a moment from now, as the stream gives them."""
        params = {"since": f"{since:.9f}", "until": f"{time.time() + 1:.9f}"}
        if filters:
            params["filters"] = json.dumps(filters)
        r = self.call("GET", "/events", params=params, timeout=30)
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def follow(self, since: float, until_action: str, **filters: list[str]) -> list[dict[str, Any]]:
        """The events from `since` on, as they come, up to the first `until_action`."""
        params = {"since": f"{since:.9f}", "filters": json.dumps(filters)}
        got: list[dict[str, Any]] = []
        with self.http.get(f"{self.base}{V}/events", params=params, stream=True, timeout=30) as r:
            for line in r.iter_lines():
                if line:
                    got.append(json.loads(line))
                    if got[-1]["Action"] == until_action:
                        return got
        raise AssertionError(f"the stream ended before {until_action}: {got}")

    def wipe(self) -> None:
        """Nothing of an earlier test left: containers, volumes, user networks."""
        for c in self.ps(all=1):
            self.call("DELETE", f"/containers/{c['Id']}", params={"force": "1", "v": "1"})
        for v in self.get("/volumes")["Volumes"] or []:
            if v["Driver"] == "local":
                self.call("DELETE", f"/volumes/{v['Name']}")
        for n in self.get("/networks"):
            if n["Name"] not in ("bridge", "host", "none"):
                self.call("DELETE", f"/networks/{n['Id']}")


@pytest.fixture
def api(engine_url: str) -> Iterator[Engine]:
    e = Engine(engine_url)
    e.wipe()
    yield e
    e.wipe()


def message(r: requests.Response) -> str:
    return r.json()["message"]


def typed(doc: dict[str, Any], types: dict[str, type | tuple[type, ...]]) -> None:
    for key, t in types.items():
        assert type(doc[key]) in (t if isinstance(t, tuple) else (t,)), (key, doc[key])


# --- system ------------------------------------------------------------------------------------------


def test_ping_answers_ok_with_the_api_headers(api: Engine) -> None:
    for prefix in ("", V, "/v1.24"):
        r = api.call("GET", "/_ping", prefix=prefix)
        assert (r.status_code, r.text) == (200, "OK")
        assert r.headers["Api-Version"] == "1.41"
        assert r.headers["Ostype"] == "linux"
        assert r.headers["Docker-Experimental"] == "false"
        assert r.headers["Server"].startswith("Docker/20.10.")
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    head = api.call("HEAD", "/_ping")
    assert (head.status_code, head.text, head.headers["Api-Version"]) == (200, "", "1.41")


def test_unknown_endpoints_and_versions_answer_as_dockerd(api: Engine) -> None:
    for method, path, prefix in (
        ("GET", "/nope", V),
        ("GET", "/nope", ""),
        ("DELETE", "/info", V),
        ("POST", "/containers/json", V),
        ("GET", "/info", "/vx"),
    ):
        r = api.call(method, path, prefix=prefix)
        assert (r.status_code, r.json()) == (404, {"message": "page not found"}), (method, prefix, path)
    r = api.call("GET", "/info", prefix="/v1.99")
    assert r.status_code == 400
    assert message(r) == "client version 1.99 is too new. Maximum supported API version is 1.41"
    assert api.call("GET", "/info", prefix="").status_code == 200


def test_version_names_engine_20_10_and_api_1_41(api: Engine) -> None:
    v = api.get("/version")
    assert v.keys() == VERSION_KEYS
    assert (v["ApiVersion"], v["MinAPIVersion"], v["Os"], v["Arch"]) == ("1.41", "1.12", "linux", "amd64")
    assert v["Version"].startswith("20.10.")
    assert [c["Name"] for c in v["Components"]] == ["Engine", "containerd", "runc", "docker-init"]
    assert v["Components"][0]["Version"] == v["Version"]
    assert v["Components"][0]["Details"]["ApiVersion"] == "1.41"


def test_info_has_dockerds_keys_and_counts_what_the_list_shows(api: Engine) -> None:
    running, paused = api.run("i-run"), api.run("i-paused")
    api.act(paused, "pause")
    api.create("i-created")
    done = api.run("i-done", cmd=["true"])
    assert api.wait(done)["StatusCode"] == 0
    info = api.get("/info")
    assert info.keys() == INFO_KEYS
    typed(
        info,
        {
            "Name": str,
            "NCPU": int,
            "MemTotal": int,
            "Containers": int,
            "ContainersRunning": int,
            "ContainersPaused": int,
            "ContainersStopped": int,
            "Images": int,
            "Labels": list,
            "Driver": str,
            "KernelVersion": str,
            "OperatingSystem": str,
            "ServerVersion": str,
            "ID": str,
            "Plugins": dict,
            "Swarm": dict,
            "Warnings": (list, type(None)),  # dockerd: null when it has none (TLS on), else a list
        },
    )
    assert info["Name"] and info["NCPU"] > 0 and info["MemTotal"] > 0
    assert (info["OSType"], info["Architecture"], info["Driver"]) == ("linux", "x86_64", "overlay2")
    assert info["ServerVersion"].startswith("20.10.")
    assert "local" in info["Plugins"]["Volume"] and "bridge" in info["Plugins"]["Network"]
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    listed = api.ps(all=1)
    assert info["Containers"] == len(listed) == 4
    assert (info["ContainersRunning"], info["ContainersPaused"], info["ContainersStopped"]) == (1, 1, 2)
    assert info["Images"] == len(api.get("/images/json"))
    assert running in {c["Id"] for c in listed}


# --- create ------------------------------------------------------------------------------------------


def test_create_answers_201_with_a_64_hex_id_and_no_warnings(api: Engine) -> None:
    r = api.call("POST", "/containers/create", params={"name": "c-new"}, json={"Image": "busybox"})
    assert r.status_code == 201
    assert r.json().keys() == {"Id", "Warnings"} and r.json()["Warnings"] == []
    assert HEX64.match(r.json()["Id"])
    assert api.inspect("c-new")["Id"] == r.json()["Id"]


def test_create_refuses_a_name_in_use_with_dockerds_message(api: Engine) -> None:
    first = api.create("dup")
    r = api.call("POST", "/containers/create", params={"name": "dup"}, json={"Image": "busybox"})
    assert r.status_code == 409
    assert message(r) == (
        f'Conflict. The container name "/dup" is already in use by container "{first}". You have to remove '
        "(or rename) that container to be able to reuse that name."
    )
    assert api.names(all=1) == ["/dup"]


def test_create_refuses_an_unknown_image_naming_it_with_its_tag(api: Engine) -> None:
    for image, named in (
        ("nosuch", "nosuch:latest"),
        ("nosuch:v2", "nosuch:v2"),
        ("busybox:v9", "busybox:v9"),
    ):
        r = api.call("POST", "/containers/create", params={"name": "x1"}, json={"Image": image})
        assert (r.status_code, message(r)) == (404, f"No such image: {named}")
    assert api.ps(all=1) == []


def test_create_refuses_bad_names_and_bodies(api: Engine) -> None:
    for bad in ("bad/name", "x", "-x"):
        r = api.call("POST", "/containers/create", params={"name": bad}, json={"Image": "busybox"})
        assert r.status_code == 400
        assert message(r) == f"Invalid container name ({bad}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    r = api.call(
        "POST", "/containers/create", data=b'{"Image": "busybox"}', headers={"Content-Type": "text/plain"}
    )
    assert (r.status_code, message(r)) == (
        400,
        "Content-Type specified (text/plain) must be 'application/json'",
    )
    r = api.call("POST", "/containers/create", json={})
    assert (r.status_code, message(r)) == (400, "Config cannot be empty in order to create a container")
    assert api.ps(all=1) == []


def test_a_body_field_of_the_wrong_type_is_refused_and_nothing_is_made(api: Engine) -> None:
    for body, field in (
        ({"Image": "busybox", "Labels": [1]}, "Labels"),
        ({"Image": "busybox", "HostConfig": {"Memory": "1g"}}, "Memory"),
        ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [1]}}}, "PortBindings"),
    ):
        r = api.call("POST", "/containers/create", params={"name": "typed"}, json=body)
        assert r.status_code == 500 and field in message(r), (body, r.text)  # dockerd 20.10's status for it
    assert api.ps(all=1) == []
    r = api.call("POST", "/volumes/create", json={"Name": ["x"]})
    assert r.status_code == 400 and "Name" in message(r)
    r = api.call("POST", "/networks/create", json={"Name": "typed", "Labels": []})
    assert r.status_code == 400 and "Labels" in message(r)
    assert api.get("/volumes")["Volumes"] == [] and "typed" not in {n["Name"] for n in api.get("/networks")}
    cid = api.create("one-string", cmd="top")  # type: ignore[arg-type]  # a lone string is one item
    assert api.inspect(cid)["Config"]["Cmd"] == ["top"]


def test_create_finds_images_by_tag_name_and_id_prefix(api: Engine) -> None:
    busybox = api.get("/images/busybox/json")["Id"]
    for i, ref in enumerate(("busybox", "busybox:latest", busybox, busybox[:19], busybox[7:19])):
        cid = api.create(f"by-ref{i}", image=ref)
        doc = api.inspect(cid)
        assert (doc["Image"], doc["Config"]["Image"]) == (busybox, ref)
        assert api.ps(all=1, filters={"id": [cid]})[0]["Image"] == ref


def test_a_container_without_a_name_gets_a_docker_style_one(api: Engine) -> None:
    cid = api.create()
    [name] = api.inspect(cid)["Name"].split("/")[1:]
    assert re.fullmatch(r"[a-z]+_[a-z]+\d*", name), name
    assert api.names(all=1) == [f"/{name}"]


# --- lifecycle ---------------------------------------------------------------------------------------


def test_start_and_stop_move_the_state_and_answer_304_when_nothing_changes(api: Engine) -> None:
    cid = api.create("life")
    s = api.inspect(cid)["State"]
    typed(s, STATE_TYPES)
    assert (s["Status"], s["Running"], s["Pid"], s["ExitCode"]) == ("created", False, 0, 0)
    assert s["StartedAt"] == s["FinishedAt"] == "0001-01-01T00:00:00Z"
    api.act(cid, "start", 204)
    api.act(cid, "start", 304)
    s = api.inspect(cid)["State"]
    assert (s["Status"], s["Running"], s["Paused"], s["Restarting"]) == ("running", True, False, False)
    assert s["Pid"] > 0 and s["StartedAt"].startswith(time.strftime("%Y-", time.gmtime()))
    assert s["FinishedAt"] == "0001-01-01T00:00:00Z"
    api.act(cid, "stop", 204, t=0)  # busybox sleep is PID 1 and ignores SIGTERM: SIGKILL ends it
    api.act(cid, "stop", 304, t=0)
    s = api.inspect(cid)["State"]
    assert (s["Status"], s["Running"], s["Pid"], s["ExitCode"]) == ("exited", False, 0, 137)
    assert s["FinishedAt"] >= s["StartedAt"] > "0001"


def test_a_process_that_handles_sigterm_stops_with_exit_code_0(api: Engine) -> None:
    ports = {"PortBindings": {"6379/tcp": [{"HostPort": "16379"}]}}
    cid = api.run("r-stop", image="redis", cmd=None, HostConfig=ports)
    api.redis_ready(16379)  # a real redis-server handles SIGTERM only once it is up
    t0 = time.time()
    api.act(cid, "stop", 204, t=5)
    assert api.inspect(cid)["State"]["ExitCode"] == 0
    seen = [(e["Action"], e["Actor"]["Attributes"].get("exitCode")) for e in api.events(t0, container=[cid])]
    assert seen == [("kill", None), ("die", "0"), ("stop", None)]


def test_kill_ends_a_running_container_and_refuses_one_that_is_not(api: Engine) -> None:
    cid = api.run("victim")
    api.act(cid, "kill", 204)
    assert api.wait(cid) == {"Error": None, "StatusCode": 137}
    assert api.inspect(cid)["State"]["Status"] == "exited"
    r = api.act("victim", "kill", 409)
    assert message(r) == f"Cannot kill container: victim: Container {cid} is not running"
    r = api.act("zzz-none", "kill", 404)
    assert message(r) == "Cannot kill container: zzz-none: No such container: zzz-none"
    r = api.act(api.run("victim2"), "kill", 400, signal="BOGUS")
    assert message(r) == "Invalid signal: BOGUS"


def test_pause_and_unpause(api: Engine) -> None:
    cid = api.run("pz")
    api.act(cid, "pause")
    s = api.inspect(cid)["State"]
    assert (s["Status"], s["Running"], s["Paused"]) == ("paused", True, True)
    [entry] = api.ps()
    assert entry["State"] == "paused" and re.fullmatch(rf"Up {RECENT} \(Paused\)", entry["Status"])
    assert message(api.act(cid, "pause", 409)) == f"Container {cid} is already paused"
    assert message(api.act(cid, "start", 409)) == "cannot start a paused container, try unpause instead"
    api.act(cid, "unpause")
    assert api.inspect(cid)["State"]["Status"] == "running"
    assert message(api.act(cid, "unpause", 500)) == f"Container {cid} is not paused"
    other = api.create("pz-created")
    assert message(api.act(other, "pause", 409)) == f"Container {other} is not running"


def test_restart_starts_again_whether_running_or_not(api: Engine) -> None:
    cid = api.run("rs")
    before = api.inspect(cid)["State"]
    api.act(cid, "restart", t=0)
    after = api.inspect(cid)["State"]
    assert after["Status"] == "running" and after["StartedAt"] > before["StartedAt"]
    assert after["FinishedAt"] > "0001"  # the run it ended
    api.act(cid, "kill")
    api.wait(cid)
    api.act(cid, "restart", t=0)
    assert api.inspect(cid)["State"]["Running"] is True
    assert api.inspect(cid)["RestartCount"] == 0  # only a restart policy counts


def test_wait_returns_the_exit_code_of_how_the_process_ended(api: Engine) -> None:
    created = api.create("w-created")
    assert api.wait(created) == {"Error": None, "StatusCode": 0}  # not running: at once
    for name, cmd, code in (
        ("w-true", ["true"], 0),
        ("w-false", ["false"], 1),
        ("w-exit", ["sh", "-c", "exit 3"], 3),
        ("w-sh", None, 0),
    ):
        cid = api.run(name, cmd=cmd)
        assert api.wait(cid) == {"Error": None, "StatusCode": code}, name
        s = api.inspect(cid)["State"]
        assert (s["Status"], s["ExitCode"], s["Running"]) == ("exited", code, False), name
    short = api.run("w-sleep", cmd=["sleep", "1"])
    assert api.wait(short)["StatusCode"] == 0


def test_wait_answers_its_headers_at_once_and_the_exit_code_when_it_comes(api: Engine) -> None:
    cid = api.run("w-block")
    with api.http.post(f"{api.base}{V}/containers/{cid}/wait", stream=True, timeout=30) as waiting:
        assert (waiting.status_code, waiting.headers["Content-Type"]) == (200, "application/json")
        assert api.inspect(cid)["State"]["Running"]  # the wait is registered and the container still runs
        api.act(cid, "kill")
        assert waiting.json() == {"Error": None, "StatusCode": 137}
    gone = api.create("w-removed")
    params = {"condition": "removed"}
    with api.http.post(f"{api.base}{V}/containers/{gone}/wait", params=params, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert api.call("DELETE", f"/containers/{gone}").status_code == 204
        assert r.json() == {"Error": None, "StatusCode": 0}


def test_remove_refuses_a_running_or_paused_container_without_force(api: Engine) -> None:
    cid = api.run("rm-me")
    r = api.call("DELETE", f"/containers/{cid}")
    assert r.status_code == 409
    assert message(r) == (
        f"You cannot remove a running container {cid}. Stop the container before attempting removal or "
        "force remove"
    )
    api.act(cid, "pause")
    r = api.call("DELETE", f"/containers/{cid}")
    assert r.status_code == 409
    assert message(r) == (
        f"You cannot remove a paused container {cid}. Unpause and then stop the container before attempting "
        "removal or force remove"
    )
    assert api.call("DELETE", f"/containers/{cid}", params={"force": "1"}).status_code == 204
    r = api.call("GET", f"/containers/{cid}/json")
    assert (r.status_code, message(r)) == (404, f"No such container: {cid}")
    r = api.call("DELETE", "/containers/rm-me")
    assert (r.status_code, message(r)) == (404, "No such container: rm-me")
    stopped = api.create("rm-stopped")
    assert api.call("DELETE", "/containers/rm-stopped").status_code == 204
    assert stopped not in {c["Id"] for c in api.ps(all=1)}


def test_remove_with_v_takes_anonymous_volumes_and_keeps_named_ones(api: Engine) -> None:
    cid = api.create("vols", image="redis", cmd=None, HostConfig={"Binds": ["keepme:/keep"]})
    mounts = {m["Destination"]: m for m in api.inspect(cid)["Mounts"]}
    assert mounts.keys() == {"/data", "/keep"}
    anon = mounts["/data"]["Name"]
    assert HEX64.match(anon) and mounts["/keep"]["Name"] == "keepme"
    assert {anon, "keepme"} <= {v["Name"] for v in api.get("/volumes")["Volumes"]}
    assert api.call("DELETE", f"/containers/{cid}", params={"v": "1"}).status_code == 204
    names = {v["Name"] for v in api.get("/volumes")["Volumes"]}
    assert "keepme" in names and anon not in names


def test_starting_on_a_taken_host_port_fails_and_leaves_it_created(api: Engine) -> None:
    ports = {"PortBindings": {"80/tcp": [{"HostPort": "18080"}]}}
    api.run("port-a", HostConfig=ports, ExposedPorts={"80/tcp": {}})
    b = api.create("port-b", HostConfig=ports, ExposedPorts={"80/tcp": {}})
    r = api.act(b, "start", 500)
    assert re.fullmatch(
        r"driver failed programming external connectivity on endpoint port-b \([0-9a-f]{64}\): "
        r"Bind for 0\.0\.0\.0:18080 failed: port is already allocated",
        message(r),
    ), message(r)
    s = api.inspect(b)["State"]
    assert (s["Status"], s["ExitCode"], s["Error"]) == ("created", 128, message(r))


# --- lookups -----------------------------------------------------------------------------------------


def test_lookups_by_id_name_and_unique_prefix_and_an_ambiguous_prefix_refused(api: Engine) -> None:
    ids: dict[str, str] = {}
    twice = None
    for i in range(17):  # 17 ids share a first hex digit somewhere, by pigeonhole
        cid = api.create(f"lk{i}")
        if cid[0] in ids:
            twice = cid[0]
            break
        ids[cid[0]] = cid
    assert twice is not None
    r = api.call("GET", f"/containers/{twice}/json")
    assert (r.status_code, message(r)) == (500, f"Multiple IDs found with provided prefix: {twice}")
    r = api.act(twice, "start", 500)
    assert message(r) == f"Multiple IDs found with provided prefix: {twice}"
    cid = api.create("lookup-me")
    for ref in (cid, cid[:12], "lookup-me"):
        assert api.inspect(ref)["Id"] == cid, ref
    r = api.call("GET", "/containers/zzz-none/json")
    assert (r.status_code, message(r)) == (404, "No such container: zzz-none")
    named = api.create(cid[:12])  # a name wins over an id prefix
    assert api.inspect(cid[:12])["Id"] == named


# --- inspect -----------------------------------------------------------------------------------------


def test_inspect_has_dockerds_fields_and_the_containers_own_values(api: Engine) -> None:
    cid = api.create(
        "insp",
        cmd=["sleep", "600"],
        Env=["X=1"],
        Labels={"tier": "web", "a": "b"},
        ExposedPorts={"80/tcp": {}},
        HostConfig={
            "Memory": 64 << 20,
            "NanoCpus": 500_000_000,
            "CpuShares": 512,
            "Binds": ["/tmp:/h:ro"],
            "PortBindings": {"80/tcp": [{"HostPort": "18081"}]},
        },
    )
    doc = api.inspect(cid)
    assert doc.keys() == INSPECT_KEYS
    assert doc["State"].keys() == STATE_TYPES.keys()
    assert doc["Config"].keys() == CONFIG_KEYS | {"ExposedPorts"}
    assert doc["HostConfig"].keys() == HOST_CONFIG_KEYS
    assert doc["NetworkSettings"].keys() == NETWORK_SETTINGS_KEYS
    assert (doc["Id"], doc["Name"], doc["Path"], doc["Args"]) == (cid, "/insp", "sleep", ["600"])
    assert doc["Image"] == api.get("/images/busybox/json")["Id"]
    assert (doc["Driver"], doc["Platform"], doc["RestartCount"], doc["ExecIDs"]) == (
        "overlay2",
        "linux",
        0,
        None,
    )
    assert doc["Created"].endswith("Z") and doc["Created"].startswith(time.strftime("%Y-", time.gmtime()))
    cfg = doc["Config"]
    assert (cfg["Image"], cfg["Cmd"], cfg["Labels"], cfg["Hostname"]) == (
        "busybox",
        ["sleep", "600"],
        {"tier": "web", "a": "b"},
        cid[:12],
    )
    assert cfg["Env"][0] == "X=1" and any(e.startswith("PATH=") for e in cfg["Env"])
    assert (cfg["ExposedPorts"], cfg["Entrypoint"], cfg["Tty"], cfg["Volumes"]) == (
        {"80/tcp": {}},
        None,
        False,
        None,
    )
    host = doc["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["CpuShares"]) == (64 << 20, 500_000_000, 512)
    assert host["MemorySwap"] == 2 * (64 << 20)  # dockerd's default: twice the memory
    assert host["Binds"] == ["/tmp:/h:ro"]
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "18081"}]}
    assert (host["NetworkMode"], host["LogConfig"], host["RestartPolicy"]) == (
        "default",
        {"Type": "json-file", "Config": {}},
        {"Name": "", "MaximumRetryCount": 0},
    )
    assert (host["ShmSize"], host["IpcMode"], host["Runtime"], host["Privileged"]) == (
        64 << 20,
        "private",
        "runc",
        False,
    )
    assert doc["Mounts"] == [
        {
            "Type": "bind",
            "Source": "/tmp",
            "Destination": "/h",
            "Mode": "ro",
            "RW": False,
            "Propagation": "rprivate",
        }
    ]
    net = doc["NetworkSettings"]
    assert (net["Ports"], net["IPAddress"], list(net["Networks"])) == ({}, "", ["bridge"])
    assert net["Networks"]["bridge"].keys() == ENDPOINT_KEYS
    assert net["Networks"]["bridge"]["NetworkID"] == ""  # not yet started
    api.act(cid, "start")
    net = api.inspect(cid)["NetworkSettings"]
    assert net["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18081"}, {"HostIp": "::", "HostPort": "18081"}]
    }
    bridge = net["Networks"]["bridge"]
    assert net["IPAddress"] == bridge["IPAddress"] and re.fullmatch(r"172\.17\.\d+\.\d+", bridge["IPAddress"])
    assert (bridge["Gateway"], bridge["IPPrefixLen"]) == ("172.17.0.1", 16)
    bridge_id = next(n["Id"] for n in api.get("/networks") if n["Name"] == "bridge")
    assert bridge["NetworkID"] == bridge_id and HEX64.match(bridge["EndpointID"])
    api.act(cid, "kill")
    api.wait(cid)
    net = api.inspect(cid)["NetworkSettings"]
    assert (net["Ports"], net["IPAddress"], net["Networks"]["bridge"]["NetworkID"]) == ({}, "", bridge_id)


def test_inspect_merges_the_images_config(api: Engine) -> None:
    cid = api.create("img-cfg", image="redis", cmd=None, Env=["DATABASE=x"])
    doc = api.inspect(cid)
    cfg = doc["Config"]
    assert cfg["Cmd"] == ["redis-server", "--protected-mode", "no"]
    assert (doc["Path"], doc["Args"]) == ("redis-server", ["--protected-mode", "no"])
    assert (cfg["ExposedPorts"], cfg["Volumes"], cfg["WorkingDir"]) == (
        {"6379/tcp": {}},
        {"/data": {}},
        "/data",
    )
    assert cfg["Labels"] == {} and cfg["Env"][0] == "DATABASE=x"
    [mount] = doc["Mounts"]
    assert (mount["Type"], mount["Destination"], mount["Driver"], mount["RW"]) == (
        "volume",
        "/data",
        "local",
        True,
    )
    api.act(cid, "start")
    assert api.inspect(cid)["NetworkSettings"]["Ports"] == {"6379/tcp": None}


# --- list --------------------------------------------------------------------------------------------


def test_list_shows_running_ones_newest_first_and_all_or_the_last_n_on_request(api: Engine) -> None:
    api.run("l1")
    api.create("l2")
    api.run("l3")
    api.create("l4")
    assert api.names() == ["/l3", "/l1"]
    assert api.names(all=1) == ["/l4", "/l3", "/l2", "/l1"]
    assert api.names(all="true") == api.names(all=1)
    assert api.names(all=0) == api.names()
    assert api.names(limit=2) == ["/l4", "/l3"]  # limit lists stopped ones too
    assert api.names(limit=1, filters={"status": ["running"]}) == ["/l3"]
    r = api.call("GET", "/containers/json", params={"limit": "x"})
    assert (r.status_code, message(r)) == (500, 'strconv.Atoi: parsing "x": invalid syntax')


def test_list_entries_have_dockerds_shape(api: Engine) -> None:
    cid = api.run(
        "shape",
        Labels={"k": "v"},
        ExposedPorts={"80/tcp": {}},
        HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "18082"}]}, "Binds": ["/tmp:/h"]},
    )
    r = api.run("shape-r", image="redis", cmd=None)
    entries = {c["Names"][0]: c for c in api.ps()}
    c = entries["/shape"]
    assert c.keys() == SUMMARY_KEYS
    assert (c["Id"], c["Image"], c["Command"], c["State"], c["Labels"]) == (
        cid,
        "busybox",
        "sleep 600",
        "running",
        {"k": "v"},
    )
    assert c["ImageID"] == api.get("/images/busybox/json")["Id"]
    assert type(c["Created"]) is int and abs(c["Created"] - time.time()) < 600
    assert c["HostConfig"] == {"NetworkMode": "default"}
    assert list(c["NetworkSettings"]["Networks"]) == ["bridge"]
    assert c["NetworkSettings"]["Networks"]["bridge"].keys() == ENDPOINT_KEYS
    assert sorted(c["Ports"], key=lambda p: p["IP"]) == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 18082, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 18082, "Type": "tcp"},
    ]
    assert c["Mounts"] == [
        {
            "Type": "bind",
            "Source": "/tmp",
            "Destination": "/h",
            "Mode": "",
            "RW": True,
            "Propagation": "rprivate",
        }
    ]
    red = entries["/shape-r"]
    assert (red["Id"], red["Command"], red["Ports"]) == (
        r,
        "redis-server --protected-mode no",
        [{"PrivatePort": 6379, "Type": "tcp"}],
    )
    [m] = red["Mounts"]
    assert (m["Type"], m["Destination"], m["Source"], m["Driver"]) == ("volume", "/data", "", "local")


def test_list_status_text_reads_as_dockerds(api: Engine) -> None:
    api.create("st-created")
    api.run("st-running")
    done = api.run("st-exited")
    api.act(done, "kill")
    api.wait(done)
    ok = api.run("st-ok", cmd=["true"])
    api.wait(ok)
    status = {c["Names"][0]: (c["State"], c["Status"]) for c in api.ps(all=1)}
    assert status["/st-created"] == ("created", "Created")
    assert status["/st-running"][0] == "running" and re.fullmatch(rf"Up {RECENT}", status["/st-running"][1])
    assert status["/st-exited"][0] == "exited"
    assert re.fullmatch(rf"Exited \(137\) {RECENT} ago", status["/st-exited"][1]), status["/st-exited"]
    assert re.fullmatch(rf"Exited \(0\) {RECENT} ago", status["/st-ok"][1]), status["/st-ok"]


def test_list_filters_by_id_name_label_status_and_exit_code(api: Engine) -> None:
    web = api.run("f-web", Labels={"tier": "web", "env": "prod"})
    db = api.create("f-db", Labels={"tier": "db", "env": "prod"})
    job = api.run("f-job", cmd=["false"])
    api.wait(job)
    assert api.names(all=1, filters={"id": [web[:10]]}) == ["/f-web"]
    assert api.names(all=1, filters={"id": [web[3:15]]}) == []  # a prefix, not a substring
    assert api.names(all=1, filters={"name": ["f-"]}) == ["/f-job", "/f-db", "/f-web"]  # unanchored
    assert api.names(all=1, filters={"name": ["^f-db$"]}) == ["/f-db"]  # read without the slash too
    assert api.names(all=1, filters={"name": ["^/f-db$"]}) == ["/f-db"]
    assert api.names(all=1, filters={"name": ["web", "job"]}) == ["/f-job", "/f-web"]  # any of them
    assert api.names(all=1, filters={"name": ["["]}) == []  # a bad pattern matches nothing
    assert api.names(all=1, filters={"label": ["tier"]}) == ["/f-db", "/f-web"]
    assert api.names(all=1, filters={"label": ["tier=db"]}) == ["/f-db"]
    assert api.names(all=1, filters={"label": ["tier=web", "env=prod"]}) == ["/f-web"]  # all of them
    assert api.names(all=1, filters={"label": ["tier=web", "env=dev"]}) == []
    assert api.names(filters={"status": ["created"]}) == ["/f-db"]  # a status filter lists stopped ones
    assert api.names(filters={"status": ["exited", "running"]}) == ["/f-job", "/f-web"]
    assert api.names(all=1, filters={"exited": ["1"]}) == ["/f-job"]
    assert api.names(all=1, filters={"exited": ["0"]}) == []
    assert api.names(all=1, filters={"name": {"f-db": True}}) == ["/f-db"]  # the old map form
    assert api.names(all=1, filters={"id": [db], "status": ["running"]}) == []
    r = api.call("GET", "/containers/json", params={"filters": json.dumps({"status": ["bogus"]})})
    assert (r.status_code, message(r)) == (400, "Invalid filter 'status=bogus'")
    r = api.call("GET", "/containers/json", params={"filters": json.dumps({"bogus": ["x"]})})
    assert (r.status_code, message(r)) == (400, "Invalid filter 'bogus'")


def test_list_filters_by_image_network_and_volume(api: Engine) -> None:
    api.create("a-red", image="redis", cmd=None)
    api.create("a-box", HostConfig={"Binds": ["shared:/s"]})
    assert api.names(all=1, filters={"ancestor": ["redis"]}) == ["/a-red"]
    assert api.names(all=1, filters={"ancestor": ["busybox:latest"]}) == ["/a-box"]
    assert api.names(all=1, filters={"ancestor": ["nosuch"]}) == []
    assert api.names(all=1, filters={"volume": ["shared"]}) == ["/a-box"]
    assert api.names(all=1, filters={"network": ["bridge"]}) == ["/a-box", "/a-red"]


# --- events ------------------------------------------------------------------------------------------


def _actions(events: list[dict[str, Any]]) -> list[str]:
    return [e["Action"] for e in events]


def test_events_tell_a_containers_life_in_dockerds_order_and_shape(api: Engine) -> None:
    t0 = time.time()
    cid = api.create("ev", Labels={"team": "a"})
    api.act(cid, "start")
    api.act(cid, "kill")
    api.wait(cid)
    api.call("DELETE", f"/containers/{cid}")
    mine = api.events(t0, container=[cid])
    container = [e for e in mine if e["Type"] == "container"]
    assert _actions(container) == ["create", "start", "kill", "die", "destroy"]
    for e in container:
        assert e.keys() == CONTAINER_EVENT_KEYS
        assert (e["status"], e["id"], e["from"], e["scope"]) == (e["Action"], cid, "busybox", "local")
        assert e["Actor"]["ID"] == cid
        assert {"name": "ev", "image": "busybox", "team": "a"}.items() <= e["Actor"]["Attributes"].items()
        assert e["time"] == e["timeNano"] // 10**9 and e["time"] >= int(t0)
    assert container[2]["Actor"]["Attributes"]["signal"] == "9"
    assert container[3]["Actor"]["Attributes"]["exitCode"] == "137"
    nets = [e for e in api.events(t0, type=["network"]) if e["Actor"]["Attributes"].get("container") == cid]
    assert _actions(nets) == ["connect", "disconnect"]
    assert all(e.keys() == OTHER_EVENT_KEYS and e["Actor"]["Attributes"]["name"] == "bridge" for e in nets)
    after = time.time()
    assert api.events(after, container=[cid]) == []  # since: nothing before it


def test_stop_and_restart_events_come_in_dockerds_order(api: Engine) -> None:
    cid = api.run("ev-stop")
    t0 = time.time()
    api.act(cid, "restart", t=0)
    api.act(cid, "stop", t=0)
    seen = [(e["Action"], e["Actor"]["Attributes"].get("signal")) for e in api.events(t0, container=[cid])]
    stop = [("kill", "15"), ("kill", "9"), ("die", None), ("stop", None)]
    assert seen == [*stop, ("start", None), ("restart", None), *stop]


def test_events_for_volumes_and_networks(api: Engine) -> None:
    t0 = time.time()
    api.call("POST", "/volumes/create", json={"Name": "ev-vol"})
    api.call("DELETE", "/volumes/ev-vol")
    net = api.call("POST", "/networks/create", json={"Name": "ev-net", "CheckDuplicate": True}).json()["Id"]
    api.call("DELETE", f"/networks/{net}")
    vols = api.events(t0, volume=["ev-vol"])
    assert [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]) for e in vols] == [
        ("create", "ev-vol", {"driver": "local"}),
        ("destroy", "ev-vol", {"driver": "local"}),
    ]
    nets = api.events(t0, network=[net])
    assert [(e["Action"], e["Actor"]["Attributes"]) for e in nets] == [
        ("create", {"name": "ev-net", "type": "bridge"}),
        ("destroy", {"name": "ev-net", "type": "bridge"}),
    ]
    assert {e["Type"] for e in api.events(t0, type=["volume"])} == {"volume"}


def test_a_live_event_stream_sees_a_create(api: Engine) -> None:
    got: list[dict[str, Any]] = []
    with api.http.get(
        f"{api.base}{V}/events",
        params={"filters": json.dumps({"type": ["container"]})},
        stream=True,
        timeout=30,
    ) as r:
        assert (r.status_code, r.headers["Content-Type"]) == (200, "application/json")
        cid = api.create("ev-live")
        for line in r.iter_lines():
            if line:
                got.append(json.loads(line))
                break
    assert (got[0]["Action"], got[0]["id"]) == ("create", cid)


# --- images, volumes, networks -----------------------------------------------------------------------


def test_images_list_the_dev_images_with_dockerds_shape(api: Engine) -> None:
    images = api.get("/images/json")
    tags = {t for i in images for t in i["RepoTags"]}
    assert {"busybox:latest", "redis:latest"} <= tags
    for i in images:
        assert i.keys() == IMAGE_KEYS
        assert i["Id"].startswith("sha256:") and HEX64.match(i["Id"][7:])
        assert (i["Containers"], i["SharedSize"], i["ParentId"]) == (-1, -1, "")
        assert i["Size"] == i["VirtualSize"] > 0
    busybox = next(i for i in images if "busybox:latest" in i["RepoTags"])
    assert api.get("/images/busybox/json")["Id"] == busybox["Id"]
    assert [i["RepoTags"] for i in api.get("/images/json", filters=json.dumps({"reference": ["busy*"]}))] == [
        ["busybox:latest"]
    ]
    r = api.call("GET", "/images/nosuch/json")
    assert (r.status_code, message(r)) == (404, "no such image: nosuch: No such image: nosuch:latest")


def test_volumes_create_list_inspect_and_remove(api: Engine) -> None:
    assert api.get("/volumes") == {"Volumes": [], "Warnings": None}
    r = api.call("POST", "/volumes/create", json={"Name": "vol1", "Labels": {"l": "1"}})
    assert r.status_code == 201
    v = r.json()
    assert v.keys() == VOLUME_KEYS
    assert (v["Name"], v["Driver"], v["Labels"], v["Scope"], v["Options"]) == (
        "vol1",
        "local",
        {"l": "1"},
        "local",
        None,
    )
    assert v["Mountpoint"].endswith("/volumes/vol1/_data") and v["CreatedAt"].endswith("Z")
    again = api.call("POST", "/volumes/create", json={"Name": "vol1"})
    assert (again.status_code, again.json()["Labels"]) == (201, {"l": "1"})  # the one that is there
    anon = api.call("POST", "/volumes/create", json={}).json()
    assert HEX64.match(anon["Name"]) and anon["Labels"] is None
    assert {x["Name"] for x in api.get("/volumes")["Volumes"]} == {"vol1", anon["Name"]}
    assert api.get("/volumes/vol1") == v
    cid = api.create("uses-vol", HostConfig={"Binds": ["vol1:/v"]})
    dangling = api.get("/volumes", filters=json.dumps({"dangling": ["true"]}))["Volumes"]
    assert [x["Name"] for x in dangling] == [anon["Name"]]
    r = api.call("DELETE", "/volumes/vol1")
    assert (r.status_code, message(r)) == (409, f"remove vol1: volume is in use - [{cid}]")
    api.call("DELETE", f"/containers/{cid}")
    assert api.call("DELETE", "/volumes/vol1").status_code == 204
    r = api.call("DELETE", "/volumes/vol1")
    assert (r.status_code, message(r)) == (404, "get vol1: no such volume")
    r = api.call("GET", "/volumes/vol1")
    assert (r.status_code, message(r)) == (404, "get vol1: no such volume")
    r = api.call("GET", "/volumes", params={"filters": json.dumps({"bogus": ["x"]})})
    assert (r.status_code, message(r)) == (400, "Invalid filter 'bogus'")


def test_networks_predefined_create_inspect_and_remove(api: Engine) -> None:
    nets = {n["Name"]: n for n in api.get("/networks")}
    assert {k: n["Driver"] for k, n in nets.items()} == {"bridge": "bridge", "host": "host", "none": "null"}
    for n in nets.values():
        assert n.keys() == NETWORK_KEYS and HEX64.match(n["Id"]) and n["Scope"] == "local"
    assert nets["bridge"]["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16"}]
    r = api.call(
        "POST", "/networks/create", json={"Name": "net1", "Labels": {"l": "1"}, "CheckDuplicate": True}
    )
    assert r.status_code == 201 and r.json().keys() == {"Id", "Warning"} and r.json()["Warning"] == ""
    nid = r.json()["Id"]
    r = api.call("POST", "/networks/create", json={"Name": "net1", "CheckDuplicate": True})
    assert (r.status_code, message(r)) == (409, "network with name net1 already exists")
    twin = api.call("POST", "/networks/create", json={"Name": "net1"}).json()
    assert twin["Warning"] == f"Network with name net1 (id : {nid}) already exists"
    r = api.call("GET", "/networks/net1")
    assert (r.status_code, message(r)) == (400, "2 matches found based on name: network net1 is ambiguous")
    r = api.call("DELETE", "/networks/net1")
    assert (r.status_code, message(r)) == (400, "network net1 is ambiguous (2 matches found based on name)")
    assert api.call("DELETE", f"/networks/{twin['Id']}").status_code == 204
    doc = api.get("/networks/net1")
    assert doc.keys() == NETWORK_KEYS
    assert (doc["Id"], doc["Driver"], doc["Labels"], doc["Containers"]) == (nid, "bridge", {"l": "1"}, {})
    [ipam] = doc["IPAM"]["Config"]
    assert re.fullmatch(r"172\.\d+\.0\.0/16", ipam["Subnet"]) and ipam["Gateway"] == ipam["Subnet"][:-4] + "1"
    cid = api.run("on-net1", HostConfig={"NetworkMode": "net1"})
    [entry] = api.ps()
    assert entry["HostConfig"] == {"NetworkMode": "net1"} and list(entry["NetworkSettings"]["Networks"]) == [
        "net1"
    ]
    endpoint = api.inspect(cid)["NetworkSettings"]["Networks"]["net1"]
    assert endpoint["NetworkID"] == nid and endpoint["Aliases"] == [cid[:12]]
    assert api.get(f"/networks/{nid}")["Containers"][cid]["Name"] == "on-net1"
    assert (
        api.get("/networks", filters=json.dumps({"name": ["net1"]}))[0]["Containers"] == {}
    )  # the list omits them
    r = api.call("DELETE", "/networks/net1")
    assert (r.status_code, message(r)) == (
        403,
        f"error while removing network: network net1 id {nid} has active endpoints",
    )
    api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
    assert api.call("DELETE", f"/networks/{nid[:12]}").status_code == 204
    r = api.call("DELETE", "/networks/net1")
    assert (r.status_code, message(r)) == (404, "network net1 not found")
    for name in ("bridge", "host", "none"):
        r = api.call("DELETE", f"/networks/{name}")
        assert (r.status_code, message(r)) == (403, f"{name} is a pre-defined network and cannot be removed")


def test_a_container_on_an_unknown_network_fails_to_start(api: Engine) -> None:
    cid = api.create("lost", HostConfig={"NetworkMode": "nosuch"})
    r = api.act(cid, "start", 404)
    assert message(r) == "network nosuch not found"
    s = api.inspect(cid)["State"]
    assert (s["Status"], s["ExitCode"], s["Error"]) == ("created", 128, "network nosuch not found")


def test_auto_remove_takes_the_container_away_when_it_exits(api: Engine) -> None:
    t0 = time.time()
    cid = api.run("auto", cmd=["true"], HostConfig={"AutoRemove": True})
    seen = api.follow(t0, "destroy", container=[cid])
    assert _actions(seen) == ["create", "start", "die", "destroy"]
    assert seen[2]["Actor"]["Attributes"]["exitCode"] == "0"
    assert api.call("GET", f"/containers/{cid}/json").status_code == 404


def test_volume_events_follow_the_container_that_mounts_it(api: Engine) -> None:
    t0 = time.time()
    cid = api.run("mounter", HostConfig={"Binds": ["evvol:/v:ro"]})
    api.act(cid, "kill")
    api.wait(cid)
    seen = [(e["Action"], e["Actor"]["Attributes"]) for e in api.events(t0, volume=["evvol"])]
    assert seen == [
        ("create", {"driver": "local"}),
        ("mount", {"container": cid, "destination": "/v", "driver": "local", "propagation": "",
                   "read/write": "false"}),
        ("unmount", {"container": cid, "driver": "local"}),
    ]  # fmt: skip


def test_a_container_can_join_another_ones_network(api: Engine) -> None:
    host = api.create("net-host")
    cid = api.create("net-guest", HostConfig={"NetworkMode": "container:net-host"})
    assert api.inspect(cid)["HostConfig"]["NetworkMode"] == f"container:{host}"
    entry = api.ps(all=1, filters={"id": [cid]})[0]
    assert (entry["HostConfig"], entry["NetworkSettings"]) == (
        {"NetworkMode": f"container:{host}"},
        {"Networks": {}},
    )
    r = api.act(cid, "start", 409)
    assert message(r) == f"cannot join network of a non running container: {host}"
    api.act(host, "start")
    api.act(cid, "start")
    net = api.inspect(cid)["NetworkSettings"]
    assert (net["Networks"], net["IPAddress"], net["Ports"]) == ({}, "", {})
    lost = api.create("net-lost", HostConfig={"NetworkMode": "container:zz"})
    assert api.inspect(lost)["HostConfig"]["NetworkMode"] == "container:zz"
    assert message(api.act(lost, "start", 404)) == "No such container: zz"
    s = api.inspect(lost)["State"]
    assert (s["Status"], s["ExitCode"], s["Error"]) == ("created", 128, "No such container: zz")


# --- the simulation's own entry point (nothing on dockerd stands for it) -------------------------------


def test_the_entry_point_serves_separate_named_nodes_and_prints_where() -> None:
    cmd = [sys.executable, "-m", "shoal.sim.engines", "--nodes", "3", "--first", "7", "--latency-ms", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        nodes = json.loads(proc.stdout.readline())
        assert list(nodes) == ["sim00007", "sim00008", "sim00009"]
        assert all(re.fullmatch(r"tcp://127\.0\.0\.1:\d+", a) for a in nodes.values())
        engines = {name: Engine(addr.replace("tcp://", "http://")) for name, addr in nodes.items()}
        assert {name: e.get("/info")["Name"] for name, e in engines.items()} == {n: n for n in nodes}
        engines["sim00007"].create("only-here")
        assert [len(e.ps(all=1)) for e in engines.values()] == [1, 0, 0]
        busy = int(nodes["sim00007"].rsplit(":", 1)[1])
        taken = subprocess.run(
            [*cmd[:3], "--port-base", str(busy)], capture_output=True, text=True, timeout=60
        )
        assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{busy}" in taken.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
