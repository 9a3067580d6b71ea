"""taskloom itself, driven through the same interface as the peers."""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

from bench.apps.taskloom_app import build

from .base import NOOP, Client, Target, WorkerSpec, repo_env

#: SQLite has no cross-process wake-up, so workers and waiters poll; every SQLite system in
#: the benchmark polls an idle queue this often.
SQLITE_POLL = 0.005
#: How often a client re-reads a result when the system offers no push for it.
RESULT_POLL = 0.001
#: Worker concurrency for the no-op phases (the brief's `--concurrency 50`).
CONCURRENCY = 50


def store_url(target: Target) -> str:
    """The taskloom store URL of `target`."""
    if target.store == "redis":
        return f"{target.redis_url}?prefix=bench:"
    if target.store == "redis-cluster":
        return target.cluster_url
    if target.store == "postgres":
        return f"{target.postgres_dsn}?schema={target.pg_schema}"
    if target.store == "memory":
        return "memory://"
    return f"sqlite:///{target.sqlite_path}"


class TaskloomClient:
    """Producer on a `TaskManager`; counts finished runs straight from the store's layout."""

    def __init__(self, target: Target) -> None:
        self.target = target
        poll = RESULT_POLL if target.store == "sqlite" else 1.0
        self.manager = build(store_url(target), poll_interval=poll)
        self._counter: Any = None

    async def connect(self) -> None:
        """Connect the manager (creates the schema) and the side connection that counts."""
        await self.manager.connect()
        if self.target.store == "redis":
            import redis.asyncio as aioredis

            self._counter = aioredis.Redis.from_url(self.target.redis_url)
        elif self.target.store == "redis-cluster":
            self._counter = self.manager.store
        elif self.target.store == "postgres":
            import asyncpg  # type: ignore[import-untyped]

            self._counter = await asyncpg.connect(self.target.postgres_dsn)
        else:
            self._counter = sqlite3.connect(self.target.sqlite_path, isolation_level=None)

    async def enqueue_one(self, i: int) -> None:
        """`manager.queue` once."""
        await self.manager.queue(NOOP, i=i)

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """`manager.queue_many` in batches."""
        for start in range(0, count, batch):
            chunk = range(start, min(start + batch, count))
            await self.manager.queue_many(task, [{"i": i} for i in chunk])

    async def finished(self) -> int:
        """Successful runs: an index count on every store (no record is decoded)."""
        if self.target.store == "redis":
            return int(await self._counter.zcard("bench:idx:state:success"))
        if self.target.store == "redis-cluster":
            store = self._counter
            return int(await store._redis.zcard(store.prefix + "idx:state:success"))
        if self.target.store == "postgres":
            sql = f"SELECT count(*) FROM \"{self.target.pg_schema}\".runs WHERE state = 'success'"
            return int(await self._counter.fetchval(sql))
        row = self._counter.execute("SELECT count(*) FROM runs WHERE state = 'success'")
        return int(row.fetchone()[0])

    async def run_and_wait(self, i: int) -> None:
        """`manager.queue_and_wait`: push wake-ups on Redis/PostgreSQL, polling on SQLite."""
        await self.manager.queue_and_wait(NOOP, i=i, timeout=60)

    async def close(self) -> None:
        """Close the manager and the counting connection."""
        await self.manager.close()
        if self.target.store == "redis":
            await self._counter.aclose()
        elif self.target.store == "redis-cluster":
            pass  # the manager's own store, closed with it
        elif self.target.store == "postgres":
            await self._counter.close()
        else:
            self._counter.close()


class TaskloomSystem:
    """taskloom on every store; its worker is the `taskloom worker` CLI."""

    name = "taskloom"
    stores = ("sqlite", "redis", "redis-cluster", "postgres")
    notes = {
        "bulk": "manager.queue_many, one store round trip per batch",
        "wait": "manager.queue_and_wait (pub/sub on Redis, LISTEN/NOTIFY on PostgreSQL, "
        f"{RESULT_POLL * 1000:g} ms poll on SQLite)",
        "worker": "taskloom worker --app bench.apps.taskloom_app:make "
        f"--concurrency {CONCURRENCY} (sleep phase: 100) [--burst]; SQLite workers poll every "
        f"{SQLITE_POLL * 1000:g} ms",
    }

    async def open(self, target: Target) -> Client:
        """A connected client on a fresh namespace."""
        client = TaskloomClient(target)
        await client.connect()
        return client

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`python -m taskloom worker` on the bench app."""
        argv = [sys.executable, "-m", "taskloom", "worker", "--app",
                "bench.apps.taskloom_app:make", "--concurrency", str(concurrency or CONCURRENCY),
                "--log-level", "WARNING"]  # fmt: skip
        if burst:
            argv.append("--burst")
        poll = SQLITE_POLL if target.store == "sqlite" else 1.0
        return WorkerSpec(argv, repo_env(BENCH_STORE_URL=store_url(target), BENCH_POLL=str(poll)))


SYSTEM = TaskloomSystem()
