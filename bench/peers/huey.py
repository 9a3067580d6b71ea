"""huey (https://github.com/coleifer/huey): `SqliteHuey` and `RedisHuey`, thread workers."""

from __future__ import annotations

import os
import sys
from typing import Any

from .base import NOOP, Client, Target, WorkerSpec, repo_env
from .taskloom import RESULT_POLL, SQLITE_POLL

#: Worker threads per consumer process for the no-op phases (the sleep phase uses its own
#: concurrency). huey runs sync tasks on threads: more threads only add GIL contention.
THREADS = 8


def _env(target: Target) -> dict[str, str]:
    target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return {"BENCH_STORE": target.store, "BENCH_SQLITE_PATH": str(target.sqlite_path),
            "BENCH_REDIS_URL": target.redis_url}  # fmt: skip


class HueyClient:
    """Producer on the same `huey` instance the consumer imports."""

    def __init__(self, target: Target) -> None:
        os.environ.update(_env(target))
        import importlib

        import bench.apps.huey_app as app

        self.app: Any = importlib.reload(app)  # a fresh instance for this target

    async def enqueue_one(self, i: int) -> None:
        """`noop(i)` (huey's call enqueues)."""
        self.app.noop(i)

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """`task.map(...)`: huey's many-at-once call (one storage write per run)."""
        fn = self.app.noop if task == NOOP else self.app.nap
        for start in range(0, count, batch):
            fn.map(range(start, min(start + batch, count)))

    async def finished(self) -> int:
        """Stored results (every benchmark task returns a non-None value)."""
        return int(self.app.huey.storage.result_store_size())

    async def run_and_wait(self, i: int) -> None:
        """`result.get(blocking=True)`: BLPOP on Redis (notify_result), polling on SQLite."""
        result = self.app.noop(i)
        result.get(blocking=True, timeout=60, backoff=1.0, max_delay=RESULT_POLL)

    async def close(self) -> None:
        """Close huey's connections."""
        storage = self.app.huey.storage
        close = getattr(storage, "close", None)
        if close is not None:
            close()


class HueySystem:
    """huey on SQLite and Redis."""

    name = "huey"
    stores = ("sqlite", "redis")
    notes = {
        "bulk": "task.map() in batches (huey has no bulk write: one storage call per run)",
        "wait": f"Result.get(blocking=True): BLPOP with notify_result on Redis, "
        f"{RESULT_POLL * 1000:g} ms poll on SQLite",
        "worker": f"huey_consumer -k thread -w {THREADS} (sleep phase: -w C); SQLite polls every "
        f"{SQLITE_POLL * 1000:g} ms, Redis blocks on BRPOP; synchronous=NORMAL on SQLite",
    }

    async def open(self, target: Target) -> Client:
        """A client on the target (huey creates its tables itself)."""
        return HueyClient(target)

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`huey_consumer` with thread workers."""
        threads = concurrency or THREADS
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "bench.apps.huey_app.huey",
                "-k", "thread", "-w", str(threads), "-d", str(SQLITE_POLL), "-m",
                str(SQLITE_POLL), "-C", "-n", "-q"]  # fmt: skip
        return WorkerSpec(argv, repo_env(**_env(target)))


SYSTEM = HueySystem()
