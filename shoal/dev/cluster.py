"""`shoal dev up|down|status|env`: a real multi-node cluster on one Linux host.

Each node is a network namespace on a host bridge with its own dockerd (own UTS and private mount
namespace), its own btrfs pool on a loop-mounted image file, and the local images loaded. The
state file is written before anything is made; any failure in `up` runs `down`'s teardown on what
was made so far, so a failed `up` leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from shoal.dev import engine, host, images, preflight, registry, state, tls
from shoal.dev.layout import (
    MANAGER_COUNTS,
    ClusterLayout,
    ClusterSpec,
    ManagerLayout,
    NodeLayout,
    plan_layout,
)
from shoal.dev.node import cluster_services, join_token_file, manager_processes, node_processes, start
from shoal.errors import Conflict, HostNotReady, ShoalError

Out = Callable[[str], None]
POOL_SIZE = "4G"


@dataclass(frozen=True, slots=True)
class Timings:
    """Where `up`'s time went, for the benchmark (seconds)."""

    images: float = 0.0
    network: float = 0.0
    pools: float = 0.0
    engines: float = 0.0
    load: float = 0.0
    services: float = 0.0
    seed: float = 0.0  # the dev images into the cluster's image registry (its HTTP API) and tagged
    total: float = 0.0


def up(spec: ClusterSpec, out: Out = print) -> Timings:
    layout = plan_layout(spec)
    facts = preflight.gather_host_facts()
    _require(preflight.check_host(facts))
    existing = state.read(layout.state_file)
    if existing is not None:
        return _already_up(layout, existing, spec, out)
    _require(preflight.check_room(layout, facts))
    registry.binary()  # before anything is made: a host without it is told how to get it

    t0 = time.monotonic()
    built = images.build(images.dev_images())
    archive = images.save_archive(built)
    t_images = time.monotonic()
    st = state.State(spec=spec, phase="creating", pool="btrfs" if host.kernel_has_btrfs() else "dir")
    state.write(layout.state_file, st)
    try:
        several = f", {len(layout.managers)} managers" if layout.managers else ""
        out(f"creating dev cluster {layout.name!r}: {len(layout.nodes)} nodes{several} on {layout.subnet}")
        host.create_bridge(layout.bridge, layout.gateway, layout.prefixlen)
        host.add_forward_rule(layout.bridge, layout.forward_comment)
        for space in (*layout.managers, *layout.nodes):  # a manager's namespace is made as a node's is
            host.create_node_net(
                space.netns, space.veth, layout.bridge, space.address, space.prefixlen, space.gateway
            )
        t_net = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(layout.nodes)) as pool:
            list(pool.map(lambda n: _make_node_dirs(n, st.pool), layout.nodes))
        for m in layout.managers:
            m.log_dir.mkdir(parents=True, exist_ok=True)
        if layout.secure:
            tls.make_certs(layout)
        registry.prepare(layout)
        t_pools = time.monotonic()

        pids: dict[str, dict[str, int]] = {}
        for node in layout.nodes:
            procs = node_processes(layout, node)
            engine_spec = procs[0]
            pids[node.name] = {"engine": start(engine_spec)}
            st = replace(st, pids=pids)
            state.write(layout.state_file, st)
        with ThreadPoolExecutor(max_workers=len(layout.nodes)) as pool:
            list(
                pool.map(
                    lambda n: engine.wait_ready(
                        n.engine_socket, pids[n.name]["engine"], n.log_dir / "dockerd.log", n.name
                    ),
                    layout.nodes,
                )
            )
        t_engines = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(layout.nodes)) as pool:
            loaded = list(
                pool.map(lambda n: engine.load_images(n.engine_socket, archive, n.name), layout.nodes)
            )
        t_load = time.monotonic()
        # by tier: the registry (or every manager's etcd member), then the manager(s), then the agents
        services = [("", svc) for svc in cluster_services(layout)]
        services += [(m.name, svc) for m in layout.managers for svc in manager_processes(layout, m)]
        services += [(n.name, svc) for n in layout.nodes for svc in node_processes(layout, n)[1:]]
        tiers = [[s for s in services if s[1].tier == t] for t in sorted({s[1].tier for s in services})]
        for tier in tiers:
            for owner, svc in tier:
                join = pids[owner][svc.join] if svc.join else 0
                pids.setdefault(owner, {})[svc.name] = start(svc, join_pid=join)
            st = replace(st, pids=pids)
            state.write(layout.state_file, st)
            with ThreadPoolExecutor(max_workers=max(1, len(tier))) as pool:
                list(
                    pool.map(
                        lambda o: engine.wait_http(
                            o[1].ready_url,
                            pids[o[0]][o[1].name],
                            o[1].log,
                            f"{o[0] or 'cluster'} {o[1].name}",
                            ca=o[1].ready_ca,
                            cert=o[1].ready_cert,
                            token_file=o[1].ready_token,
                        ),
                        [o for o in tier if o[1].ready_url],
                    )
                )
            if layout.secure and any(svc.name == "manager" for _, svc in tier):
                _make_join_token(layout)  # the agents (the next tier) join with it
        t_services = time.monotonic()
        pushed = registry.seed(layout, built)
        t_seed = time.monotonic()
        st = replace(st, phase="up")
        state.write(layout.state_file, st)
    except BaseException:
        out("up failed; removing what was made")
        _teardown(layout, st, out=lambda _: None)
        raise
    t_end = time.monotonic()
    tags = ", ".join(sorted(set(loaded[0])))
    out(f"images: {tags} on every node, and as {layout.image_registry}/NAME in the registry ({len(pushed)})")
    out(_reach(layout))
    return Timings(
        images=t_images - t0,
        network=t_net - t_images,
        pools=t_pools - t_net,
        engines=t_engines - t_pools,
        load=t_load - t_engines,
        services=t_services - t_load,
        seed=t_seed - t_services,
        total=t_end - t0,
    )


