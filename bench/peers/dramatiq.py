"""dramatiq (https://github.com/Bogdanp/dramatiq): thread workers on a Redis broker."""

from __future__ import annotations

import os
import sys
from typing import Any

from .base import NOOP, Client, Target, WorkerSpec, repo_env

#: Worker threads for the no-op phases: dramatiq's default (8); the sleep phase uses 100.
THREADS = 8
#: Idle queue poll cap in ms (dramatiq's `dramatiq_worker_timeout`, default 1000).
IDLE_MS = 5
MSGS_KEY = "dramatiq:default.msgs"


class DramatiqClient:
    """Producer on the broker the workers import; a message leaves `.msgs` when acked."""

    def __init__(self, target: Target) -> None:
        os.environ["BENCH_REDIS_URL"] = target.redis_url
        import importlib

        import bench.apps.dramatiq_app as app

        self.app: Any = importlib.reload(app)
        self.enqueued = 0

    async def enqueue_one(self, i: int) -> None:
        """`actor.send`."""
        self.app.noop.send(i)
        self.enqueued += 1

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """`actor.send` in a loop (dramatiq has no bulk enqueue)."""
        actor = self.app.noop if task == NOOP else self.app.nap
        for i in range(count):
            actor.send(i)
        self.enqueued += count

    async def finished(self) -> int:
        """Enqueued here minus messages not yet acked."""
        return self.enqueued - int(self.app.broker.client.hlen(MSGS_KEY))

    async def run_and_wait(self, i: int) -> None:
        """`message.get_result(block=True)`: BRPOPLPUSH on the result key."""
        message = self.app.noop.send(i)
        self.enqueued += 1
        message.get_result(block=True, timeout=60_000)

    async def close(self) -> None:
        """Close the broker's connections."""
        self.app.broker.close()


class DramatiqSystem:
    """dramatiq on Redis."""

    name = "dramatiq"
    stores = ("redis",)
    notes = {
        "bulk": "actor.send in a loop (no bulk API)",
        "wait": "message.get_result(block=True) (BRPOPLPUSH on the result key)",
        "worker": f"dramatiq bench.apps.dramatiq_app -p 1 -t {THREADS} (sleep: -t 100), "
        f"dramatiq_worker_timeout={IDLE_MS} ms (default 1000), results stored",
    }

    async def open(self, target: Target) -> Client:
        """A client on dramatiq's Redis db."""
        return DramatiqClient(target)

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`python -m dramatiq` with one process."""
        argv = [sys.executable, "-m", "dramatiq", "bench.apps.dramatiq_app", "-p", "1", "-t",
                str(concurrency or THREADS)]  # fmt: skip
        env = repo_env(BENCH_REDIS_URL=target.redis_url, dramatiq_worker_timeout=str(IDLE_MS))
        return WorkerSpec(argv, env)


SYSTEM = DramatiqSystem()
