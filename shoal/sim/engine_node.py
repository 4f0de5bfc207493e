"""One simulated dockerd's state and operations, answering as dockerd 20.10 does: its statuses, its
messages word for word, and its events in its order. Every refusal is an `EngineError` with dockerd's
status and words, so the HTTP edge (shoal.sim.engines) only renders it.

Per-node state is kept small on purpose, since the scale benchmark holds 30,000 containers over 1,000
nodes in one process: a container keeps only what its client set that differs from dockerd's defaults (empty
values shared, keys interned), and the event log keeps dockerd's 256 most recent events as small records
that refer to their container rather than copy it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shoal.errors import EngineError
from shoal.sim.engine_model import (
    CONFIG_DEFAULTS,
    CONFIG_TYPES,
    CONTAINER_FILTERS,
    EMPTY,
    EVENTS_KEPT,
    HOST_DEFAULTS,
    HOST_TYPES,
    IMAGES,
    NAME_LEFT,
    NAME_RIGHT,
    NAME_RULE,
    NETWORK_FILTERS,
    OBJECT_TYPES,
    SIGNALS,
    STATUSES,
    TERM_HANDLERS,
    VOLUME_FILTERS,
    Container,
    Event,
    Image,
    Mount,
    Network,
    NodeSpec,
    Volume,
    check_filters,
    check_types,
    compact,
    labels_match,
    lifetime,
    normalize_host,
    normalize_ref,
    now_ns,
    parse_signal,
    random_id,
    regex_any,
)


class NodeEngine:
    """One simulated dockerd: its containers, volumes, networks and event log."""

    def __init__(self, spec: NodeSpec, events_kept: int = EVENTS_KEPT) -> None:
        self.spec = spec
        self.id = ":".join(f"{random.getrandbits(20):04X}"[:4] for _ in range(12))
        self.started_ns = now_ns()
        self.containers: dict[str, Container] = {}
        self.names: dict[str, str] = {}  # name -> id
        self.volumes: dict[str, Volume] = {}
        self.networks: dict[str, Network] = {}
        self.events: deque[Event] = deque(maxlen=events_kept)
        self.listeners: set[tuple[asyncio.Queue[Event | None], Callable[[Event], bool]]] = set()
        self.answering = asyncio.Event()  # cleared: a stuck daemon (see `hang`)
        self.answering.set()
        self._pid = 1000
        self._ports: set[int] = set()  # host ports bound by running containers
        self._ephemeral = 32768
        self._subnet = 18
        for name, driver, subnet in (("none", "null", ""), ("host", "host", ""), ("bridge", "bridge", "17")):
            net = Network(random_id(), name, driver, self.started_ns, predefined=True)
            if subnet:
                net.subnet, net.gateway = f"172.{subnet}.0.0/16", f"172.{subnet}.0.1"
                net.options = {
                    "com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.enable_icc": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                    "com.docker.network.bridge.name": "docker0",
                    "com.docker.network.driver.mtu": "1500",
                }
            self.networks[net.id] = net

    # --- a stuck daemon ---------------------------------------------------------------------------

    def hang(self) -> None:
        """Answer no request until `answer()`: a dockerd stuck behind a lock, whose event streams already
        open go on (each request waits, as a client of such a daemon sees until its own timeout)."""
        self.answering.clear()

    def answer(self) -> None:
        """Answer again, the requests that waited first."""
        self.answering.set()

    # --- events -----------------------------------------------------------------------------------

    def emit(
        self, type_: str, action: str, actor: str, attrs: Mapping[str, str], c: Container | None = None
    ) -> None:
        ev = Event(now_ns(), type_, action, actor, c, attrs)
        self.events.append(ev)
        for queue, wanted in self.listeners:
            if wanted(ev):
                queue.put_nowait(ev)

    def _container_event(self, c: Container, action: str, **extra: str) -> None:
        self.emit("container", action, c.id, extra or EMPTY, c)

    def _network_event(self, c: Container, action: str) -> None:
        net = self.network_of(c)
        if net is not None:
            attrs = {"container": c.id, "name": net.name, "type": net.driver}
            self.emit("network", action, net.id, attrs)

    # --- lookups ----------------------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """By full id, then by name, then by unique id prefix, as dockerd's GetContainer."""
        c = self.containers.get(ref)
        if c is not None:
            return c
        cid = self.names.get(ref.removeprefix("/"))
        if cid is not None:
            return self.containers[cid]
        found = [c for cid, c in self.containers.items() if cid.startswith(ref)] if ref else []
        if len(found) > 1:
            raise EngineError(500, f"Multiple IDs found with provided prefix: {ref}", self.spec.name)
        if not found:
            raise EngineError(404, f"No such container: {ref}", self.spec.name)
        return found[0]

    def image(self, ref: str) -> Image | None:
        if not ref:
            return None
        short = ref.removeprefix("sha256:")
        if all(ch in "0123456789abcdef" for ch in short) and short:
            for img in IMAGES:
                if img.id.removeprefix("sha256:").startswith(short):
                    return img
        tagged = normalize_ref(ref)
        for img in IMAGES:
            if tagged in img.tags:
                return img
        return None

    def network(self, ref: str, inspecting: bool = False) -> Network:
        """By full id, then exact name, then id prefix (dockerd's FindNetwork). dockerd words an ambiguous
        name one way for inspect and another for everything else."""
        if ref in self.networks:
            return self.networks[ref]
        by_name = [n for n in self.networks.values() if n.name == ref]
        by_prefix = [n for nid, n in self.networks.items() if nid.startswith(ref)] if ref else []
        for found, basis in ((by_name, "name"), (by_prefix, "ID prefix")):
            if len(found) > 1:
                msg = (
                    f"{len(found)} matches found based on {basis}: network {ref} is ambiguous"
                    if inspecting
                    else f"network {ref} is ambiguous ({len(found)} matches found based on {basis})"
                )
                raise EngineError(400, msg, self.spec.name)
            if found:
                return found[0]
        raise EngineError(404, f"network {ref} not found", self.spec.name)

    def network_of(self, c: Container) -> Network | None:
        """The network a container is on (None when it joins another container or its network is gone)."""
        try:
            return self.network(c.network_name)
        except EngineError:
            return None

    # --- containers -------------------------------------------------------------------------------

    def create(self, name: str, body: dict[str, Any]) -> Container:
        node = self.spec.name
        if not isinstance(body, dict) or (not body.get("Image") and not body.get("Cmd")):
            raise EngineError(400, "Config cannot be empty in order to create a container", node)
        check_types(body, CONFIG_TYPES, "container config", 500)
        check_types(body.get("HostConfig") or {}, HOST_TYPES, "container config: HostConfig", 500)
        if name:
            if not NAME_RULE.match(name):
                raise EngineError(
                    400, f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", node
                )
            name = name.removeprefix("/")
            if name in self.names:
                raise EngineError(
                    409,
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{self.names[name]}". You have to remove (or rename) that container to be able to '
                    "reuse that name.",
                    node,
                )
        ref = str(body.get("Image") or "")
        img = self.image(ref)
        if ref and img is None:
            raise EngineError(404, f"No such image: {normalize_ref(ref)}", node)
        host = compact(normalize_host(body.get("HostConfig") or {}), HOST_DEFAULTS)
        mode = str(host.get("NetworkMode") or "")
        if mode.startswith("container:"):  # dockerd keeps the id of one it finds, the words otherwise
            with contextlib.suppress(EngineError):
                host["NetworkMode"] = "container:" + self.get(mode.removeprefix("container:")).id
        config = compact(
            {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig", "Image")},
            CONFIG_DEFAULTS,
        )
        if img is not None and config.get("Labels") is None:
            config["Labels"] = {}
        cid = random_id()
        mounts = self._mounts(cid, host, config, img)
        tries = 0
        while not name or name in self.names:  # dockerd's namesgenerator: a digit after a collision; the
            # sim's 400 names with one digit run out at 4,400 containers, so more digits as tries go on
            name = f"{random.choice(NAME_LEFT)}_{random.choice(NAME_RIGHT)}" + (
                f"{random.randrange(10 ** (1 + tries // 8))}" if name else ""
            )
            tries += 1
        c = Container(cid, name, now_ns(), ref, img, config, host, mounts)
        self.containers[cid] = c
        self.names[name] = cid
        self._container_event(c, "create")
        return c

    def _mounts(
        self, cid: str, host: dict[str, Any], config: dict[str, Any], img: Image | None
    ) -> tuple[Mount, ...]:
        """The container's mounts, its named and anonymous volumes made once every one of them is valid."""
        out: list[Mount] = []
        new: dict[str, bool] = {}  # volume name -> anonymous
        for bind in host.get("Binds") or []:
            parts = str(bind).split(":")
            if len(parts) < 2 or not parts[0] or not parts[1].startswith("/"):
                raise EngineError(400, f"invalid volume specification: '{bind}'", self.spec.name)
            src, dst, mode = parts[0], parts[1], ":".join(parts[2:])
            rw = "ro" not in mode.split(",")
            if src.startswith("/"):
                out.append(Mount("bind", src, dst, mode, rw))
            else:
                new.setdefault(src, False)
                out.append(Mount("volume", src, dst, mode or "z", rw))
        for m in host.get("Mounts") or []:
            kind, src, dst = m.get("Type", "volume"), m.get("Source", ""), m.get("Target", "")
            if kind == "volume":
                src = src or random_id()
                new.setdefault(src, not m.get("Source"))
            out.append(Mount(kind, src, dst, "", not m.get("ReadOnly")))
        taken = {m.destination for m in out}
        for dst in [*(img.volumes if img else ()), *(config.get("Volumes") or {})]:
            if dst not in taken:
                taken.add(dst)
                vol = random_id()
                new[vol] = True
                out.append(Mount("volume", vol, dst, "", True))
        for name, anonymous in new.items():
            self._volume_for(name, anonymous)
        return tuple(out)

    def _volume_for(self, name: str, anonymous: bool) -> Volume:
        if name not in self.volumes:
            self.volumes[name] = Volume(name, now_ns(), None, anonymous=anonymous)
            self.emit("volume", "create", name, {"driver": "local"})
        return self.volumes[name]

    def start(self, ref: str) -> bool:
        """False when it was already running (dockerd answers 304)."""
        c = self.get(ref)
        if c.status == "paused":
            raise EngineError(409, "cannot start a paused container, try unpause instead", self.spec.name)
        if c.running:
            return False
        self._run(c)
        return True

    def _run(self, c: Container) -> None:
        node = self.spec.name
        if c.network_mode.startswith("container:"):
            self._join(c)
            return
        net = self.network_of(c)
        if net is None:
            c.error, c.exit_code = f"network {c.network_name} not found", 128
            raise EngineError(404, c.error, node)
        ports: list[tuple[str, str, int]] = []
        bindings = dict(c.host.get("PortBindings") or {})
        if c.host.get("PublishAllPorts"):
            for p in c.exposed():
                bindings.setdefault(p, [{"HostIp": "", "HostPort": ""}])
        wanted = [(p, b) for p, bs in bindings.items() for b in bs or []]
        if net.driver == "bridge":
            for _, b in wanted:
                host_port = int(b.get("HostPort") or 0)
                if host_port and host_port in self._ports:
                    bind = f"{b.get('HostIp') or '0.0.0.0'}:{host_port}"
                    c.error = (
                        f"driver failed programming external connectivity on endpoint {c.name} "
                        f"({random_id()}): Bind for {bind} failed: port is already allocated"
                    )
                    c.exit_code = 128
                    raise EngineError(500, c.error, node)
            for p, b in wanted:
                host_port = int(b.get("HostPort") or 0) or self._ephemeral_port()
                self._ports.add(host_port)
                ports.append((p, b.get("HostIp") or "", host_port))
        self._pid += 1
        c.status, c.pid, c.error, c.exit_code, c.started_ns = "running", self._pid, "", 0, now_ns()
        c.network_id = net.id
        c.address = net.allocate() if net.subnet else 0
        c.ports = tuple(ports)
        self._network_event(c, "connect")
        self._started(c)

    def _join(self, c: Container) -> None:
        """`--network container:X`: X's network stack, so no endpoint, address or network event."""
        try:
            target = self.get(c.network_mode.removeprefix("container:"))
        except EngineError as e:
            c.error, c.exit_code = e.message, 128
            raise
        if not target.running:
            c.error, c.exit_code = f"cannot join network of a non running container: {target.id}", 128
            raise EngineError(409, c.error, self.spec.name)
        self._pid += 1
        c.status, c.pid, c.error, c.exit_code, c.started_ns = "running", self._pid, "", 0, now_ns()
        self._started(c)

    def _started(self, c: Container) -> None:
        for m in c.mounts:
            if m.kind == "volume":
                attrs = {
                    "container": c.id,
                    "destination": m.destination,
                    "driver": "local",
                    "propagation": "",
                    "read/write": str(m.rw).lower(),
                }
                self.emit("volume", "mount", m.source, attrs)
        self._container_event(c, "start")
        tty = bool(c.config.get("Tty") or c.config.get("OpenStdin"))
        after, code = lifetime(c.argv(), tty)
        if after is not None:
            loop = asyncio.get_running_loop()
            c.timer = loop.call_later(after, self._exit_by_itself, c, code)

    def _ephemeral_port(self) -> int:
        while self._ephemeral in self._ports:
            self._ephemeral += 1
        port = self._ephemeral
        self._ephemeral = 32768 if port >= 60999 else port + 1
        return port

    def _exit_by_itself(self, c: Container, code: int) -> None:
        c.timer = None
        if c.id in self.containers and c.status == "running":
            self._die(c, code)
            if c.host.get("AutoRemove"):
                self._destroy(c, False)

    def _die(self, c: Container, code: int) -> None:
        """The process is gone: die, network disconnect, volume unmounts; waiters learn the exit code."""
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        c.status, c.exit_code, c.pid, c.finished_ns = "exited", code, 0, now_ns()
        self._container_event(c, "die", exitCode=str(code))
        net = self.network_of(c)
        if net is not None and c.address:
            net.used.discard(c.address)
        self._network_event(c, "disconnect")
        for m in c.mounts:
            if m.kind == "volume":
                self.emit("volume", "unmount", m.source, {"container": c.id, "driver": "local"})
        for *_, host_port in c.ports:
            self._ports.discard(host_port)
        c.address, c.ports = 0, ()
        self._wake(c, ("not-running", "next-exit"), code)

    def _wake(self, c: Container, conditions: tuple[str, ...], code: int) -> None:
        if not c.waiters:
            return
        keep = []
        for cond, fut in c.waiters:
            if cond in conditions:
                if not fut.done():
                    fut.set_result(code)
            else:
                keep.append((cond, fut))
        c.waiters = keep or None

    def _signal(self, c: Container, sig: int) -> bool:
        """Deliver one signal; True when the process died of it."""
        self._container_event(c, "kill", signal=str(sig))
        if sig == 9:
            if c.status == "paused":
                c.status = "running"
            self._die(c, 137)
            return True
        if sig in (2, 15) and c.status == "running" and c.argv()[:1] and c.argv()[0] in TERM_HANDLERS:
            self._die(c, 0)
            return True
        return False

    def stop(self, ref: str) -> bool:
        """False when it was not running (304). The grace period is not waited: SIGTERM, then SIGKILL if
        the process ignored it."""
        c = self.get(ref)
        if not c.running:
            return False
        self._stop(c)
        return True

    def _stop(self, c: Container) -> None:
        sig = SIGNALS.get(str(c.config.get("StopSignal") or "TERM").upper().removeprefix("SIG"), 15)
        self._container_event(c, "kill", signal=str(sig))
        if c.status == "paused":
            c.status = "running"
            self._container_event(c, "unpause")
        if sig in (2, 15) and c.argv()[:1] and c.argv()[0] in TERM_HANDLERS:
            self._die(c, 0)
        else:
            self._signal(c, 9)
        self._container_event(c, "stop")

    def kill(self, ref: str, signal: str) -> None:
        node = self.spec.name
        try:
            c = self.get(ref)
        except EngineError as e:
            raise EngineError(e.status, f"Cannot kill container: {ref}: {e.message}", node) from None
        sig = parse_signal(signal)
        if not c.running:
            raise EngineError(409, f"Cannot kill container: {ref}: Container {c.id} is not running", node)
        self._signal(c, sig)

    def restart(self, ref: str) -> None:
        c = self.get(ref)
        if c.running:
            self._stop(c)
        try:
            self._run(c)
        except EngineError as e:
            raise EngineError(
                e.status, f"Cannot restart container {ref}: {e.message}", self.spec.name
            ) from None
        self._container_event(c, "restart")

    def pause(self, ref: str) -> None:
        c = self.get(ref)
        if c.status == "paused":
            raise EngineError(409, f"Container {c.id} is already paused", self.spec.name)
        if c.status != "running":
            raise EngineError(409, f"Container {c.id} is not running", self.spec.name)
        c.status = "paused"
        self._container_event(c, "pause")

    def unpause(self, ref: str) -> None:
        c = self.get(ref)
        if c.status != "paused":
            raise EngineError(500, f"Container {c.id} is not paused", self.spec.name)
        c.status = "running"
        self._container_event(c, "unpause")

    def wait(self, ref: str, condition: str) -> tuple[Container, asyncio.Future[int] | None]:
        """The container and a future for its exit code, or None when the condition already holds."""
        c = self.get(ref)
        condition = condition if condition in ("next-exit", "removed") else "not-running"
        if condition == "not-running" and not c.running:
            return c, None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        c.waiters = [*(c.waiters or []), (condition, fut)]
        return c, fut

    def remove(self, ref: str, force: bool, volumes: bool) -> None:
        c = self.get(ref)
        if c.status == "paused" and not force:
            raise EngineError(
                409,
                f"You cannot remove a paused container {c.id}. Unpause and then stop the container before "
                "attempting removal or force remove",
                self.spec.name,
            )
        if c.running and not force:
            raise EngineError(
                409,
                f"You cannot remove a running container {c.id}. Stop the container before attempting "
                "removal or force remove",
                self.spec.name,
            )
        if c.running:
            self._signal(c, 9)
        self._destroy(c, volumes)

    def _destroy(self, c: Container, volumes: bool) -> None:
        if c.timer is not None:
            c.timer.cancel()
        del self.containers[c.id]
        self.names.pop(c.name, None)
        if volumes:
            for m in c.mounts:
                v = self.volumes.get(m.source)
                if m.kind == "volume" and v is not None and v.anonymous and not self.volume_users(v.name):
                    del self.volumes[v.name]
                    self.emit("volume", "destroy", v.name, {"driver": "local"})
        self._container_event(c, "destroy")
        self._wake(c, ("not-running", "next-exit", "removed"), c.exit_code)

    def list(self, all_: bool, limit: int, filters: dict[str, list[str]]) -> Iterator[Container]:
        """Newest first, as dockerd lists."""
        check_filters(filters, CONTAINER_FILTERS)
        for s in filters.get("status", []):
            if s not in STATUSES:
                raise EngineError(400, f"Invalid filter 'status={s}'", self.spec.name)
        exited = [_atoi(x) for x in filters["exited"]] if "exited" in filters else None
        before = self._created_of(filters["before"][0]) if filters.get("before") else None
        since = self._created_of(filters["since"][0]) if filters.get("since") else None
        all_ = all_ or limit > 0 or "status" in filters
        n = 0
        for cid in reversed(self.containers):
            c = self.containers[cid]
            if not all_ and not c.running:
                continue
            if "id" in filters and not any(c.id.startswith(x) for x in filters["id"]):
                continue
            if "name" in filters and not regex_any(filters["name"], "/" + c.name, c.name):
                continue
            if "label" in filters and not labels_match(c.labels, filters["label"]):
                continue
            if "status" in filters and c.status not in filters["status"]:
                continue
            if exited is not None and (c.status != "exited" or c.exit_code not in exited):
                continue
            if "ancestor" in filters and not any(self._descends(c, a) for a in filters["ancestor"]):
                continue
            if "network" in filters and not any(
                x in (c.network_name, c.network_id) for x in filters["network"]
            ):
                continue
            if "volume" in filters and not any(
                x in (m.source, m.destination) for m in c.mounts for x in filters["volume"]
            ):
                continue
            if before is not None and c.created_ns >= before:
                continue
            if since is not None and c.created_ns <= since:
                continue
            if filters.get("is-task") == ["true"]:
                continue
            yield c
            n += 1
            if limit > 0 and n >= limit:
                return

    def _created_of(self, ref: str) -> int:
        try:
            return self.get(ref).created_ns
        except EngineError:
            raise EngineError(500, f"no such container {ref}", self.spec.name) from None

    def _descends(self, c: Container, ancestor: str) -> bool:
        img = self.image(ancestor)
        return img is not None and c.image is img

    # --- volumes ----------------------------------------------------------------------------------

    def volume_users(self, name: str) -> list[str]:
        return [
            c.id
            for c in self.containers.values()
            if any(m.kind == "volume" and m.source == name for m in c.mounts)
        ]

    def volume_get(self, name: str) -> Volume:
        v = self.volumes.get(name)
        if v is None:
            raise EngineError(404, f"get {name}: no such volume", self.spec.name)
        return v

    def volume_create(self, body: dict[str, Any]) -> Volume:
        check_types(body, OBJECT_TYPES, "volume config", 400)
        name = str(body.get("Name") or "") or random_id()
        if name not in self.volumes:
            driver = body.get("Driver") or "local"
            v = Volume(name, now_ns(), body.get("Labels") or None, driver, body.get("DriverOpts") or None)
            self.volumes[name] = v
        self.emit("volume", "create", name, {"driver": self.volumes[name].driver})
        return self.volumes[name]

    def volume_remove(self, name: str, force: bool) -> None:
        v = self.volumes.get(name)
        if v is None:
            if force:
                return
            raise EngineError(404, f"get {name}: no such volume", self.spec.name)
        users = self.volume_users(name)
        if users:
            raise EngineError(409, f"remove {name}: volume is in use - [{', '.join(users)}]", self.spec.name)
        del self.volumes[name]
        self.emit("volume", "destroy", name, {"driver": v.driver})

    def volume_list(self, filters: dict[str, list[str]]) -> list[Volume]:
        check_filters(filters, VOLUME_FILTERS)
        out = []
        for v in self.volumes.values():
            if "name" in filters and not regex_any(filters["name"], v.name):
                continue
            if "driver" in filters and v.driver not in filters["driver"]:
                continue
            if "label" in filters and not labels_match(v.labels, filters["label"]):
                continue
            if "dangling" in filters:
                dangling = filters["dangling"][0].lower() in ("1", "true")
                if dangling == bool(self.volume_users(v.name)):
                    continue
            out.append(v)
        return out

    # --- networks ---------------------------------------------------------------------------------

    def network_create(self, body: dict[str, Any]) -> tuple[Network, str]:
        check_types(body, OBJECT_TYPES, "network config", 400)
        name = str(body.get("Name") or "")
        node = self.spec.name
        if not name:
            raise EngineError(400, "network name must be specified", node)
        same = [n for n in self.networks.values() if n.name == name]
        if same and name in ("bridge", "host", "none"):
            raise EngineError(403, f"{name} is a pre-defined network and cannot be recreated", node)
        if same and body.get("CheckDuplicate"):
            raise EngineError(409, f"network with name {name} already exists", node)
        driver = body.get("Driver") or "bridge"
        net = Network(
            random_id(),
            name,
            driver,
            now_ns(),
            labels=body.get("Labels") or {},
            options=body.get("Options") or {},
            internal=bool(body.get("Internal")),
            attachable=bool(body.get("Attachable")),
            ipam_options=(body.get("IPAM") or {}).get("Options"),
        )
        if driver == "bridge":
            net.subnet, net.gateway = f"172.{self._subnet}.0.0/16", f"172.{self._subnet}.0.1"
            self._subnet = self._subnet + 1 if self._subnet < 31 else 18
        self.networks[net.id] = net
        self.emit("network", "create", net.id, {"name": name, "type": driver})
        warning = f"Network with name {name} (id : {same[0].id}) already exists" if same else ""
        return net, warning

    def network_remove(self, ref: str) -> None:
        net = self.network(ref)
        if net.predefined:
            raise EngineError(
                403, f"{net.name} is a pre-defined network and cannot be removed", self.spec.name
            )
        users = [c for c in self.containers.values() if c.running and c.network_id == net.id]
        if users:
            raise EngineError(
                403,
                f"error while removing network: network {net.name} id {net.id} has active endpoints",
                self.spec.name,
            )
        del self.networks[net.id]
        self.emit("network", "destroy", net.id, {"name": net.name, "type": net.driver})

    def network_list(self, filters: dict[str, list[str]]) -> list[Network]:
        check_filters(filters, NETWORK_FILTERS)
        out = []
        for n in self.networks.values():
            if "name" in filters and not regex_any(filters["name"], n.name):
                continue
            if "id" in filters and not any(n.id.startswith(x) for x in filters["id"]):
                continue
            if "driver" in filters and n.driver not in filters["driver"]:
                continue
            if "label" in filters and not labels_match(n.labels, filters["label"]):
                continue
            if "type" in filters and ("builtin" if n.predefined else "custom") not in filters["type"]:
                continue
            out.append(n)
        return out

    # --- counts -----------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int, int, int]:
        """(containers, running, paused, stopped), as /info gives them."""
        running = paused = 0
        for c in self.containers.values():
            if c.status == "paused":
                paused += 1
            elif c.running:
                running += 1
        total = len(self.containers)
        return total, running, paused, total - running - paused


def _atoi(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise EngineError(500, f'strconv.Atoi: parsing "{raw}": invalid syntax', "") from None
