"""Celery (https://github.com/celery/celery): Redis broker + backend, or SQLite via SQLAlchemy."""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid
from typing import Any

from .base import NOOP, REDIS_DB, Client, Target, WorkerSpec, repo_env
from .taskloom import RESULT_POLL

#: Worker threads for the no-op phases (the sleep phase uses 100).
THREADS = 8


def _env(target: Target) -> dict[str, str]:
    if target.store == "redis":
        results = f"{target.redis_base}/{REDIS_DB['celery-results']}"
        return {"BENCH_CELERY_BROKER": target.redis_url, "BENCH_CELERY_BACKEND": results}
    # New file names per sample: kombu and Celery's database backend cache one SQLAlchemy
    # engine per URL for the process, and an engine on a deleted file turns read-only.
    folder = target.sqlite_path.parent / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True, exist_ok=True)
    return {"BENCH_CELERY_BROKER": f"sqla+sqlite:///{folder / 'broker.db'}",
            "BENCH_CELERY_BACKEND": f"db+sqlite:///{folder / 'results.db'}"}  # fmt: skip


class CeleryClient:
    """Producer on the app the workers import; finished = stored results."""

    def __init__(self, target: Target, env: dict[str, str]) -> None:
        os.environ.update(env)
        import importlib

        import bench.apps.celery_app as module

        self.module: Any = importlib.reload(module)
        self.target = target
        self._results: Any = None

    async def enqueue_one(self, i: int) -> None:
        """`task.delay`."""
        self.module.noop.delay(i)

    async def enqueue_many(self, task: str, count: int, batch: int) -> None:
        """`group(...).apply_async()` per batch: one producer, one publish per task."""
        from celery import group  # type: ignore[import-untyped]

        fn = self.module.noop if task == NOOP else self.module.nap
        for start in range(0, count, batch):
            group(fn.s(i) for i in range(start, min(start + batch, count))).apply_async()

    async def finished(self) -> int:
        """Result keys (Redis: the results db holds nothing else) or `celery_taskmeta` rows."""
        if self.target.store == "redis":
            if self._results is None:
                import redis

                self._results = redis.Redis.from_url(
                    f"{self.target.redis_base}/{REDIS_DB['celery-results']}"
                )
            return int(self._results.dbsize())
        path = os.environ["BENCH_CELERY_BACKEND"].removeprefix("db+sqlite:///")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            return 0  # the worker has not created the file yet
        try:
            sql = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
            return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # the worker has not created the table yet
        finally:
            conn.close()

    async def run_and_wait(self, i: int) -> None:
        """`AsyncResult.get`: pub/sub on Redis, polling the results table on SQLite."""
        self.module.noop.delay(i).get(timeout=60, interval=RESULT_POLL)

    async def close(self) -> None:
        """Close the app's pools."""
        if self._results is not None:
            self._results.close()
        self.module.app.close()


class CelerySystem:
    """Celery on Redis and on SQLite (kombu's SQLAlchemy transport)."""

    name = "celery"
    stores = ("sqlite", "redis")
    notes = {
        "bulk": "group(...).apply_async() per batch (no bulk write)",
        "wait": f"AsyncResult.get(interval={RESULT_POLL}): pub/sub on Redis, polls on SQLite",
        "worker": f"celery worker --pool threads -c {THREADS} (sleep: 100), no gossip/mingle/"
        "heartbeat; SQLite broker polls every 5 ms",
    }

    def __init__(self) -> None:
        self._envs: dict[Target, dict[str, str]] = {}

    async def open(self, target: Target) -> Client:
        """A client on Celery's namespace."""
        self._envs[target] = _env(target)
        return CeleryClient(target, self._envs[target])

    def worker(self, target: Target, concurrency: int | None, *, burst: bool) -> WorkerSpec:
        """`python -m celery worker` with a thread pool."""
        argv = [sys.executable, "-m", "celery", "-A", "bench.apps.celery_app", "worker",
                "--pool", "threads", "-c", str(concurrency or THREADS), "-Q", "bench",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", "WARNING"]  # fmt: skip
        return WorkerSpec(argv, repo_env(**self._envs.get(target) or _env(target)))


SYSTEM = CelerySystem()
