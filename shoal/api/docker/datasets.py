"""(being moved into the manager's service layer)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from shoal.data.model import Dataset

if TYPE_CHECKING:
    from shoal.cluster.state import Cluster


@contextlib.asynccontextmanager
async def committed(c: Cluster, new: list[Dataset]) -> AsyncIterator[None]:
    """Writes a decision's new dataset records for what follows (the engine's create); if that fails, takes
    them back, so nothing is left half-made."""
    if c.records is None:
        raise RuntimeError("the cluster cache is not started")
    await c.records.commit(tuple(new))
    c.datasets = [*c.datasets, *new]
    try:
        yield
    except BaseException:
        for d in reversed(new):
            await c.records.remove(d)
        c.datasets = [d for d in c.datasets if d not in new]
        raise