def _require(problems: list[str]) -> None:
    if problems:
        raise HostNotReady("; ".join(problems))


def _already_up(layout: ClusterLayout, existing: state.State, spec: ClusterSpec, out: Out) -> Timings:
    if existing.spec != spec:
        several = f", {existing.spec.managers} managers" if existing.spec.managers > 1 else ""
        raise Conflict(
            f"dev cluster {layout.name!r} is already up with {existing.spec.nodes} nodes{several} on "
            f"{existing.spec.subnet}; run `shoal dev down` first to change it"
        )
    dead = [
        n.name for n in layout.nodes if not host.pid_alive(existing.pids.get(n.name, {}).get("engine", -1))
    ]
    stopped = [
        m.name
        for m in layout.managers
        if not all(host.pid_alive(existing.pids.get(m.name, {}).get(p, -1)) for p in ("etcd", "manager"))
    ]
    if existing.phase != "up" or dead or stopped:
        way = "run `shoal dev down` to clean it up, then `shoal dev up` again"
        if dead:
            what = f"engine not running on {', '.join(dead)}"
        elif stopped:
            what = f"{', '.join(stopped)} not running"
            starts = " and ".join(f"`shoal dev manager start {m.removeprefix('manager')}`" for m in stopped)
            way = f"start {'it' if len(stopped) == 1 else 'them'} with {starts}, or {way}"
        else:
            what = "an earlier `up` did not finish"
        raise Conflict(f"dev cluster {layout.name!r} has stale state ({what}); {way}")
    out(f"dev cluster {layout.name!r} is already up ({len(layout.nodes)} nodes); nothing to do")
    out(_reach(layout))
    return Timings()


def _make_node_dirs(node: NodeLayout, pool_kind: str) -> None:
    for d in (
        node.data_root,
        node.exec_root,
        node.plugins_dir,
        node.containerd_dir,
        node.facts_dir,
        node.log_dir,
        node.etc_docker_dir,
    ):
        d.mkdir(parents=True, exist_ok=True)
    if pool_kind == "btrfs":
        host.make_btrfs_pool(node.pool_image, node.pool_dir, POOL_SIZE)
    else:
        node.pool_dir.mkdir(parents=True, exist_ok=True)
    # the engine's mount namespace binds over these; they must exist on the host (nothing is written in them)
    for d in ("/run/docker/plugins", "/run/containerd", "/etc/docker"):
        Path(d).mkdir(parents=True, exist_ok=True)


