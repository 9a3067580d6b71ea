"""The README tour: define tasks, execute one now, queue one for a worker, wait for it."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from taskloom import RetryPolicy, TaskConsumer, TaskManager, TaskPriority, TaskRun, every, task


@task
async def hello(ctx: TaskRun) -> None:
    """Say hello."""
    print("Hello, world!", ctx.id)


@task(
    retry=RetryPolicy(max_attempts=5, wait=1.0, backoff=2.0, max_wait=60),
    timeout_seconds=30,
    max_concurrency=2,
    schedule=every(timedelta(minutes=5), params={"n": 10}),
)
def crunch(n: int, scale: float = 1.0) -> float:
    """Crunch numbers."""
    return n * scale


manager = TaskManager(
    os.environ.get("TASKLOOM_STORE", "sqlite:///taskloom.db"), tasks=[hello, crunch]
)


async def main() -> list[float]:
    """Execute one run here, queue another for a background worker; return both results."""
    async with manager:
        run = await manager.execute("crunch", n=3)
        print(run.state, run.result)
        queued = await manager.queue("crunch", n=4, priority=TaskPriority.high)
        async with TaskConsumer(manager):
            done = await manager.wait(queued.id, timeout=10)
        print(done.result)
        return [run.result, done.result]


if __name__ == "__main__":
    asyncio.run(main())
