"""What a simulated engine is made of, as plain data: the images it holds, its containers, volumes,
networks and events, and the pure rules it answers by (dockerd's STATUS text, its time format, its filters,
its HostConfig defaults, and how a container's process behaves).

How a process behaves is read from its command (the images are the dev cluster's busybox, redis and
todolist): `true`, `echo ...`, `sh -c 'exit N'`, and a bare `sh` without a TTY or open stdin exit at once
(0, or N); `false` exits 1; `sleep N` (and `sh -c 'sleep N'`) exits 0 after N seconds; anything else runs
until stopped or killed. Only `redis-server` handles SIGTERM (it exits 0); every other command is PID 1
without a handler and ignores it, so `stop` ends it with SIGKILL (exit 137) -- at once: the grace period is
not waited. Restart policies are kept but not acted on; `AutoRemove` removes a container when it exits.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.cluster.status import human_duration
from shoal.errors import EngineError

API_VERSION, MIN_API_VERSION = "1.41", "1.12"
SERVER_VERSION = "20.10.24+dfsg1"
KERNEL = "6.1.0-sim-amd64"
EVENTS_KEPT = 256  # dockerd keeps this many past events for `since`
ZERO_TIME = "0001-01-01T00:00:00Z"
NAME_RULE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15, "STOP": 19}
QUICK_EXITS = frozenset({"true", "echo", "hostname", "env", "printenv", "date", "id", "uname", "pwd"})
TERM_HANDLERS = frozenset({"redis-server"})


@dataclass(frozen=True, slots=True)
class Image:
    """An image as the dev cluster builds it (the same ids on every node)."""

    id: str
    tags: tuple[str, ...]
    size: int
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    exposed: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    workdir: str = ""
    layers: int = 1
    created: int = 1443657600  # 2015-10-01, the dev images' fixed date


IMAGES = (
    Image(
        "sha256:013a17a9809ffa46825611322d2a249547eea4f23e5392f564c2ff7411108cda",
        ("todolist:latest",),
        17528971,
        ("httpd", "-f", "-v", "-p", "8080", "-h", "/www"),
        ("DATABASE=redis", "DATABASE_PORT=6379", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        exposed=("8080/tcp",),
        layers=2,
    ),
    Image(
        "sha256:4845dcc7c0b0a51623a9a9f10e9d31acce577d69eb5299c2698e20b6b3e4efa0",
        ("busybox:latest",),
        1985781,
        ("sh",),
    ),
    Image(
        "sha256:fd4de7e3fa9d646ec252b988ada5b2b7bf6ca308f367afb7ddc2454a119a716e",
        ("redis:latest",),
        19914069,
        ("redis-server", "--protected-mode", "no"),
        exposed=("6379/tcp",),
        volumes=("/data",),
        workdir="/data",
        layers=2,
    ),
)


def random_id() -> str:
    """64 hex digits whose 12-digit short form is never all digits (dockerd's rule, so it is never read
    as a number)."""
    while True:
        s = f"{random.getrandbits(256):064x}"
        if not s[:12].isdigit():
            return s


NAME_LEFT = tuple(
    "admiring brave clever eager festive gifted happy jolly keen loving modest nifty optimistic "
    "quirky relaxed sharp tender upbeat vibrant zen".split()
)
NAME_RIGHT = tuple(
    "albattani bardeen curie darwin euclid feistel galois hopper jepsen knuth lovelace mayer noether "
    "pike ritchie shannon thompson turing wozniak yalow".split()
)


def now_ns() -> int:
    return time.time_ns()


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano: trailing zeros of the fraction dropped; the zero time for 0."""
    if not ns:
        return ZERO_TIME
    s, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return f"{base}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def lifetime(argv: tuple[str, ...], interactive: bool) -> tuple[float | None, int]:
    """(seconds until the process exits by itself or None for never, its exit code), from its command."""
    if not argv:
        return 0.0, 0
    prog, args = argv[0].rsplit("/", 1)[-1], argv[1:]
    if prog in ("sh", "ash", "bash"):
        if len(args) >= 2 and args[0] == "-c":
            return lifetime(tuple(args[1].split()), interactive)
        if not args:
            return (None, 0) if interactive else (0.0, 0)
        return None, 0
    if prog == "exit":
        return 0.0, int(args[0]) if args and args[0].isdigit() else 0
    if prog in QUICK_EXITS:
        return 0.0, 0
    if prog == "false":
        return 0.0, 1
    if prog == "sleep" and args:
        try:
            return float(args[0]), 0
        except ValueError:
            return None, 0  # `sleep infinity`
    return None, 0