def _make_join_token(layout: ClusterLayout) -> None:
    """A join token from the manager (with the admin certificate), left where the agents read it."""
    admin = tls.admin(layout)
    r = requests.post(
        f"{layout.manager_url}/shoal/v1/join-tokens",
        params={"ttl": "3600"},
        cert=(str(admin.cert), str(admin.key)),
        verify=str(admin.ca),
        timeout=10,
    )
    if r.status_code != 201:
        raise ShoalError(f"the manager gave no join token: {r.status_code} {r.text.strip()}")
    path = join_token_file(layout)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(r.json()["Token"])


def _reach(layout: ClusterLayout) -> str:
    lines = [
        f"  {n.name:<8} {n.address:<15} DOCKER_HOST={n.engine_url}  (or unix://{n.engine_socket})"
        for n in layout.nodes
    ]
    if layout.managers:
        lines += [
            f"  {m.name} {m.address:<15} DOCKER_HOST={m.docker_host}, registry {m.registry_url} "
            f"(Consul API), DNS {m.dns_addr}, etcd {m.etcd_endpoint}"
            for m in layout.managers
        ]
        lines.append(
            f"  managers {','.join(layout.manager_hosts)} (any one: the Docker API for the whole cluster)"
        )
    else:
        lines.append(f"  registry {layout.registry_url} (Consul API), DNS {layout.dns_addrs[0]}")
        lines.append(f"  manager  {layout.docker_host} (Docker API for the whole cluster)")
    lines.append(f"  images   {layout.image_registry} (image registry; SHOAL_IMAGE_REGISTRY in `dev env`)")
    if layout.secure:
        lines.append(f"  tls      mutual TLS everywhere; DOCKER_CERT_PATH={tls.admin(layout).dir}")
    else:
        lines.append("  INSECURE: no TLS, no tokens; anyone who reaches these ports is root on every node")
    name = "" if layout.name == "shoal" else f" --name {layout.name}"
    return "\n".join([*lines, f'point the docker CLI at the cluster: eval "$(shoal dev env{name})"'])


# --- down ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removed:
    processes: int = 0
    netns: int = 0
    links: int = 0
    mounts: int = 0
    loops: int = 0
    rules: int = 0
    cgroups: int = 0
    dirs: int = 0

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in self.__dataclass_fields__)

    def __add__(self, other: Removed) -> Removed:
        return Removed(**{f: getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__})

    def summary(self) -> str:
        parts = [f"{getattr(self, f)} {f}" for f in self.__dataclass_fields__ if getattr(self, f)]
        return ", ".join(parts)


def down(name: str, root: Path, out: Out = print) -> Removed:
    """Removes everything dev cluster `name` made, from its state file or, failing that, by name."""
    _require(preflight.check_host(preflight.gather_host_facts()))
    layout = _layout_for_down(name, root)
    st = state.read(layout.state_file)
    removed = _teardown(layout, st, out)
    if not removed:
        out(f"no dev cluster {name!r} is up; nothing to do")
    else:
        out(f"dev cluster {name!r} removed ({removed.summary()})")
    return removed


