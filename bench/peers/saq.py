"""SAQ (https://github.com/tobymao/saq): asyncio jobs on Redis or PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import quote

from .base import NOOP, Client, Target, WorkerSpec, create_schema, repo_env
from .taskloom import CONCURRENCY, RESULT_POLL


def queue_url(target: Target) -> str:
    """Redis db of SAQ, or the PostgreSQL DSN with SAQ's schema first on `search_path`."""
    if target.store == "redis":
        return target.redis_url
    options = quote(f"-c search_path={target.pg_schema}")
    return f"{target.postgres_dsn}?options={options}"


class SaqClient:
    """Producer on a SAQ `Queue`; counts finished jobs as enqueued minus incomplete."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.enqueued = 0

    async def enqueue_one(self, i: int) -> None:
        """`queue.enqueue`."""
        await self.queue.enqueue(NOOP, i=i)
        self.enqueued += 1

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """Concurrent `queue.enqueue` per batch (SAQ has no bulk write; its `map` does this)."""
        for start in range(0, count, batch):
            chunk = range(start, min(start + batch, count))
            await asyncio.gather(*(self.queue.enqueue(task, i=i) for i in chunk))
        self.enqueued += count

    async def finished(self) -> int:
        """Jobs enqueued here that are no longer incomplete (SAQ keeps a count of those)."""
        return self.enqueued - int(await self.queue.count("incomplete"))

    async def run_and_wait(self, i: int) -> None:
        """`queue.apply`, SAQ's enqueue-and-wait (it polls the job).

        Not `job.refresh(until_complete=...)`: it reads the job, then subscribes, so a job that
        finishes in between is missed and the wait runs into its timeout.
        """
        await self.queue.apply(NOOP, timeout=60, poll_interval=RESULT_POLL, i=i)
        self.enqueued += 1

    async def close(self) -> None:
        """Disconnect the queue."""
        await self.queue.disconnect()


class SaqSystem:
    """SAQ on Redis and PostgreSQL."""

    name = "saq"
    stores = ("redis", "postgres")
    notes = {
        "bulk": "asyncio.gather of queue.enqueue per batch (no bulk API; what Queue.map does)",
        "wait": f"queue.apply(poll_interval={RESULT_POLL}) (polls the job; job.refresh "
        "misses jobs that finish before it subscribes)",
        "worker": f"python -m saq bench.apps.saq_app.settings, concurrency {CONCURRENCY} "
        "(sleep phase: 100)",
    }

    async def open(self, target: Target) -> Client:
        """A connected queue; on PostgreSQL its schema is created and SAQ migrates its tables."""
        from bench.apps.saq_app import build_queue

        if target.store == "postgres":
            await create_schema(target)
        queue = build_queue(queue_url(target))
        await queue.connect()
        return SaqClient(queue)

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`python -m saq` on the bench settings."""
        argv = [sys.executable, "-m", "saq", "bench.apps.saq_app.settings", "--quiet"]
        env = repo_env(BENCH_SAQ_URL=queue_url(target),
                       BENCH_CONCURRENCY=str(concurrency or CONCURRENCY))  # fmt: skip
        return WorkerSpec(argv, env)


SYSTEM = SaqSystem()
