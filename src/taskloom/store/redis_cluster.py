"""The Redis store on a Redis Cluster: ``redis+cluster://host:port,host:port/0?prefix=app:``.

The layout and the Lua scripts are the single-server store's (see `redis.py`). What changes
is where keys live: the prefix becomes a hash tag (``app:`` is stored as ``{app}:``), so every
key of one app hashes to one slot and each script, which touches many keys, runs on one
master. Every script call names a key of that slot, which is how the cluster client routes
it. Pub/sub messages reach subscribers on any node.

So one app's queues live on one master: a cluster adds failover (a replica takes over a dead
master) and room for many apps (each prefix is its own slot, spread over the masters). To
spread one app's queues over masters, add ``shards=N`` (`redis_shards.py`): N such stores,
each queue in one. docs/scaling.md has the figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError
from .redis import RedisStore
from .redis_lane import ScriptLane

try:
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    from ..errors import missing_extra

    raise missing_extra("redis", "redis") from exc

SCHEME = "redis+cluster"


def startup_nodes(redis_url: str) -> list[tuple[str, int]]:
    """The `host:port` pairs of a ``redis+cluster://h1:p1,h2:p2/0`` URL (port 6379 if left out)."""
    parts = urlsplit(redis_url)
    if parts.scheme != SCHEME:
        raise ConfigError(f"not a {SCHEME}:// URL: {redis_url!r}")
    path = parts.path.strip("/")
    if path not in ("", "0"):
        raise ConfigError(f"Redis Cluster has only database 0, the URL names {path!r}")
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        if not host or not port.isdigit():
            raise ConfigError(f"bad cluster node {item!r} in {redis_url!r}: use host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


class RedisClusterStore(RedisStore):
    """The Redis store on a Redis Cluster; every key of one prefix shares one hash slot."""

    def _key_prefix(self, prefix: str) -> str:
        if "{" in prefix and "}" in prefix:
            return prefix  # the caller chose the hash tag
        stem = prefix.rstrip(":") or "taskloom"
        return "{" + stem + "}:"

    def _script_lane(self) -> ScriptLane | None:
        return None  # the cluster client routes every call by its key: no single connection

    def _routing_keys(self) -> list[str]:
        return [self.prefix + "route"]  # any key of the app's slot routes a script call

    def _client(self, redis_url: str) -> Any:
        parts = urlsplit(redis_url)
        options = dict(parse_qsl(parts.query))
        userinfo = parts.netloc.rpartition("@")[0]
        username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
        self._nodes = startup_nodes(redis_url)
        limit = int(options.get("max_connections", 32))
        # the cluster client fails a call past `max_connections` per node instead of queueing
        # it: callers queue here, so a fan-out of thousands of children waits its turn
        self._gate = asyncio.Semaphore(limit)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._nodes],
            username=username or None,
            password=password or None,
            ssl=options.get("ssl", "").lower() in ("1", "true", "yes"),
            # headroom over the gate for the event listener and the few direct commands
            max_connections=limit + 16,
            retry=Retry(ExponentialBackoff(), 3, supported_errors=(RedisConnectionError,)),
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
        )

    async def _run(self, script: str, args: Sequence[str | bytes | int | float]) -> Any:
        async with self._gate:
            return await super()._run(script, args)

    async def _new_pubsub(self) -> Any:
        # The listener subscribes on the node that owns its channel's slot. After a failover
        # only a failed command refreshes the client's slot map, and a listener that is the
        # only thing talking (an idle worker) would retry the dead node forever: refresh here.
        with suppress(RedisConnectionError, OSError):
            await self._redis.nodes_manager.initialize()
        return self._redis.pubsub()

    def _where(self) -> str:
        return "cluster " + ",".join(f"{h}:{p}" for h, p in self._nodes)

    async def _close_client(self) -> None:
        await self._redis.aclose()