def _layout_for_down(name: str, root: Path) -> ClusterLayout:
    base = plan_layout(ClusterSpec(name=name, nodes=1, root=root))
    st = state.read(base.state_file)
    if st is not None:
        return plan_layout(st.spec)
    # no (readable) state: find the nodes and managers by their namespace and directory names
    indexes: set[int] = set()
    managers: set[int] = set()
    spaces = [
        ns.removeprefix(base.netns_prefix) for ns in host.list_netns() if ns.startswith(base.netns_prefix)
    ]
    dirs = [d.name for d in base.root.iterdir()] if base.root.is_dir() else []
    for suffix in spaces:
        if suffix.startswith("node") and suffix[4:].isdigit():
            indexes.add(int(suffix[4:]))
        if suffix.startswith("mgr") and suffix[3:].isdigit():
            managers.add(int(suffix[3:]))
    for d in dirs:
        if d.startswith("node") and d[4:].isdigit():
            indexes.add(int(d[4:]))
        if d.startswith("manager") and d[7:].isdigit():
            managers.add(int(d[7:]))
    return plan_layout(
        ClusterSpec(name=name, nodes=max(indexes, default=1), root=root, managers=managers_covering(managers))
    )


def managers_covering(found: set[int]) -> int:
    """The smallest manager count whose layout names every manager index found (1: none was found), so a
    crash part way through making managers 1..3 still has all of them removed."""
    if not found:
        return 1
    return next((n for n in MANAGER_COUNTS if n > 1 and n >= max(found)), MANAGER_COUNTS[-1])


def _teardown(layout: ClusterLayout, st: state.State | None, out: Out) -> Removed:
    pids = st.pids if st else {}
    with ThreadPoolExecutor(max_workers=max(1, len(layout.nodes))) as pool:
        per_node = list(pool.map(lambda n: _teardown_node(layout, n, pids.get(n.name, {})), layout.nodes))
    total = sum(per_node, Removed()) + sum(
        (_teardown_manager(layout, m, pids.get(m.name, {})) for m in layout.managers), Removed()
    )
    cluster_pids = {p for p in pids.get("", {}).values() if _ours(p, layout.root)}
    if "image-registry" not in pids.get("", {}):  # a lost state file: found by its own config file's name
        cluster_pids |= registry.running(layout)
    killed = len(host.terminate(cluster_pids, grace=5.0))
    links = int(host.delete_link(layout.bridge))
    rules = host.remove_forward_rules(layout.forward_comment)
    cgroups = host.remove_cgroups(f"/shoal-{layout.name}")
    mounts = 0
    for point in host.mounts_under(layout.root):
        host.unmount(point)
        mounts += 1
    loops = 0
    for dev in host.loops_backed_by(layout.root):
        host.detach_loop(dev)
        loops += 1
    dirs = 0
    if layout.root.exists():
        shutil.rmtree(layout.root, ignore_errors=True)
        dirs = 1
    return total + Removed(
        processes=killed, links=links, rules=rules, cgroups=cgroups, mounts=mounts, loops=loops, dirs=dirs
    )


def _ours(pid: int, root: Path) -> bool:
    return host.pid_alive(pid) and str(root) in host.cmdline(pid)


def _teardown_node(layout: ClusterLayout, node: NodeLayout, pids: dict[str, int]) -> Removed:
    # services first (they may use the engine), then the engine, which stops its containers
    services = {p for name, p in pids.items() if name != "engine" and _ours(p, node.dir)}
    stopped = host.terminate(services, grace=5.0)
    # containers next: this cluster is being thrown away, so no engine-side graceful stop (which
    # waits each container's 10 s stop timeout); the engine then shuts down at once
    containers = host.cgroup_procs(node.cgroup_parent(layout.name))
    host.kill(containers)
    engine_pid = pids.get("engine", -1)
    if not _ours(engine_pid, node.dir) and node.pidfile.exists():
        try:
            engine_pid = int(node.pidfile.read_text().strip())
        except ValueError:
            engine_pid = -1
    if _ours(engine_pid, node.dir):
        stopped |= host.terminate({engine_pid}, grace=15.0)
    # whatever is left in the node's namespace or below its cgroup: shims, containers, strays
    strays = host.netns_pids(node.netns) | host.cgroup_procs(node.cgroup_parent(layout.name))
    host.kill(strays)
    mounts = 0
    for point in host.mounts_under(node.dir):
        host.unmount(point)
        mounts += 1
    loops = 0
    for dev in host.loops_backed_by(node.dir):
        host.detach_loop(dev)
        loops += 1
    netns = int(host.delete_netns(node.netns))
    links = int(host.delete_link(node.veth))
    return Removed(
        processes=len(stopped | strays | containers), netns=netns, links=links, mounts=mounts, loops=loops
    )


