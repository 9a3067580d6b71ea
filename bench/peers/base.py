"""What every benchmarked system provides, and where each one keeps its data.

A `System` knows how to open a client on a `Target` (one store kind, one namespace reserved
for that system) and how to start its own worker process there. The phases only ever talk to
this interface, so taskloom and its peers go through the same measurement code.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

STORES = ("sqlite", "redis", "redis-cluster", "postgres")

#: Redis database per system: a run only ever flushes its own databases, never db 0.
REDIS_DB = {
    "taskloom": 9,
    "redis-floor": 9,  # shares taskloom's: samples never overlap
    "huey": 10,
    "saq": 11,
    "arq": 12,
    "dramatiq": 13,
    "celery": 14,
    "celery-results": 15,
}

#: Task names every app registers: a no-op, and a sleep of `NAP_SECONDS`.
NOOP, NAP = "noop", "nap"
NAP_SECONDS = 0.1


@dataclass(frozen=True)
class Target:
    """One system's namespace on one store kind: a Redis db, a PG schema or a SQLite file."""

    store: str
    system: str
    redis_base: str
    postgres_dsn: str
    workdir: Path
    redis_cluster: str = ""  # redis+cluster://host:port,... (only taskloom speaks it)

    @property
    def redis_db(self) -> int:
        """The Redis database reserved for this system."""
        return REDIS_DB[self.system]

    @property
    def redis_url(self) -> str:
        """`redis://host:port/<db>` for this system."""
        return f"{self.redis_base}/{self.redis_db}"

    @property
    def cluster_url(self) -> str:
        """The system's namespace on the Redis Cluster: its own prefix (its own slot)."""
        return f"{self.redis_cluster}?prefix=bench-{self.system}:"

    @property
    def pg_schema(self) -> str:
        """The PostgreSQL schema reserved for this system."""
        return f"bench_{self.system}"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of this system (its directory is created on demand)."""
        return self.workdir / self.system / "store.db"


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one worker process: argv (first item is the interpreter) and extra env."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class Client(Protocol):
    """A producer connected to one target, plus a way to count finished runs there."""

    async def enqueue_one(self, i: int) -> None:
        """Queue one no-op run and return once the system acknowledged it."""
        ...

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """Queue `count` runs of `task` (NOOP or NAP) the fastest way the system offers."""
        ...

    async def finished(self) -> int:
        """How many runs finished successfully, read from the store or result backend."""
        ...

    async def run_and_wait(self, i: int) -> None:
        """Queue one no-op run and return once its result is visible to this client."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class System(Protocol):
    """A task queue under test."""

    name: str
    stores: tuple[str, ...]
    #: How bulk enqueue and result waits are done, and the worker settings: for the report.
    notes: dict[str, str]

    async def open(self, target: Target) -> Client:
        """A client on a fresh, empty namespace (schema created where the system needs one)."""
        ...

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """The command of one worker process serving `target`: `concurrency` runs at once, or
        the system's own fastest setting for no-op runs when None."""
        ...


async def reset(target: Target) -> None:
    """Delete everything the system keeps in its namespace (before and after each sample)."""
    if target.store == "memory":
        return  # nothing outlives the manager
    if target.store == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(target.redis_url)
        try:
            await client.flushdb()
            if target.system == "celery":
                other = aioredis.Redis.from_url(f"{target.redis_base}/{REDIS_DB['celery-results']}")
                await other.flushdb()
                await other.aclose()
        finally:
            await client.aclose()
    elif target.store == "redis-cluster":
        from taskloom.store import open_store

        store = open_store(target.cluster_url)
        await store.connect()
        try:
            await store.drop()  # type: ignore[attr-defined]
        finally:
            await store.close()
    elif target.store == "postgres":
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(target.postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{target.pg_schema}" CASCADE')
        finally:
            await conn.close()
    else:
        shutil.rmtree(target.sqlite_path.parent, ignore_errors=True)


async def create_schema(target: Target) -> None:
    """Create the target's PostgreSQL schema (for peers that install into `search_path`)."""
    import asyncpg

    conn = await asyncpg.connect(target.postgres_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{target.pg_schema}"')
    finally:
        await conn.close()


def repo_env(**extra: str) -> dict[str, str]:
    """Environment for a worker process: the repo root importable, logging quiet."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root, **extra}
