"""The registry's versioned key/value stores: one contract (base.Store), SQLite and etcd behind it."""

from __future__ import annotations

from shoal.errors import StoreUnavailable
from shoal.registry.store.base import Entry, Store


async def open_store(url: str) -> Store:
    """`sqlite:///path/to/db` (the embedded default) or `etcd://host:port[,host:port...]`."""
    if url.startswith("sqlite://"):
        from shoal.registry.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url.removeprefix("sqlite://"))
    if url.startswith("etcd://"):
        from shoal.registry.store.etcd import EtcdStore

        return await EtcdStore.open(url.removeprefix("etcd://").split(","))
    from shoal.errors import BadRequest

    raise BadRequest(f"store {url!r} is neither sqlite:///PATH nor etcd://HOST:PORT[,HOST:PORT]")


__all__ = ["Entry", "Store", "StoreUnavailable", "open_store"]