def _teardown_manager(layout: ClusterLayout, m: ManagerLayout, pids: dict[str, int]) -> Removed:
    """Every process in the manager's namespace (its etcd member, its manager) and any it recorded that
    left it, at once: its data is thrown away with the cluster, so there is nothing to stop gracefully."""
    gone = host.netns_pids(m.netns) | {p for p in pids.values() if _ours(p, m.dir)}
    host.kill(gone)
    netns = int(host.delete_netns(m.netns))
    links = int(host.delete_link(m.veth))
    return Removed(processes=len(gone), netns=netns, links=links)


# --- status and env -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeStatus:
    name: str
    address: str
    engine_url: str
    engine_pid: int
    running: bool
    healthy: bool
    version: str = ""
    containers: int = 0
    running_containers: int = 0
    images: int = 0
    ping_ms: float = 0.0
    pool: str = ""
    error: str = ""


def load(name: str, root: Path) -> tuple[ClusterLayout, state.State]:
    layout = plan_layout(ClusterSpec(name=name, nodes=1, root=root))
    st = state.read(layout.state_file)
    if st is None:
        raise ShoalError(f"no dev cluster {name!r} is up; start one with `shoal dev up`")
    return plan_layout(st.spec), st


def status(name: str, root: Path) -> list[NodeStatus]:
    layout, st = load(name, root)
    with ThreadPoolExecutor(max_workers=len(layout.nodes)) as pool:
        return list(pool.map(lambda n: _node_status(n, st), layout.nodes))


def _node_status(node: NodeLayout, st: state.State) -> NodeStatus:
    pid = st.pids.get(node.name, {}).get("engine", -1)
    running = _ours(pid, node.dir)
    pool = ""
    if node.pool_dir.is_dir():
        pool = st.pool if (st.pool == "dir" or host.mounts_under(node.pool_dir)) else "missing"
    base = NodeStatus(
        name=node.name,
        address=node.address,
        engine_url=node.engine_url,
        engine_pid=pid,
        running=running,
        healthy=False,
        pool=pool,
    )
    t = time.monotonic()
    try:
        layout = plan_layout(st.spec)
        i = engine.info(node.engine_url, certs=tls.admin(layout).dir if layout.secure else None)
    except Exception as e:  # the engine's own error is the status
        return replace(base, error=str(e).splitlines()[0][:120])
    return replace(
        base,
        healthy=running,
        version=i.get("ServerVersion", ""),
        containers=i.get("Containers", 0),
        running_containers=i.get("ContainersRunning", 0),
        images=i.get("Images", 0),
        ping_ms=(time.monotonic() - t) * 1000,
    )


