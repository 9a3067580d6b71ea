"""SAQ's side of the benchmark: `python -m saq bench.apps.saq_app.settings`.

SAQ's CLI imports a settings mapping by path, so the queue is built at import from
`BENCH_SAQ_URL` (Redis, or PostgreSQL with `search_path` in the URL's `options`) and the worker
concurrency from `BENCH_CONCURRENCY`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from saq import Queue

NAP_SECONDS = 0.1


async def noop(ctx: Any, *, i: int) -> int:
    """Do nothing."""
    return i


async def nap(ctx: Any, *, i: int) -> int:
    """Sleep 0.1 s without blocking the loop."""
    await asyncio.sleep(NAP_SECONDS)
    return i


def build_queue(url: str) -> Queue:
    """The benchmark's queue on `url`."""
    return Queue.from_url(url, name="bench")


queue = build_queue(os.environ.get("BENCH_SAQ_URL", "redis://127.0.0.1:6379/11"))

settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, nap],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "50")),
}
