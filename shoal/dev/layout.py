"""Where a dev cluster's pieces live: names, addresses and paths, computed from the request alone.

Pure: `plan_layout(spec)` touches nothing, so `up`, `down`, `status` and the tests all agree on
the same names without asking the host, and `down` can find a crashed cluster's leftovers by name.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import BadRequest

DEFAULT_NAME = "shoal"
DEFAULT_SUBNET = "10.99.0.0/24"
DEFAULT_ROOT = Path("/var/lib/shoal/dev")
ENGINE_PORT = 2375  # plain, --insecure clusters only
ENGINE_TLS_PORT = 2376  # dockerd's --tlsverify port
REGISTRY_HTTP_PORT = 8500  # the Consul API, on the host bridge's address (--insecure)
REGISTRY_HTTPS_PORT = 8501  # Consul's HTTPS port
REGISTRY_DNS_PORT = 8600
MANAGER_PORT = 2375  # the Docker API for the whole cluster: plain (--insecure), on loopback only
MANAGER_TLS_PORT = 2376  # the same over mutual TLS, on the host bridge's address
JOIN_PORT = 2377  # the manager's join listener (agents joining with a token) and the dashboard
IMAGE_REGISTRY_PORT = 5000  # the image registry (Debian's docker-registry), on the host bridge's address
ETCD_CLIENT_PORT = 2379  # several managers (--managers 3): each one's etcd member, on its own address
ETCD_PEER_PORT = 2380
# Manager i (of several) gets host address FIRST_MANAGER_HOST + i: .2-.6, below the first node's.
FIRST_MANAGER_HOST = 1
MANAGER_COUNTS = (1, 3, 5)  # an etcd quorum is a majority: an even count tolerates no more failures
# Node i gets host address FIRST_NODE_HOST + i in the subnet; .1 is the host bridge.
FIRST_NODE_HOST = 10
IFNAMSIZ = 15  # Linux interface names are at most 15 bytes
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*=.*$")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What the user asked for."""

    name: str = DEFAULT_NAME
    nodes: int = 3
    subnet: str = DEFAULT_SUBNET
    root: Path = DEFAULT_ROOT
    # node name -> engine labels ("key=value"), as `dockerd --label` takes them
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # node name -> agent labels ("key=value"), as `shoal agent --label` takes them
    agent_labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    agent_interval: float = 5.0
    strategy: str = "spread"
    secure: bool = True  # mutual TLS and tokens everywhere; False is `shoal dev up --insecure`
    # 1: one manager on the host bridge over a separate SQLite registry (the default); 3 or 5: that many
    # managers, each in its own network namespace beside its own etcd member
    managers: int = 1

    def labels_for(self, node: str) -> tuple[str, ...]:
        return next((lbls for n, lbls in self.labels if n == node), ())

    def agent_labels_for(self, node: str) -> tuple[str, ...]:
        return next((lbls for n, lbls in self.agent_labels if n == node), ())


@dataclass(frozen=True, slots=True)
class NodeLayout:
    name: str
    index: int
    netns: str
    veth: str  # host side; the node side is always eth0
    address: str
    prefixlen: int
    gateway: str
    dir: Path
    labels: tuple[str, ...] = ()
    agent_labels: tuple[str, ...] = ()
    secure: bool = True

    @property
    def engine_url(self) -> str:
        return f"tcp://{self.address}:{ENGINE_TLS_PORT if self.secure else ENGINE_PORT}"

    @property
    def agent_dir(self) -> Path:
        """Where the node's agent keeps what joining gave it (its key never leaves it)."""
        return self.dir / "agent"

    @property
    def engine_socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def data_root(self) -> Path:
        return self.dir / "docker"

    @property
    def exec_root(self) -> Path:
        return self.dir / "exec"

    @property
    def pidfile(self) -> Path:
        return self.dir / "docker.pid"

    @property
    def plugins_dir(self) -> Path:
        """Bind-mounted on /run/docker/plugins for this node's engine only."""
        return self.dir / "plugins"

    @property
    def containerd_dir(self) -> Path:
        """Bind-mounted on /run/containerd so the engine never adopts a system containerd."""
        return self.dir / "containerd"

    @property
    def pool_image(self) -> Path:
        return self.dir / "pool.img"

    @property
    def pool_dir(self) -> Path:
        return self.dir / "pool"

    @property
    def facts_dir(self) -> Path:
        return self.dir / "facts.d"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def etc_docker_dir(self) -> Path:
        """Bind-mounted on /etc/docker for this node's engine only: its certs.d (how it trusts the cluster's
        image registry) and its own key.json, so the host's /etc/docker is never written."""
        return self.dir / "etc-docker"

    def cgroup_parent(self, cluster: str) -> str:
        """Every container of this node lives below this cgroup, so `down` can find them all."""
        return f"/shoal-{cluster}/{self.name}"


