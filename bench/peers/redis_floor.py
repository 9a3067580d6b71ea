"""The bare-Redis floor: LPUSH to enqueue, BRPOP in a one-loop worker, LPUSH the reply.

Not a task queue: no records, leases, retries or states. It is what one Redis round trip per
hop costs from Python on this machine, so every Redis row has a floor beside it. It shares
taskloom's Redis database (samples never overlap, and each one starts from an empty db).
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

import orjson

from .base import NOOP, Client, Target, WorkerSpec, repo_env

QUEUE, DONE, REPLY = "floor:q", "floor:done", "floor:reply:"


class FloorClient:
    """LPUSH producer; the worker counts what it finished in one key."""

    def __init__(self, target: Target) -> None:
        import redis.asyncio as aioredis

        self.redis: Any = aioredis.Redis.from_url(target.redis_url)

    async def enqueue_one(self, i: int) -> None:
        """One LPUSH."""
        await self.redis.lpush(QUEUE, orjson.dumps({"t": NOOP, "i": i}))

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """One LPUSH of `batch` items per round trip."""
        for start in range(0, count, batch):
            items = [
                orjson.dumps({"t": task, "i": i}) for i in range(start, min(start + batch, count))
            ]
            await self.redis.lpush(QUEUE, *items)

    async def finished(self) -> int:
        """The worker's counter."""
        return int(await self.redis.get(DONE) or 0)

    async def run_and_wait(self, i: int) -> None:
        """LPUSH with a reply key, then BRPOP on it."""
        reply = REPLY + secrets.token_hex(8)
        await self.redis.lpush(QUEUE, orjson.dumps({"t": NOOP, "i": i, "r": reply}))
        if await self.redis.brpop([reply], 60) is None:
            raise TimeoutError("no reply from the floor worker in 60 s")

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


class FloorSystem:
    """Bare Redis; it has no concurrency, so the sleeping-runs phase skips it."""

    name = "redis-floor"
    stores = ("redis",)
    skips = ("e",)
    notes = {
        "bulk": "one LPUSH per batch",
        "wait": "BRPOP on a reply list",
        "worker": "python -m bench.apps.floor_worker: one BRPOP loop, INCR + LPUSH per item",
    }

    async def open(self, target: Target) -> Client:
        """A client on the target's database."""
        return FloorClient(target)

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """The BRPOP loop; `--burst` exits once the queue stays empty."""
        argv = [sys.executable, "-m", "bench.apps.floor_worker", target.redis_url]
        if burst:
            argv.append("--burst")
        return WorkerSpec(argv, repo_env())


SYSTEM = FloorSystem()
