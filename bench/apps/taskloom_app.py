"""The taskloom app of the benchmark: `taskloom worker --app bench.apps.taskloom_app:make`.

`BENCH_STORE_URL` names the store; `BENCH_POLL` the fallback poll interval (seconds), which
matters only where no cross-process push exists (SQLite).
"""

from __future__ import annotations

import asyncio
import os

from taskloom import TaskManager, task

NAP_SECONDS = 0.1


@task
async def noop(i: int) -> int:
    """Do nothing: the cost measured is the queue's own."""
    return i


@task
async def nap(i: int) -> int:
    """Sleep 0.1 s without blocking the loop: measures how many runs overlap."""
    await asyncio.sleep(NAP_SECONDS)
    return i


@task
async def leaf(i: int) -> int:
    """A no-op child of `fan_out`."""
    return i


@task
async def fan_out(n: int) -> int:
    """Call `leaf` n times at once as durable inline children and count the results."""
    results = await asyncio.gather(*(leaf.aio(i) for i in range(n)))
    return len(results)


TASKS = (noop, nap, leaf, fan_out)


def build(url: str, poll_interval: float = 1.0) -> TaskManager:
    """A manager on `url` with every benchmark task registered."""
    return TaskManager(url, tasks=TASKS, poll_interval=poll_interval)


def make() -> TaskManager:
    """The manager the worker CLI loads, configured from `BENCH_STORE_URL` and `BENCH_POLL`."""
    return build(os.environ["BENCH_STORE_URL"], float(os.environ.get("BENCH_POLL", "1.0")))
