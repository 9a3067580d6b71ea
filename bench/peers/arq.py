"""arq (https://github.com/python-arq/arq): asyncio jobs on Redis."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from .base import NOOP, Client, Target, WorkerSpec, repo_env
from .taskloom import CONCURRENCY, RESULT_POLL

QUEUE_KEY = "arq:queue"
#: Concurrent enqueues at once: arq's pool refuses more connections than it was sized for.
IN_FLIGHT = 32


class ArqClient:
    """Producer on an arq pool; a job leaves arq's queue zset only when it finishes."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.enqueued = 0

    async def enqueue_one(self, i: int) -> None:
        """`pool.enqueue_job`."""
        await self.pool.enqueue_job(NOOP, i)
        self.enqueued += 1

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """Concurrent `enqueue_job`, `IN_FLIGHT` at a time (arq has no bulk enqueue)."""
        for start in range(0, count, IN_FLIGHT):
            chunk = range(start, min(start + IN_FLIGHT, count))
            await asyncio.gather(*(self.pool.enqueue_job(task, i) for i in chunk))
        self.enqueued += count

    async def finished(self) -> int:
        """Enqueued here minus still in arq's queue."""
        return self.enqueued - int(await self.pool.zcard(QUEUE_KEY))

    async def run_and_wait(self, i: int) -> None:
        """`job.result(poll_delay=...)`: arq polls for results."""
        job = await self.pool.enqueue_job(NOOP, i)
        self.enqueued += 1
        await job.result(timeout=60, poll_delay=RESULT_POLL)

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.aclose()


class ArqSystem:
    """arq on Redis."""

    name = "arq"
    stores = ("redis",)
    notes = {
        "bulk": f"asyncio.gather of enqueue_job, {IN_FLIGHT} at a time (no bulk API; its pool "
        "refuses 1000 at once)",
        "wait": f"job.result(poll_delay={RESULT_POLL}) (arq polls)",
        "worker": f"arq bench.apps.arq_app.WorkerSettings, max_jobs {CONCURRENCY} (sleep: 100), "
        "poll_delay 1 ms (default 0.5 s caps a worker at max_jobs/0.5 s)",
    }

    async def open(self, target: Target) -> Client:
        """An arq pool on arq's Redis db."""
        from arq import create_pool
        from arq.connections import RedisSettings

        return ArqClient(await create_pool(RedisSettings.from_dsn(target.redis_url)))

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`python -m arq` on the bench settings."""
        argv = [sys.executable, "-m", "arq", "bench.apps.arq_app.WorkerSettings"]
        env = repo_env(BENCH_REDIS_URL=target.redis_url,
                       BENCH_CONCURRENCY=str(concurrency or CONCURRENCY))  # fmt: skip
        return WorkerSpec(argv, env)


SYSTEM = ArqSystem()
