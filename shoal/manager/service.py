"""The manager's service layer: one object that owns every operation on the cluster.

The Docker API's handlers (shoal/api/docker) parse a request into plain arguments, call one method here and
render what comes back; nothing there reaches into the cache. An operation that acts on an existing object
on one engine answers a `Route` (that engine and the encoded path there), which the handler relays byte
for byte; an operation the manager performs itself (create, remove, the cluster-wide lists, volume and
network creates over several nodes) is done here and answers plain data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.cluster.engine import Engine
from shoal.cluster.state import Cluster

if TYPE_CHECKING:
    from shoal.manager.join import Joins
from shoal.data.model import DEFAULT_PROFILE, DEFAULT_PROFILES, Profile
from shoal.metrics import ManagerMetrics
from shoal.registry.leader import Leadership
from shoal.scheduler.model import ContainerSpec, Placement
from shoal.scheduler.place import place
from shoal.scheduler.strategy import by_name

log = logging.getLogger("shoal.manager")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request about an existing object goes: the engine that holds it and the path there
    (percent-encoded, sent as is), with an optional rewrite of the engine's JSON answer."""

    engine: Engine
    path: str
    rewrite: Callable[[Any], Any] | None = field(default=None, compare=False)
    object_id: str = ""  # the object the path names (a container's full id), for the cache

    @property
    def node(self) -> str:
        return self.engine.node


@dataclass(frozen=True, slots=True)
class Settings:
    strategy: str = "spread"
    fact_ttl: float = 30.0
    name: str = "shoal"
    profiles: Mapping[str, Profile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    default_profile: str = DEFAULT_PROFILE


class Manager:
    def __init__(
        self, cluster: Cluster, settings: Settings | None = None, leadership: Leadership | None = None
    ) -> None:
        from shoal.manager.containers import Containers
        from shoal.manager.decisions import Decisions
        from shoal.manager.images import Images
        from shoal.manager.moves import Moves
        from shoal.manager.networks import Networks
        from shoal.manager.node_records import NodeRecords
        from shoal.manager.reschedule import Rescheduler
        from shoal.manager.system import System
        from shoal.manager.volumes import Volumes

        self.cluster = cluster
        self.settings = settings or Settings()
        # several managers over one etcd: the elected one runs the cluster-wide loops (rescheduling,
        # moves' recovery, replica assignment); each serves every request. Alone: always the leader.
        self.leadership = leadership or Leadership.solo({"name": self.settings.name})
        self.strategy = by_name(self.settings.strategy)
        self.decisions = Decisions(self)
        self.containers = Containers(self)
        self.volumes = Volumes(self)
        self.networks = Networks(self)
        self.images = Images(self)
        self.system = System(self)
        self.joins: Joins | None = None  # set when the manager serves its join listener
        self.node_records = NodeRecords(self)
        self.moves = Moves(self)
        self.reschedule = Rescheduler(self)
        self.metrics = ManagerMetrics(cluster)

    def place(self, spec: ContainerSpec) -> Placement:
        """The scheduler's decision for `spec` over the cluster as the cache sees it now (pure, sync)."""
        c = self.cluster
        t0 = time.perf_counter()
        p = place(
            spec,
            c.index,
            c.now(),
            strategy=self.strategy,
            strategy_name=self.settings.strategy,
            fact_ttl=self.settings.fact_ttl,
        )
        self.metrics.placed(p.node is None, time.perf_counter() - t0, p.took)
        return p