def parse_signal(raw: str) -> int:
    if not raw:
        return 9
    if raw.isdigit():
        return int(raw)
    try:
        return SIGNALS[raw.upper().removeprefix("SIG")]
    except KeyError:
        raise EngineError(400, f"Invalid signal: {raw}", "") from None


@dataclass(frozen=True, slots=True)
class Mount:
    kind: str  # "bind" | "volume"
    source: str  # a host path, or a volume name
    destination: str
    mode: str
    rw: bool


@dataclass(slots=True)
class Volume:
    name: str
    created_ns: int
    labels: dict[str, str] | None
    driver: str = "local"
    options: dict[str, str] | None = None
    anonymous: bool = False


@dataclass(slots=True)
class Network:
    id: str
    name: str
    driver: str
    created_ns: int
    subnet: str = ""
    gateway: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    predefined: bool = False
    ipam_options: dict[str, str] | None = None
    used: set[int] = field(default_factory=set)  # host parts of the addresses in use

    def allocate(self) -> int:
        n = 2
        while n in self.used:
            n += 1
        self.used.add(n)
        return n

    def address(self, n: int) -> str:
        if not self.subnet:
            return ""
        a, b = self.subnet.split(".")[:2]
        return f"{a}.{b}.{n >> 8 & 255}.{n & 255}"


@dataclass(slots=True)
class Container:
    """What one simulated container holds: what its client set (Config and HostConfig keys that differ
    from dockerd's defaults) and its state."""

    id: str
    name: str  # without the leading slash
    created_ns: int
    image_ref: str  # as the client wrote it
    image: Image | None
    config: dict[str, Any]  # the client's Config, defaults dropped (HostConfig and Image removed)
    host: dict[str, Any]  # the client's HostConfig, defaults dropped
    mounts: tuple[Mount, ...]
    status: str = "created"
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_ns: int = 0
    finished_ns: int = 0
    network_id: str = ""  # set once started, kept after it stops (as dockerd does)
    address: int = 0  # host part of its address while running, 0 when stopped
    ports: tuple[tuple[str, str, int], ...] = ()  # while running: (private "80/tcp", host ip, host port)
    timer: asyncio.TimerHandle | None = None
    waiters: list[tuple[str, asyncio.Future[int]]] | None = None
    listed: tuple[tuple[Any, ...], bytes, bytes] | None = None  # its list entry, encoded, around Status

    @property
    def endpoint_id(self) -> str:
        """Made from the id rather than kept: 30,000 containers need not hold two more ids each."""
        return self.id[::-1]

    @property
    def sandbox(self) -> str:
        return self.id[32:] + self.id[:32]

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    @property
    def network_mode(self) -> str:
        return self.host.get("NetworkMode") or "default"

    @property
    def network_name(self) -> str:
        mode = self.network_mode
        return "bridge" if mode == "default" else mode

    @property
    def labels(self) -> dict[str, str]:
        return self.config.get("Labels") or {}

    def argv(self) -> tuple[str, ...]:
        ep = self.config.get("Entrypoint") or []
        cmd = self.config.get("Cmd")
        if cmd is None and not ep and self.image:
            cmd = list(self.image.cmd)
        return (*ep, *(cmd or []))

    def env(self) -> list[str]:
        own = list(self.config.get("Env") or [])
        keys = {e.split("=", 1)[0] for e in own}
        return own + [e for e in (self.image.env if self.image else ()) if e.split("=", 1)[0] not in keys]

    def exposed(self) -> list[str]:
        out = list(self.image.exposed if self.image else ())
        out += [p for p in self.config.get("ExposedPorts") or {} if p not in out]
        out += [p for p in self.host.get("PortBindings") or {} if p not in out]
        return out

    def state_text(self, now: int) -> str:
        """`docker ps` STATUS, as dockerd's State.String() writes it."""
        if self.status == "paused":
            return f"Up {human_duration((now - self.started_ns) / 1e9)} (Paused)"
        if self.status == "running":
            return f"Up {human_duration((now - self.started_ns) / 1e9)}"
        if self.status == "removing":
            return "Removal In Progress"
        if self.status == "dead":
            return "Dead"
        if not self.started_ns:
            return "Created"
        return f"Exited ({self.exit_code}) {human_duration((now - self.finished_ns) / 1e9)} ago"


