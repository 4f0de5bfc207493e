"""The dataset side of the manager's operations (I/O around the pure shoal.data.requests): a decision's
new records are written before the engine is asked and taken back if it refuses; a dataset volume made
with `docker volume create -d shoal|flocker` lands once, on one node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from shoal.cluster.state import Cluster
from shoal.data.model import Dataset, Deletion
from shoal.data.records import new_ids
from shoal.data.requests import dataset_request, decide_all
from shoal.errors import BadRequest, NoPlacement, NotFound
from shoal.scheduler.model import ContainerSpec

if TYPE_CHECKING:
    from shoal.manager.service import Manager


@contextlib.asynccontextmanager
async def committed(c: Cluster, new: list[Dataset]) -> AsyncIterator[None]:
    """Writes a decision's new dataset records for what follows (the engine's create); if that fails, asks
    their node to delete them again (children first), so nothing is left half-made. A deletion request, not
    a removed record: the node may have made the dataset already, and a node never deletes data because a
    record went missing (it would re-publish it instead)."""
    if not new:
        yield
        return
    await c.records.commit(tuple(new))
    # the cache's watch may have brought them in already (its answer can beat the write's own ack)
    have = {d.id for d in c.datasets}
    c.datasets = [*c.datasets, *(d for d in new if d.id not in have)]
    try:
        yield
    except BaseException:
        now = c.now()
        for d in reversed(new):
            await c.records.request_deletion(Deletion(d.id, d.node, d.name, "a refused create", now))
        c.datasets = [d for d in c.datasets if d not in new]
        raise


async def create_dataset_volume(
    m: Manager, raw: str, driver: str, node: str | None, body: Mapping[str, Any]
) -> dict[str, Any]:
    """The node: the one named (node2/NAME), its source's node for a snapshot, where an existing one lives,
    or else where the scheduler puts a container using the driver."""
    c = m.cluster
    settings = m.settings
    try:
        wanted = dataset_request(raw, c.datasets, settings.profiles, body.get("DriverOpts") or {})
    except NotFound as e:
        raise BadRequest(e.message) from None
    if wanted.follows:
        node = next(d.node for d in c.datasets if d.name == wanted.follows)
    elif node is None:
        p = m.place(ContainerSpec(volume_driver=driver))
        if p.node is None:
            raise NoPlacement(p)
        node = p.node
    free = c.pool_of(node).get("free_bytes")
    _, new = decide_all([wanted], node, c.datasets, settings.default_profile, free, new_ids(), c.now())
    async with committed(c, new):  # the records go again if the engine refuses
        made = await c.engine(node).call(
            "POST", "/volumes/create", json={**body, "Name": raw, "DriverOpts": {}}
        )
    c.mark(node, {"volumes"})
    return made