def service_status(name: str, root: Path) -> list[tuple[str, int, bool, str]]:
    """Cluster-wide services: (name, pid, healthy, where)."""
    layout, st = load(name, root)
    out = []
    for svc in cluster_services(layout):
        if svc.name not in st.pids.get("", {}):  # a cluster made before this service existed
            continue
        pid = st.pids.get("", {})[svc.name]
        ok = _ours(pid, layout.root)
        if ok and svc.ready_url:
            try:
                ok = engine.get(svc.ready_url, svc.ready_ca, svc.ready_cert, timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
        out.append((svc.name, pid, ok, svc.ready_url.split("/v1/")[0].removesuffix("/v2/")))
    for m in layout.managers:
        out += _manager_status(layout, m, st.pids.get(m.name, {}))
    return out


def _manager_status(
    layout: ClusterLayout, m: ManagerLayout, pids: dict[str, int]
) -> list[tuple[str, int, bool, str]]:
    """Its etcd member and its manager, each healthy when alive and answering its ready URL; the manager's
    `where` says whether its registry leads (by its own /v1/status/leader)."""
    rows = []
    for svc in manager_processes(layout, m):
        pid = pids.get(svc.name, -1)
        ok = _ours(pid, m.dir)
        if ok:
            try:
                ok = engine.get(svc.ready_url, svc.ready_ca, svc.ready_cert, timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
        if svc.name == "etcd":
            rows.append((f"{m.name} etcd", pid, ok, f"http://{m.etcd_endpoint}"))
        else:
            where = f"{m.docker_host}, registry {m.registry_url}, DNS {m.dns_addr}"
            role = _role(layout, m) if ok else ""
            rows.append((m.name, pid, ok, f"{where}{f' ({role})' if role else ''}"))
    return rows


def _role(layout: ClusterLayout, m: ManagerLayout) -> str:
    """Its role as its own registry's /v1/status/leader tells it: leader, follower of another, no leader, or
    "" when the registry cannot say (the manager's own health is the row's)."""
    try:
        r = engine.get(f"{m.registry_url}/v1/status/leader", str(tls.node_ca(layout)), None, timeout=2)
        leader = r.json() if r.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return ""
    if not isinstance(leader, str):
        return ""
    if not leader:
        return "no leader"
    return "leader" if leader.split(":")[0] == m.address else f"follower of {leader.split(':')[0]}"


def _ca_bundle_lines(layout: ClusterLayout) -> list[str]:
    """requests (under docker-compose and docker-py) lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, where a host
    sets them, replace the CA that DOCKER_CERT_PATH gives (requests issue 3829), and then refuses the
    cluster's certificates. Where they are set, they are pointed at a bundle of what they named plus the
    cluster's two CAs, so every other tool keeps its CAs and these also trust the cluster."""
    out = []
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        current = os.environ.get(var, "")
        if not current or current.startswith(str(tls.tls_root(layout))):
            continue
        bundle = tls.tls_root(layout) / f"{var.lower()}.pem"
        try:
            theirs = Path(current).read_bytes()
        except OSError:
            theirs = b""
        bundle.write_bytes(
            theirs + b"\n" + tls.control_ca(layout).read_bytes() + tls.node_ca(layout).read_bytes()
        )
        out.append(f"export {var}={bundle}")
    return out


def env_lines(name: str, root: Path) -> list[str]:
    """What the docker CLI, docker-compose, docker-py, Consul's clients and shoal's CLI read, by their own
    variable names, so each of them drives the cluster unchanged."""
    layout, _ = load(name, root)
    lines = [f"export DOCKER_HOST={layout.docker_host}"]
    if layout.secure:
        lines += [
            "export DOCKER_TLS_VERIFY=1",
            f"export DOCKER_CERT_PATH={tls.admin(layout).dir}",
            f"export CONSUL_HTTP_ADDR={layout.registry_url}",
            f"export CONSUL_CACERT={tls.node_ca(layout)}",
            f"export CONSUL_HTTP_TOKEN={tls.management_token(layout).read_text().strip()}",
        ]
        lines += _ca_bundle_lines(layout)
    else:
        lines += [
            "unset DOCKER_TLS_VERIFY DOCKER_CERT_PATH CONSUL_HTTP_TOKEN",
            f"export CONSUL_HTTP_ADDR={layout.registry_url}",
        ]
    lines.append(f"export SHOAL_DASHBOARD={layout.dashboard_url}")
    lines.append(f"export SHOAL_IMAGE_REGISTRY={layout.image_registry}")
    if name != "shoal":
        lines.append(f"export SHOAL_DEV_NAME={name}")
    lines += [f"export SHOAL_NODE_{n.name.upper()}={n.engine_url}" for n in layout.nodes]
    if layout.managers:  # DOCKER_HOST and CONSUL_HTTP_ADDR above are manager1's; these name every one
        lines.append(f"export SHOAL_MANAGERS={','.join(layout.manager_hosts)}")
        lines += [f"export SHOAL_MANAGER_{m.index}={m.docker_host}" for m in layout.managers]
        lines.append(f"export SHOAL_REGISTRIES={','.join(layout.registry_urls)}")
        lines.append(f"export SHOAL_DNS={','.join(layout.dns_addrs)}")
    return lines
