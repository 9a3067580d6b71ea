"""Backends by URL scheme; each is imported only when its scheme is used."""

from __future__ import annotations

from .base import Beat, BeatReply, Lease, Notifier, RunQuery, Store, WorkerInfo

__all__ = [
    "Beat",
    "BeatReply",
    "Lease",
    "Notifier",
    "RunQuery",
    "Store",
    "WorkerInfo",
    "open_store",
]


def open_store(url: str) -> Store:
    """Build (not connect) the store a URL names: memory://, sqlite:///path, redis://,
    redis+cluster://, postgresql://."""
    from ..errors import ConfigError

    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore(url)
    if scheme == "redis+cluster":
        from .redis_shards import RedisShardedStore, split_shards

        if split_shards(url)[2] > 1:
            return RedisShardedStore(url)
        from .redis_cluster import RedisClusterStore

        return RedisClusterStore(url)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ConfigError(
        f"unknown store URL {url!r}: use memory://, sqlite:///path.db, redis://host, "
        "redis+cluster://host:port,host:port or postgresql://host/db"
    )