@dataclass(frozen=True, slots=True)
class Event:
    """One event, kept small and written out when streamed: a container event refers to its container
    (whose name, image and labels never change) instead of holding its own copy of them."""

    ns: int
    type: str
    action: str
    actor: str
    container: Container | None  # for container events
    attrs: Mapping[str, str]  # the other events' attributes, or what a container event adds (exitCode...)

    @property
    def name(self) -> str:
        """The actor's "name" attribute, which the container, network and volume filters match too."""
        return self.container.name if self.container is not None else self.attrs.get("name", "")

    def attributes(self) -> dict[str, str]:
        c = self.container
        if c is None:
            return dict(self.attrs)
        out = {**c.labels, **({"image": c.image_ref} if c.image_ref else {}), "name": c.name, **self.attrs}
        return dict(sorted(out.items()))

    @property
    def line(self) -> bytes:
        doc: dict[str, Any] = {}
        if self.container is not None:
            doc = {"status": self.action, "id": self.actor}
            if self.container.image_ref:
                doc["from"] = self.container.image_ref
        doc.update(
            Type=self.type, Action=self.action, Actor={"ID": self.actor, "Attributes": self.attributes()}
        )
        doc.update(scope="local", time=self.ns // 1_000_000_000, timeNano=self.ns)
        return json.dumps(doc).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What one simulated node reports about itself in /info."""

    name: str
    ncpu: int = 4
    mem_total: int = 8 << 30
    labels: tuple[str, ...] = ()  # "key=value", as `dockerd --label` gives them
    os: str = "Debian GNU/Linux 12 (bookworm)"
    volume_drivers: tuple[str, ...] = ("local",)  # Plugins.Volume (a dev node adds flocker and shoal)


def parse_filters(raw: str) -> dict[str, list[str]]:
    """The `filters` query parameter: {"key": ["v", ...]} or the old {"key": {"v": true}}."""
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise EngineError(500, f"invalid filters: {e}", "") from None
    if not isinstance(doc, dict):
        raise EngineError(500, "invalid filters: not an object", "")
    out: dict[str, list[str]] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out[k] = [x for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        else:
            raise EngineError(500, f"invalid filters: {k} is not a list", "")
    return out


def check_filters(filters: dict[str, list[str]], allowed: frozenset[str]) -> None:
    for k in filters:
        if k not in allowed:
            raise EngineError(400, f"Invalid filter '{k}'", "")


def labels_match(labels: dict[str, str] | None, wanted: list[str]) -> bool:
    """Every `key` or `key=value` in `wanted` holds for `labels`."""
    labels = labels or {}
    for w in wanted:
        k, eq, v = w.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def regex_any(patterns: list[str], *values: str) -> bool:
    """dockerd's filters.Match: any pattern found (unanchored) in any value; a bad pattern matches nothing."""
    for p in patterns:
        try:
            rx = re.compile(p)
        except re.error:
            continue
        if any(rx.search(v) for v in values):
            return True
    return False


def normalize_ref(ref: str) -> str:
    """`busybox` is `busybox:latest`; `docker.io/library/busybox` is `busybox`."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "library/"):
        ref = ref.removeprefix(prefix)
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else f"{ref}:latest"


# fmt: off
CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
    "ExposedPorts": None, "NetworkDisabled": False, "MacAddress": "", "StopSignal": "",
    "StopTimeout": None, "Healthcheck": None, "ArgsEscaped": False, "Shell": None,
}
# fmt: on


_STRINGS, _MAP = "a list of strings", "an object of strings"
CONFIG_TYPES: dict[str, tuple[type, ...] | str] = {
    "Image": (str,), "Hostname": (str,), "User": (str,), "WorkingDir": (str,), "Env": _STRINGS,
    "Cmd": _STRINGS, "Entrypoint": _STRINGS, "Labels": _MAP, "ExposedPorts": (dict,), "Volumes": (dict,),
    "Tty": (bool,), "OpenStdin": (bool,), "StopSignal": (str,), "HostConfig": (dict,),
}  # fmt: skip
HOST_TYPES: dict[str, tuple[type, ...] | str] = {
    "Binds": _STRINGS, "PortBindings": (dict,), "Mounts": (list,), "NetworkMode": (str,), "Memory": (int,),
    "NanoCpus": (int,), "CpuShares": (int,), "AutoRemove": (bool,), "PublishAllPorts": (bool,),
    "RestartPolicy": (dict,), "Privileged": (bool,), "LogConfig": (dict,),
}  # fmt: skip
OBJECT_TYPES: dict[str, tuple[type, ...] | str] = {
    "Name": (str,), "Driver": (str,), "Labels": _MAP, "Options": _MAP, "DriverOpts": _MAP,
    "CheckDuplicate": (bool,), "Internal": (bool,), "Attachable": (bool,), "IPAM": (dict,),
}  # fmt: skip


def check_types(
    doc: dict[str, Any], types: dict[str, tuple[type, ...] | str], what: str, status: int
) -> None:
    """A body field of the wrong type is refused before anything is made, with the status dockerd's decoder
    gives (500 for a container's config, 400 for a volume's or network's). A lone string where a list of
    strings goes is one item, as dockerd's StrSlice reads it."""
    for key, want in types.items():
        v = doc.get(key)
        if v is None:
            continue
        if want == _STRINGS:
            if isinstance(v, str) and key in ("Cmd", "Entrypoint"):
                doc[key] = [v]
            elif not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise EngineError(status, f"invalid {what}: {key} must be {want}", "")
        elif want == _MAP:
            if not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
                raise EngineError(status, f"invalid {what}: {key} must be {want}", "")
        elif not isinstance(v, want) or (bool not in want and isinstance(v, bool)):
            raise EngineError(status, f"invalid {what}: {key} must be {_TYPE_NAMES[want[0]]}", "")


_TYPE_NAMES = {str: "a string", int: "a number", bool: "true or false", dict: "an object", list: "a list"}


def normalize_host(host: dict[str, Any]) -> dict[str, Any]:
    """The HostConfig a client sent, with dockerd's defaults filled in where it sent empty values (the
    docker CLI sends every key)."""
    out = dict(host)
    for k in ("IpcMode", "CgroupnsMode", "Runtime", "NetworkMode", "ShmSize", "MaskedPaths", "ReadonlyPaths",
              "ConsoleSize", "RestartPolicy"):  # fmt: skip
        if not out.get(k):
            out.pop(k, None)
    if not (out.get("LogConfig") or {}).get("Type"):
        out.pop("LogConfig", None)
    if "RestartPolicy" in out:
        out["RestartPolicy"] = {
            "Name": out["RestartPolicy"].get("Name", ""),
            "MaximumRetryCount": out["RestartPolicy"].get("MaximumRetryCount", 0),
        }
    if out.get("PortBindings") is None:
        out.pop("PortBindings", None)
    else:
        bindings = out["PortBindings"]
        if not all(
            isinstance(bs, list | None) and all(isinstance(b, dict) for b in bs or ())
            for bs in bindings.values()
        ):
            msg = 'invalid container config: HostConfig: PortBindings must map ports to lists of {"HostPort"}'
            raise EngineError(500, msg, "")
        out["PortBindings"] = {
            p: [{"HostIp": b.get("HostIp", ""), "HostPort": b.get("HostPort", "")} for b in bs or []]
            for p, bs in bindings.items()
        }
    if out.get("MemorySwappiness") == -1:  # the CLI's "unset"
        del out["MemorySwappiness"]
    if out.get("PidsLimit") == 0:
        del out["PidsLimit"]
    if out.get("Memory") and not out.get("MemorySwap"):
        out["MemorySwap"] = 2 * out["Memory"]
    return out


def compact(doc: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Only the keys whose value is not the default (or, without defaults, not empty): what a container
    needs to keep of its client's body, so 30,000 of them stay small."""
    return {sys.intern(k): _small(v) for k, v in doc.items() if k not in defaults or defaults[k] != v}


def _small(v: Any) -> Any:
    """A value as it is kept: an empty list or object shared, a list a tuple (JSON writes both alike)."""
    if isinstance(v, list):
        return tuple(v) if v else ()
    if isinstance(v, dict) and not v:
        return EMPTY
    return v


EMPTY: dict[str, Any] = {}  # shared by every container that set an empty object: never written to


CONTAINER_FILTERS = frozenset(
    "ancestor before exited expose health id is-task isolation label name network publish since status "
    "volume".split()
)
VOLUME_FILTERS = frozenset({"dangling", "driver", "label", "name"})
NETWORK_FILTERS = frozenset({"dangling", "driver", "id", "label", "name", "scope", "type"})
IMAGE_FILTERS = frozenset({"before", "dangling", "label", "reference", "since"})

# fmt: off
HOST_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default", "PortBindings": None, "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
    "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None, "CapDrop": None,
    "CgroupnsMode": "host", "Dns": None, "DnsOptions": None, "DnsSearch": None, "ExtraHosts": None,
    "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
    "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc", "ConsoleSize": [0, 0],
    "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": None, "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None,
    "BlkioDeviceReadIOps": None, "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": None,
    "DeviceCgroupRules": None, "DeviceRequests": None, "KernelMemory": 0, "KernelMemoryTCP": 0,
    "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": False,
    "PidsLimit": None, "Ulimits": None, "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                    "/sys/firmware"],
    "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
}
# fmt: on
"""HostConfig as dockerd 20.10 shows it for a container created with none (cgroup v1, not privileged);
a container keeps only the keys where its own differ."""