@dataclass(frozen=True, slots=True)
class ManagerLayout:
    """One of several managers: its own network namespace (so it can be killed as a host dies, etcd member
    and all), holding an etcd member and a `shoal manager` that serves the Docker API, the Consul API and
    DNS on the namespace's one address."""

    name: str  # managerN
    index: int
    netns: str
    veth: str  # host side; the namespace side is eth0
    address: str
    prefixlen: int
    gateway: str
    dir: Path

    @property
    def docker_url(self) -> str:
        return f"https://{self.address}:{MANAGER_TLS_PORT}"

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.address}:{MANAGER_TLS_PORT}"

    @property
    def registry_url(self) -> str:
        return f"https://{self.address}:{REGISTRY_HTTPS_PORT}"

    @property
    def join_url(self) -> str:
        return f"https://{self.address}:{JOIN_PORT}"

    @property
    def dns_addr(self) -> str:
        return f"{self.address}:{REGISTRY_DNS_PORT}"

    @property
    def etcd_endpoint(self) -> str:
        return f"{self.address}:{ETCD_CLIENT_PORT}"

    @property
    def etcd_dir(self) -> Path:
        return self.dir / "etcd"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def socket(self) -> Path:
        return self.dir / "manager.sock"


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    name: str
    root: Path
    bridge: str
    subnet: str
    gateway: str
    prefixlen: int
    nodes: tuple[NodeLayout, ...] = field(default_factory=tuple)
    agent_interval: float = 5.0
    strategy: str = "spread"
    secure: bool = True
    managers: tuple[ManagerLayout, ...] = ()  # empty: the single manager on the host bridge

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def forward_comment(self) -> str:
        """Tags our iptables rule so `down` removes exactly it."""
        return f"shoal-dev:{self.name}"

    @property
    def manager_url(self) -> str:
        """The Docker API for the whole cluster, as an HTTP(S) URL (manager1's, when there are several)."""
        if self.managers:
            return self.managers[0].docker_url
        if self.secure:
            return f"https://{self.gateway}:{MANAGER_TLS_PORT}"
        return f"http://127.0.0.1:{MANAGER_PORT}"

    @property
    def docker_host(self) -> str:
        """The same, as DOCKER_HOST says it."""
        return self.manager_url.replace("https://", "tcp://").replace("http://", "tcp://")

    @property
    def join_url(self) -> str:
        if self.managers:
            return self.managers[0].join_url
        return f"https://{self.gateway}:{JOIN_PORT}"

    @property
    def join_urls(self) -> tuple[str, ...]:
        """Every manager's join listener, in order: what the agents get as `--manager a,b,c`."""
        return tuple(m.join_url for m in self.managers) or (self.join_url,)

    @property
    def manager_hosts(self) -> tuple[str, ...]:
        """Every manager's Docker API, as DOCKER_HOST says it."""
        return tuple(m.docker_host for m in self.managers) or (self.docker_host,)

    @property
    def registry_urls(self) -> tuple[str, ...]:
        return tuple(m.registry_url for m in self.managers) or (self.registry_url,)

    @property
    def dns_addrs(self) -> tuple[str, ...]:
        return tuple(m.dns_addr for m in self.managers) or (f"{self.gateway}:{REGISTRY_DNS_PORT}",)

    @property
    def etcd_store(self) -> str:
        """What every manager's `--store` says: all the etcd members."""
        return "etcd://" + ",".join(m.etcd_endpoint for m in self.managers)

    @property
    def dashboard_url(self) -> str:
        """On the Docker API's own listener: behind its mutual TLS (the admin certificate gets in)."""
        return f"{self.manager_url}/dashboard"

    @property
    def registry_url(self) -> str:
        if self.managers:
            return self.managers[0].registry_url
        if self.secure:
            return f"https://{self.gateway}:{REGISTRY_HTTPS_PORT}"
        return f"http://{self.gateway}:{REGISTRY_HTTP_PORT}"

    @property
    def image_registry(self) -> str:
        """HOST:PORT of the cluster's image registry, as image names and certs.d spell it."""
        return f"{self.gateway}:{IMAGE_REGISTRY_PORT}"

    @property
    def image_registry_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.image_registry}"

    @property
    def image_registry_dir(self) -> Path:
        """Its configuration and its data (the pushed layers), removed with the cluster."""
        return self.root / "image-registry"

    @property
    def netns_prefix(self) -> str:
        return f"{self.name}-"

    def node(self, name: str) -> NodeLayout:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise BadRequest(f"no node named {name!r} in dev cluster {self.name!r} (nodes: {known})")

    def manager(self, index: int) -> ManagerLayout:
        if not self.managers:
            raise BadRequest(
                f"dev cluster {self.name!r} has a single manager, not several; use `shoal dev manager "
                "restart`, or bring the cluster up with --managers 3"
            )
        for m in self.managers:
            if m.index == index:
                return m
        raise BadRequest(
            f"no manager {index} in dev cluster {self.name!r} (managers are 1..{len(self.managers)})"
        )


