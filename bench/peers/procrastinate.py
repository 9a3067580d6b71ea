"""procrastinate (https://github.com/procrastinate-org/procrastinate): PostgreSQL jobs."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from .base import NOOP, Client, Target, WorkerSpec, create_schema, repo_env
from .taskloom import CONCURRENCY, RESULT_POLL


def _env(target: Target) -> dict[str, str]:
    return {"BENCH_PG_DSN": target.postgres_dsn, "BENCH_PG_SCHEMA": target.pg_schema}


class ProcrastinateClient:
    """Producer on an open app; finished = jobs in status `succeeded`."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.app = module.app

    async def enqueue_one(self, i: int) -> None:
        """`task.defer_async`."""
        await self.module.noop.defer_async(i=i)

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """`task.batch_defer_async`: one INSERT per batch."""
        fn = self.module.noop if task == NOOP else self.module.nap
        for start in range(0, count, batch):
            await fn.batch_defer_async(*({"i": i} for i in range(start, min(start + batch, count))))

    async def finished(self) -> int:
        """Jobs that succeeded."""
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        return int(row["n"])

    async def run_and_wait(self, i: int) -> None:
        """procrastinate keeps no results: poll the job's status."""
        job_id = await self.module.noop.defer_async(i=i)
        while True:
            status = await self.app.job_manager.get_job_status_async(job_id)
            if status.value == "succeeded":
                return
            if status.value in ("failed", "cancelled", "aborted"):
                raise RuntimeError(f"procrastinate job {job_id} ended {status.value}")
            await asyncio.sleep(RESULT_POLL)

    async def close(self) -> None:
        """Close the app's pool."""
        await self.app.close_async()


class ProcrastinateSystem:
    """procrastinate on PostgreSQL."""

    name = "procrastinate"
    stores = ("postgres",)
    notes = {
        "bulk": "task.batch_defer_async per batch",
        "wait": f"job status polled every {RESULT_POLL * 1000:g} ms (procrastinate stores no "
        "results)",
        "worker": f"procrastinate worker --concurrency {CONCURRENCY} (sleep: 100), "
        "LISTEN/NOTIFY wake-ups",
    }

    async def open(self, target: Target) -> Client:
        """Schema created and procrastinate's tables applied into it."""
        os.environ.update(_env(target))
        import importlib

        import bench.apps.procrastinate_app as module

        module = importlib.reload(module)
        await create_schema(target)
        await module.app.open_async()
        await module.app.schema_manager.apply_schema_async()
        return ProcrastinateClient(module)

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`python -m procrastinate worker`."""
        argv = [sys.executable, "-m", "procrastinate", "--app",
                "bench.apps.procrastinate_app.app", "worker", "--concurrency",
                str(concurrency or CONCURRENCY)]  # fmt: skip
        return WorkerSpec(argv, repo_env(**_env(target)))


SYSTEM = ProcrastinateSystem()
