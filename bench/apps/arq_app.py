"""arq's side of the benchmark: `arq bench.apps.arq_app.WorkerSettings`.

arq's worker polls its queue every `poll_delay` seconds and starts at most `max_jobs` jobs
per poll, so its default (0.5 s) caps a worker at 100 runs/s; the benchmark uses 1 ms.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

NAP_SECONDS = 0.1
POLL_DELAY = 0.001


async def noop(ctx: Any, i: int) -> int:
    """Do nothing."""
    return i


async def nap(ctx: Any, i: int) -> int:
    """Sleep 0.1 s without blocking the loop."""
    await asyncio.sleep(NAP_SECONDS)
    return i


class WorkerSettings:
    """What `arq` reads: functions, Redis, concurrency, poll delay."""

    functions: ClassVar[list[Any]] = [noop, nap]
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "50"))
    poll_delay = POLL_DELAY
    handle_signals = True