def subnet_capacity(subnet: str) -> int:
    """How many nodes fit in the subnet after the gateway and the reserved low addresses."""
    net = ipaddress.ip_network(subnet, strict=False)
    return max(0, net.num_addresses - FIRST_NODE_HOST - 2)


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as e:
        raise BadRequest(f"--subnet {subnet!r} is not a network ({e}); give one like {DEFAULT_SUBNET}") from e
    if not isinstance(net, ipaddress.IPv4Network):
        raise BadRequest(f"--subnet {subnet!r} is IPv6; give an IPv4 network like {DEFAULT_SUBNET}")
    if net.prefixlen > 28:
        raise BadRequest(f"--subnet {subnet!r} is too small; give a /28 or larger, like {DEFAULT_SUBNET}")
    return net


def parse_node_labels(values: tuple[str, ...] | list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`NODE=KEY=VALUE` flags into per-node label tuples, in the order given."""
    by_node: dict[str, list[str]] = {}
    for v in values:
        node, sep, label = v.partition("=")
        if not sep or not node or not _LABEL_RE.match(label):
            raise BadRequest(f"--label {v!r} is not NODE=KEY=VALUE; e.g. --label node1=disk=ssd")
        by_node.setdefault(node, []).append(label)
    return tuple((n, tuple(lbls)) for n, lbls in by_node.items())


def node_name(index: int) -> str:
    return f"node{index}"


def manager_name(index: int) -> str:
    return f"manager{index}"


def manager_netns(cluster: str, index: int) -> str:
    """Also its host-side interface name: `{cluster}-mgrN`, at most 13 bytes with an 8-byte cluster name."""
    return f"{cluster}-mgr{index}"


def check_managers(managers: int, secure: bool) -> None:
    """1, 3 or 5: etcd needs a majority of its members, so a 4th tolerates no more failures than a 3rd
    and a 2nd makes either one's death stop every write."""
    if managers not in MANAGER_COUNTS:
        if managers > 0 and managers % 2 == 0:
            instead = " or ".join(str(n) for n in (managers - 1, managers + 1) if n in MANAGER_COUNTS)
            raise BadRequest(
                f"--managers {managers}: etcd needs a quorum (a majority) of its members, and {managers} "
                f"tolerate no more failures than {managers - 1}; use --managers {instead}"
            )
        raise BadRequest(
            f"--managers {managers}: a dev cluster has 1, 3 or 5 managers (an odd number, for etcd's "
            "quorum); try --managers 3"
        )
    if managers > 1 and not secure:
        raise BadRequest(
            f"--managers {managers} needs TLS (each manager serves on its own namespace's address, and the "
            "plain Docker API listens on loopback only); drop --insecure"
        )


def plan_layout(spec: ClusterSpec) -> ClusterLayout:
    """Names, addresses and paths for `spec`; raises BadRequest for a request that cannot be laid out."""
    if not _NAME_RE.match(spec.name):
        raise BadRequest(
            f"--name {spec.name!r} must be 1-8 lowercase letters or digits, starting with a letter "
            "(it prefixes interface names, which Linux limits to 15 bytes)"
        )
    if not 0 < spec.agent_interval <= 300:
        raise BadRequest(f"--agent-interval {spec.agent_interval:g} must be between 0 and 300 seconds")
    if spec.nodes < 1:
        raise BadRequest(f"--nodes {spec.nodes}: a cluster needs at least 1 node; try --nodes 3")
    check_managers(spec.managers, spec.secure)
    net = parse_subnet(spec.subnet)
    cap = subnet_capacity(spec.subnet)
    if spec.nodes > cap:
        raise BadRequest(
            f"--nodes {spec.nodes} does not fit in --subnet {spec.subnet} (room for {cap}); "
            "use fewer nodes or a larger subnet"
        )
    names = {node_name(i) for i in range(1, spec.nodes + 1)}
    unknown = sorted({n for n, _ in (*spec.labels, *spec.agent_labels)} - names)
    if unknown:
        raise BadRequest(
            f"--label names {', '.join(unknown)}, not a node of this cluster "
            f"(nodes are node1..node{spec.nodes})"
        )
    hosts = list(net.hosts())
    gateway = str(hosts[0])
    root = Path(spec.root) / spec.name
    nodes = []
    for i in range(1, spec.nodes + 1):
        name = node_name(i)
        veth = f"{spec.name}-{name}"
        if len(veth) > IFNAMSIZ:
            raise BadRequest(
                f"--name {spec.name!r} with {spec.nodes} nodes makes interface name {veth!r} longer "
                f"than {IFNAMSIZ} bytes; use a shorter --name"
            )
        nodes.append(
            NodeLayout(
                name=name,
                index=i,
                netns=f"{spec.name}-{name}",
                veth=veth,
                address=str(net.network_address + FIRST_NODE_HOST + i),
                prefixlen=net.prefixlen,
                gateway=gateway,
                dir=root / name,
                labels=spec.labels_for(name),
                agent_labels=spec.agent_labels_for(name),
                secure=spec.secure,
            )
        )
    managers = []
    if spec.managers > 1:
        for i in range(1, spec.managers + 1):
            ns = manager_netns(spec.name, i)
            managers.append(
                ManagerLayout(
                    name=manager_name(i),
                    index=i,
                    netns=ns,
                    veth=ns,
                    address=str(net.network_address + FIRST_MANAGER_HOST + i),
                    prefixlen=net.prefixlen,
                    gateway=gateway,
                    dir=root / manager_name(i),
                )
            )
    return ClusterLayout(
        name=spec.name,
        root=root,
        bridge=f"{spec.name}-br",
        subnet=str(net),
        gateway=gateway,
        prefixlen=net.prefixlen,
        nodes=tuple(nodes),
        agent_interval=spec.agent_interval,
        strategy=spec.strategy,
        secure=spec.secure,
        managers=tuple(managers),
    )
